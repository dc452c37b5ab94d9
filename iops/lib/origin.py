"""Same-origin WebSockets: the Origin must be this site's own — scheme, host and port — as Django's CSRF
check demands of a POST. Channels' AllowedHostsOriginValidator compared the host alone, so a page of
the same host on another port or scheme (http://iops.example.com:8081) could open the dashboard's
socket with the visitor's session (issue 21)."""

from __future__ import annotations

from urllib.parse import urlsplit

from channels.security.websocket import WebsocketDenier
from django.conf import settings
from django.http.request import split_domain_port, validate_host

DEFAULT_PORTS = {"http": 80, "https": 443}


def _origin_tuple(scheme: str, host: str) -> tuple[str, str, int] | None:
    domain, port = split_domain_port(host)
    if not domain or scheme not in DEFAULT_PORTS:
        return None
    try:
        number = int(port) if port else DEFAULT_PORTS[scheme]
    except ValueError:
        return None
    return scheme, domain, number


def _site_scheme(scope, headers: dict[bytes, bytes]) -> str:
    """The scheme the browser used for this site: wss/https in the scope, or the TLS proxy's header
    when the deployment trusts one (SECURE_PROXY_SSL_HEADER, BEHIND_TLS_PROXY)."""
    if scope.get("scheme") in ("wss", "https"):
        return "https"
    proxy = settings.SECURE_PROXY_SSL_HEADER
    if proxy:
        name = proxy[0].removeprefix("HTTP_").replace("_", "-").lower().encode("latin-1")
        if headers.get(name, b"").decode("latin-1").split(",")[0].strip() == proxy[1]:
            return "https"
    return "http"


def origin_allowed(scope) -> bool:
    headers = {name.lower(): value for name, value in scope.get("headers", [])}
    host = headers.get(b"host", b"").decode("latin-1")
    origin = headers.get(b"origin", b"").decode("latin-1")
    allowed_hosts = settings.ALLOWED_HOSTS
    if settings.DEBUG and not allowed_hosts:
        allowed_hosts = [".localhost", "127.0.0.1", "[::1]"]
    domain, _port = split_domain_port(host)
    if not origin or not domain or not validate_host(domain, allowed_hosts):
        return False
    if origin in settings.CSRF_TRUSTED_ORIGINS:
        return True
    parsed = urlsplit(origin)
    theirs = _origin_tuple(parsed.scheme, parsed.netloc)
    ours = _origin_tuple(_site_scheme(scope, headers), host)
    return theirs is not None and theirs == ours


class SameOriginValidator:
    """ASGI middleware for the websocket router: refuses a socket whose Origin is not this site's."""

    def __init__(self, application):
        self.application = application

    async def __call__(self, scope, receive, send):
        if scope["type"] == "websocket" and not origin_allowed(scope):
            return await WebsocketDenier()(scope, receive, send)
        return await self.application(scope, receive, send)
