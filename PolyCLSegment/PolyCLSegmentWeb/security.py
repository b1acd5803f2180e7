"""Who may talk to the web app: bind address, access token, Host/Origin checks (no trame, no MRML).

Policy ("safe to expose"):

* the default host is ``127.0.0.1`` (loopback only);
* any other host needs a token: ``--token`` or, when none is given, a random one that is printed at
  start (with the URL to open); an explicit ``--token`` also protects a loopback server;
* with a token, every HTTP request (page, assets, the websocket) must carry it: ``?token=`` in the
  URL (the page then gets an HttpOnly, SameSite=Strict cookie so that its own requests carry it),
  the cookie, or ``Authorization: Bearer <token>``; anything else gets 403 and no content;
* on a loopback server, requests whose ``Host`` is not a loopback name are refused (DNS rebinding),
  and websocket upgrades from another origin are refused on every server (a page on another site
  must not drive this one through the user's browser).
"""

from __future__ import annotations

import hmac
import ipaddress
import secrets
from dataclasses import dataclass
from urllib.parse import urlsplit

LOOPBACK_NAMES = {"localhost", "127.0.0.1", "::1", "[::1]"}


def isLoopback(host: str) -> bool:
    host = (host or "").strip().strip("[]")
    if host in ("localhost", ""):
        return host == "localhost"
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


@dataclass
class AccessPolicy:
    """What the server enforces. ``token`` None: no token (loopback only)."""

    host: str = "127.0.0.1"
    token: str | None = None
    generated: bool = False  # the token was made here (print it)

    @property
    def cookieName(self) -> str:
        return "polycl_token"

    def tokenMatches(self, candidate: str | None) -> bool:
        return bool(self.token) and candidate is not None and hmac.compare_digest(
            candidate.encode("utf-8", "replace"), self.token.encode("utf-8"))

    def url(self, port: int) -> str:
        host = self.host if not self.host.startswith("0.") and self.host not in ("::", "") else "127.0.0.1"
        if ":" in host and not host.startswith("["):
            host = f"[{host}]"
        return f"http://{host}:{port}/" + (f"?token={self.token}" if self.token else "")


def resolvePolicy(host: str | None = None, token: str | None = None) -> AccessPolicy:
    """The policy for ``--host``/``--token``: a non-loopback host without a token gets a generated one."""
    host = host or "127.0.0.1"
    if token is not None and not token.strip():
        raise ValueError("--token must not be empty")
    if token:
        return AccessPolicy(host, token.strip(), generated=False)
    if isLoopback(host):
        return AccessPolicy(host, None)
    return AccessPolicy(host, secrets.token_urlsafe(24), generated=True)


def _hostName(hostHeader: str) -> str:
    try:
        return urlsplit("//" + (hostHeader or "")).hostname or ""
    except ValueError:
        return ""


def check(policy: AccessPolicy, *, hostHeader: str, origin: str | None, isWebsocket: bool,
          queryToken: str | None, cookieToken: str | None, authorization: str | None) -> tuple[bool, str, bool]:
    """(allowed, reason when refused, whether to set the cookie) for one request."""
    if isLoopback(policy.host) and not isLoopback(_hostName(hostHeader)):
        return False, "this server only answers to 127.0.0.1/localhost", False
    if isWebsocket and origin:
        if urlsplit(origin).netloc.lower() != (hostHeader or "").lower():
            return False, "cross-origin websocket refused", False
    if policy.token is None:
        return True, "", False
    bearer = None
    if authorization and authorization.lower().startswith("bearer "):
        bearer = authorization[7:].strip()
    if policy.tokenMatches(queryToken):
        return True, "", True
    if policy.tokenMatches(cookieToken) or policy.tokenMatches(bearer):
        return True, "", False
    return False, "a valid access token is required (open the URL printed when the server started)", False


def aiohttpMiddleware(policy: AccessPolicy):
    """An aiohttp middleware enforcing :func:`check` on every request (installed before the routes)."""
    from aiohttp import web

    @web.middleware
    async def polyclAccess(request, handler):
        isWs = request.headers.get("Upgrade", "").lower() == "websocket"
        ok, reason, setCookie = check(
            policy, hostHeader=request.headers.get("Host", ""), origin=request.headers.get("Origin"),
            isWebsocket=isWs, queryToken=request.query.get("token"),
            cookieToken=request.cookies.get(policy.cookieName), authorization=request.headers.get("Authorization"))
        if not ok:
            return web.Response(status=403, text=f"PolyCL web: forbidden: {reason}\n")

        def addCookie(response):
            if setCookie:
                response.set_cookie(policy.cookieName, policy.token, httponly=True, samesite="Strict", path="/")
            return response

        try:
            return addCookie(await handler(request))
        except web.HTTPException as exc:  # e.g. the / -> index.html?token=... redirect
            addCookie(exc)
            raise

    return polyclAccess
