"""Whether a TCP port can be listened on: asked before the station binds its servers (the
Modbus server, the HMI), so a port in use is one clear line instead of a traceback, and by
`station doctor`."""

from __future__ import annotations

import socket


def listen_error(host: str, port: int) -> OSError | None:
    """The error binding ``host:port`` for listening would give now (EADDRINUSE, EACCES…), or
    None. SO_REUSEADDR as the servers set it, so a socket in TIME_WAIT is not "in use"."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((host, port))
        except OSError as exc:
            return exc
    return None


__all__ = ["listen_error"]
