"""Who may talk to the app: the access token, the Host header, and security headers on every
response (a pure ASGI middleware: no per-request overhead beyond a few comparisons)."""

from __future__ import annotations

import hmac
import json
from urllib.parse import parse_qs


class Guard:
    def __init__(self, app, token: str | None = None, allowed_hosts: list[str] | None = None,
                 page_policy: str = "default-src 'self'"):
        self.app = app
        self.token = token.encode() if token else None
        self.allowed_hosts = None if allowed_hosts is None else {h.lower() for h in allowed_hosts}
        self.policy = page_policy.encode()

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        headers = dict(scope.get("headers") or ())
        if self.allowed_hosts is not None:
            host = headers.get(b"host", b"").decode("latin-1").lower()
            name = host.rsplit(":", 1)[0] if not host.endswith("]") else host
            if name not in self.allowed_hosts:
                return await _refuse(send, 421, f"this server answers only for "
                                                f"{', '.join(sorted(self.allowed_hosts))}")
        if self.token is not None and not self._has_token(scope, headers):
            return await _refuse(send, 401, "this server needs its access token: open the URL it "
                                            "printed at start (…?token=…), or send the header "
                                            "'Authorization: Bearer TOKEN'")

        async def send_with_headers(message):
            if message["type"] == "http.response.start":
                names = {k.lower() for k, _ in message.get("headers", [])}
                extra = [(b"x-content-type-options", b"nosniff"),
                         (b"referrer-policy", b"no-referrer")]
                if b"content-security-policy" not in names:
                    extra.append((b"content-security-policy", self.policy))
                message["headers"] = list(message.get("headers", [])) + extra
            await send(message)

        return await self.app(scope, receive, send_with_headers)

    def _has_token(self, scope, headers) -> bool:
        given = []
        auth = headers.get(b"authorization", b"")
        if auth[:7].lower() == b"bearer ":
            given.append(auth[7:].strip())
        query = parse_qs(scope.get("query_string", b"").decode("latin-1"))
        given += [v.encode("latin-1") for v in query.get("token", [])]
        return any(hmac.compare_digest(g, self.token) for g in given)


async def _refuse(send, status: int, message: str) -> None:
    body = json.dumps({"error": message}).encode()
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", b"application/json"),
                            (b"content-length", str(len(body)).encode())]})
    await send({"type": "http.response.body", "body": body})
