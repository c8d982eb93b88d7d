"""What keeps a web page (or a DNS-rebinding attacker) from driving a local server.

A browser lets any page send "simple" cross-origin requests (text/plain POSTs, no preflight), and a
rebinding DNS name makes a page same-origin with 127.0.0.1 while its `Host` header still names the
attacker's domain. So, before any route runs:

- `Host` must name the bound address, a loopback name, or a name the user allowed (`--allow-host`);
  a wildcard bind (0.0.0.0, ::) accepts any Host unless names were given.
- A request carrying `Origin` must come from the server's own origin or one configured for CORS.
- With an API key, the docs, the OpenAPI schema and /metrics need it too (/metrics can be opened for
  a scraper); /health never does.

JSON routes also require `Content-Type: application/json` (api/common.py, `read_request`).
"""

from __future__ import annotations

import hmac
import json
from urllib.parse import urlsplit

LOOPBACK_NAMES = {"localhost", "127.0.0.1", "::1"}
WILDCARDS = {"", "0.0.0.0", "::", "*"}
DOC_PATHS = {"/docs", "/docs/oauth2-redirect", "/redoc", "/openapi.json"}


def host_name(value: str) -> str:
    """The host part of a Host header or netloc, lower case, without port or IPv6 brackets."""
    value = value.strip().lower()
    if value.startswith("["):
        return value[1:].split("]", 1)[0]
    return value.rsplit(":", 1)[0] if value.count(":") == 1 else value


def is_loopback(host: str) -> bool:
    name = host_name(host)
    return name in LOOPBACK_NAMES or name.startswith("127.")


class Guard:
    """ASGI middleware applying the rules above; refusals are OpenAI error bodies."""

    def __init__(self, app, *, host: str, allowed_hosts, cors_origins, api_key, metrics_open: bool):
        self.app = app
        allowed = {host_name(h) for h in allowed_hosts or ()}
        self.any_host = "*" in allowed or (host_name(host) in WILDCARDS and not allowed)
        self.hosts = LOOPBACK_NAMES | allowed | ({host_name(host)} - WILDCARDS)
        self.origins = set(cors_origins or ())
        self.api_key = api_key
        self.metrics_open = metrics_open

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope.get("headers", [])}
        refusal = self._refusal(scope, headers)
        if refusal is None:
            return await self.app(scope, receive, send)
        status, message, code = refusal
        body = json.dumps({"error": {"message": message, "type": "invalid_request_error",
                                     "param": None, "code": code}}).encode()
        await send({"type": "http.response.start", "status": status,
                    "headers": [(b"content-type", b"application/json"),
                                (b"content-length", str(len(body)).encode())]})
        await send({"type": "http.response.body", "body": body})

    def _refusal(self, scope, headers: dict) -> tuple[int, str, str] | None:
        host = headers.get("host", "")
        if host and not self.any_host and host_name(host) not in self.hosts:
            return (400, f"Host '{host}' is not served here. Start the server with --allow-host "
                    f"{host_name(host)} to accept it.", "invalid_host")
        origin = headers.get("origin")
        if origin is not None and not self._origin_allowed(origin, host):
            return (403, f"Cross-origin request from {origin} refused. Start the server with "
                    f"--cors-origin {origin} to allow that site.", "cross_origin_refused")
        path = scope.get("path", "")
        if self.api_key and (path in DOC_PATHS or (path == "/metrics" and not self.metrics_open)):
            return self._auth_refusal(headers.get("authorization", ""))
        return None

    def _origin_allowed(self, origin: str, host: str) -> bool:
        if "*" in self.origins or origin in self.origins:
            return True
        parts = urlsplit(origin)
        return bool(host) and parts.scheme in ("http", "https") and parts.netloc.lower() == host.lower()

    def _auth_refusal(self, header: str) -> tuple[int, str, str] | None:
        scheme, _, given = header.partition(" ")
        if scheme.lower() == "bearer" and hmac.compare_digest(given.strip().encode(), self.api_key.encode()):
            return None
        message = "Incorrect API key provided." if header else "Missing API key: send 'Authorization: Bearer <key>'."
        return 401, message, "invalid_api_key"
