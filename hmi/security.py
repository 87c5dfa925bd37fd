"""What the HMI's web server does for every request, before and after the pages.

- ``SecurityHeaders``: every HTTP response (pages, static files, downloads, image routes,
  errors) says it may not be framed (``X-Frame-Options: DENY``, CSP ``frame-ancestors
  'none'``: no clickjacking of the Sign-in or Run buttons) and may not be content-sniffed;
  over HTTPS every cookie it sets is ``Secure``. It wraps the whole application, NiceGUI's
  session middleware and error pages included, so nothing is answered without them. It also
  drops a request's ``X-Forwarded-Prefix``: NiceGUI would put whatever it says in front of its
  redirects (``//evil.example/login``), and the HMI is always served at the root.
- ``BodySizeLimit``: a request body larger than its route's limit is refused with 413 before
  the application reads any of it: by its Content-Length, and for a chunked body by counting
  what arrives (the body is buffered up to the limit, then handed on).
- ``server_options`` / ``session_cookie``: TLS and proxy settings for uvicorn, and the session
  cookie's lifetime (the idle timeout), from ``[hmi]``.
"""

from __future__ import annotations

import re
import ssl
from pathlib import Path

from station.config import HmiConfig
from station.config_errors import ConfigError
from station.hmi.recipe_versions import MAX_RECIPE_BYTES

SECURITY_HEADERS = (
    (b"x-frame-options", b"DENY"),
    (b"content-security-policy", b"frame-ancestors 'none'"),
    (b"x-content-type-options", b"nosniff"),
    (b"referrer-policy", b"same-origin"),
)

MULTIPART_MARGIN = 16 * 1024  # boundary lines and part headers around one uploaded file
UPLOAD_ROUTE = re.compile(r"^/_nicegui/client/[^/]+/upload/[^/]+$")  # NiceGUI's ui.upload target
MAX_UPLOAD_BYTES = MAX_RECIPE_BYTES + MULTIPART_MARGIN  # the recipe editor's upload is the only one
MAX_BODY_BYTES = 1024 * 1024  # anything else (socket.io polling posts): engine.io's own default
KEEPALIVE_PATH = "/hmi/session/alive"


class SecurityHeaders:
    """ASGI middleware: adds ``SECURITY_HEADERS`` to every HTTP response that lacks them, and
    ``Secure`` to the cookies of a response sent over HTTPS (directly, or through a trusted
    proxy that said ``X-Forwarded-Proto: https``)."""

    def __init__(self, app):
        self.app = app

    async def __call__(self, scope, receive, send):
        if scope["type"] not in ("http", "websocket"):
            return await self.app(scope, receive, send)
        scope = {**scope, "headers": [(k, v) for k, v in scope.get("headers", []) if k.lower() != b"x-forwarded-prefix"]}
        if scope["type"] == "websocket":
            return await self.app(scope, receive, send)
        over_tls = scope.get("scheme") == "https"

        async def send_with_headers(message):
            if message["type"] == "http.response.start":
                headers = [(k, _secure_cookie(v) if over_tls and k.lower() == b"set-cookie" else v)
                           for k, v in message.get("headers", [])]
                present = {k.lower() for k, _ in headers}
                headers += [(k, v) for k, v in SECURITY_HEADERS if k not in present]
                message = {**message, "headers": headers}
            await send(message)

        await self.app(scope, receive, send_with_headers)


def _secure_cookie(value: bytes) -> bytes:
    flags = {f.strip().lower() for f in value.split(b";")[1:]}
    return value if b"secure" in flags else value + b"; Secure"


class BodySizeLimit:
    """ASGI middleware: refuses (413) a request body over ``limit_for(path)`` bytes before the
    application sees it."""

    def __init__(self, app, upload_limit: int = MAX_UPLOAD_BYTES, body_limit: int = MAX_BODY_BYTES):
        self.app = app
        self.upload_limit = upload_limit
        self.body_limit = body_limit

    def limit_for(self, path: str) -> int:
        return self.upload_limit if UPLOAD_ROUTE.match(path) else self.body_limit

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http" or scope["method"] in ("GET", "HEAD"):
            return await self.app(scope, receive, send)
        limit = self.limit_for(scope["path"])
        declared = [v for k, v in scope.get("headers", []) if k.lower() == b"content-length"]
        if declared:
            try:
                length = int(declared[0])
            except ValueError:
                return await _refuse(send, 400, "bad Content-Length")
            if length > limit:
                return await _refuse(send, 413, f"request body of {length} bytes: at most {limit} here")
        body = bytearray()
        more = True
        while more:
            message = await receive()
            if message["type"] == "http.disconnect":
                return  # the client went away; nothing to answer
            body += message.get("body", b"")
            if len(body) > limit:
                return await _refuse(send, 413, f"request body over {limit} bytes: at most {limit} here")
            more = message.get("more_body", False)
        handed_on = False

        async def replay():
            nonlocal handed_on
            if not handed_on:
                handed_on = True
                return {"type": "http.request", "body": bytes(body), "more_body": False}
            return await receive()

        await self.app(scope, replay, send)


async def _refuse(send, status: int, text: str) -> None:
    body = (text + "\n").encode()
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", b"text/plain; charset=utf-8"), (b"content-length", str(len(body)).encode()),
                            (b"connection", b"close")]})
    await send({"type": "http.response.body", "body": body})


def install(app) -> None:
    """Wrap ``app`` (NiceGUI's FastAPI app) in the middlewares above, outermost of all, and add
    the route the pages call to keep the session cookie alive (``layout.frame``)."""
    build = app.build_middleware_stack

    # Starlette builds the middleware stack at the first request, after NiceGUI has added its
    # session middleware at server start; wrapping the build keeps ours outside every other
    # layer (its error pages and session cookies included), which add_middleware cannot.
    def build_wrapped():
        return SecurityHeaders(BodySizeLimit(build()))

    app.build_middleware_stack = build_wrapped

    @app.get(KEEPALIVE_PATH, include_in_schema=False)
    def session_alive():
        from fastapi import Response

        return Response(status_code=204)  # the session middleware renews the cookie on the way out


def check_tls_files(config: HmiConfig) -> None:
    """Load the certificate and key of ``[hmi]`` as the server will; a ConfigError naming the
    file and the reason if they cannot be used (missing, unreadable, not PEM, not a pair)."""
    if not config.tls:
        return
    for path in (config.certfile, config.keyfile):
        if not Path(path).is_file():
            raise ConfigError(path, [("", "hmi certificate or key file not found")])
    try:
        ssl.create_default_context(ssl.Purpose.CLIENT_AUTH).load_cert_chain(str(config.certfile), str(config.keyfile))
    except (ssl.SSLError, OSError) as exc:
        raise ConfigError(config.certfile, [("", f"cannot use it with {config.keyfile} for HTTPS: {exc}")]) from None


def server_options(config: HmiConfig) -> dict:
    """Keyword arguments for ``ui.run`` (passed on to uvicorn): TLS and the trusted proxies."""
    check_tls_files(config)
    options: dict = {
        "proxy_headers": bool(config.trusted_proxies),
        "forwarded_allow_ips": ",".join(config.trusted_proxies) if config.trusted_proxies else None,
    }
    if config.tls:
        options.update(ssl_certfile=str(config.certfile), ssl_keyfile=str(config.keyfile))
    return options


def session_cookie(config: HmiConfig) -> dict:
    """``session_middleware_kwargs`` for ``ui.run``: the cookie lives as long as the idle timeout
    (each response renews it); ``Secure`` is added per response by ``SecurityHeaders``."""
    return {"max_age": config.session_timeout_min * 60, "same_site": "lax"}


__all__ = ["SecurityHeaders", "BodySizeLimit", "install", "server_options", "session_cookie", "check_tls_files"]
