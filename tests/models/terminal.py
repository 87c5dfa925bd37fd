"""Run a command attached to a pseudo-terminal (80x24), as a person at a terminal would, and keep what it drew."""

from __future__ import annotations

import fcntl
import os
import select
import struct
import subprocess
import termios
import time


def run_in_terminal(cmd: list[str], *, env: dict, cwd, timeout_s: float, answer: str | None = None) -> tuple[int, str]:
    """(exit status, everything written to the terminal); ``answer`` is typed once a prompt ending in '] ' shows."""
    master, slave = os.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 24, 80, 0, 0))
    proc = subprocess.Popen(cmd, stdin=slave, stdout=slave, stderr=slave, env=env, cwd=cwd, close_fds=True)
    os.close(slave)
    out = b""
    deadline = time.monotonic() + timeout_s
    try:
        while time.monotonic() < deadline:
            ready, _, _ = select.select([master], [], [], 0.2)
            if ready:
                try:
                    chunk = os.read(master, 65536)
                except OSError:  # EIO: the child closed the terminal
                    break
                if not chunk:
                    break
                out += chunk
                if answer is not None and out.rstrip(b"\r\n").endswith(b"] "):
                    os.write(master, answer.encode() + b"\n")
                    answer = None
            elif proc.poll() is not None:
                break
        else:
            proc.kill()
            raise TimeoutError(f"{cmd} still running after {timeout_s} s; it drew:\n{out.decode(errors='replace')[-3000:]}")
        return proc.wait(timeout=30), out.decode(errors="replace")
    finally:
        os.close(master)
