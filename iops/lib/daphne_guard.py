"""What daphne does not bound on its own, bounded before a request reaches the application (issue 21).

Daphne (Twisted) reads a whole request body — into memory or a temporary file — and only then calls
the ASGI application, handing it every chunk at once: an anonymous 300 MB POST grew a web process by
290 MB before its 401, a declared `Content-Length: 99999999` got no early 413, and a body dripped one
byte every 5 s held its connection for minutes (Twisted's idle timeout restarts on every byte). This
module swaps daphne's request and factory classes for subclasses that decide from the request line and
headers, before any body is read:

- 401 for a request with a body method (POST, PUT, PATCH, DELETE) that carries no credential — no
  `Authorization`, `X-API-Key` or session cookie — except the login forms; a credential is only checked
  for presence here (the database is not reachable from Twisted's thread), the application checks it;
- 413 for a declared length over `INGEST_MAX_BODY_BYTES`, and as soon as the bytes read pass it
  (chunked bodies and lying lengths too): the connection is closed, the rest is never read;
- 408 when a request is not whole (request line, headers and body) `HTTP_READ_TIMEOUT_SECONDS` after
  its first line arrived; a connection that sends no request line for that long after opening or after
  its previous response is closed.

Refusals are the API's JSON error shape with `Connection: close`. `install()` is called by iops.asgi,
so `daphne iops.asgi:application` and `manage.py serve` both run with it.
"""

from __future__ import annotations

import json
import logging
from http import HTTPStatus
from typing import TYPE_CHECKING, Any

from django.conf import settings

logger = logging.getLogger(__name__)

if TYPE_CHECKING:  # the mixins' bases as a type checker sees them; at run time install() combines them
    from daphne.http_protocol import HTTPFactory as _Factory
    from daphne.http_protocol import WebRequest as _Request
else:
    _Factory = _Request = object

BODY_METHODS = {b"POST", b"PUT", b"PATCH", b"DELETE"}
# Forms an anonymous visitor must be able to post (to obtain a session at all).
ANONYMOUS_POST_PATHS = ("/accounts/login/", "/admin/login/")


def refusal(status: int, message: str, field: str, detail: str) -> bytes:
    """A complete HTTP/1.1 response in the API's error shape that closes the connection."""
    body = json.dumps({"error": message, "errors": [{"field": field, "message": detail}]}).encode()
    head = [
        f"HTTP/1.1 {status} {HTTPStatus(status).phrase}",
        "Content-Type: application/json",
        f"Content-Length: {len(body)}",
        "Connection: close",
        "X-Content-Type-Options: nosniff",
    ]
    if status == 401:
        head.append('WWW-Authenticate: Bearer realm="iops"')
    return ("\r\n".join(head) + "\r\n\r\n").encode() + body


def _has_credential(headers) -> bool:
    if headers.hasHeader(b"authorization") or headers.hasHeader(b"x-api-key"):
        return True
    cookie = settings.SESSION_COOKIE_NAME.encode() + b"="
    return any(cookie in value for value in headers.getRawHeaders(b"cookie") or [])


def _close_if_idle(channel) -> None:
    """The connection sent no request line within the timeout (after opening or its last response)."""
    transport = getattr(channel, "transport", None)
    if transport is not None and not transport.disconnecting and not channel.requests:
        logger.info("idle connection closed", extra={"timeout": settings.HTTP_READ_TIMEOUT_SECONDS})
        transport.loseConnection()


def _reactor() -> Any:
    """Twisted's global reactor (its interfaces type `callLater` for zope, not for mypy)."""
    from twisted.internet import reactor

    return reactor


def _arm_idle(channel) -> None:
    reactor = _reactor()

    pending = getattr(channel, "_iops_idle", None)
    if pending is not None and pending.active():
        pending.cancel()
    channel._iops_idle = reactor.callLater(settings.HTTP_READ_TIMEOUT_SECONDS, _close_if_idle, channel)


def _disarm_idle(channel) -> None:
    pending = getattr(channel, "_iops_idle", None)
    if pending is not None and pending.active():
        pending.cancel()


class RequestGuard(_Request):
    """Mixed in before daphne's `WebRequest` (install): decides from the request line and headers, and
    counts the body as it arrives, before daphne hands anything to the application."""

    _iops_guarded = True

    def __init__(self, *args, **kwargs):
        reactor = _reactor()

        super().__init__(*args, **kwargs)
        self._iops_refused = False
        self._iops_received = False
        self._iops_read = 0
        _disarm_idle(self.channel)
        self._iops_deadline = reactor.callLater(settings.HTTP_READ_TIMEOUT_SECONDS, self._iops_too_slow)

    def _iops_refuse(self, status: int, message: str, field: str, detail: str) -> None:
        self._iops_refused = True
        self._iops_stop_deadline()
        self.requestHeaders.removeHeader(b"expect")  # no "100 Continue" after the answer
        transport = self.channel.transport if self.channel is not None else None
        if transport is not None and not transport.disconnecting:
            transport.write(refusal(status, message, field, detail))
            transport.loseConnection()  # stops reading: the rest of the body is never taken in

    def _iops_stop_deadline(self) -> None:
        if self._iops_deadline.active():
            self._iops_deadline.cancel()

    def _iops_too_slow(self) -> None:
        if not self._iops_received and not self._iops_refused:
            timeout = settings.HTTP_READ_TIMEOUT_SECONDS
            logger.info("request not received in time", extra={"timeout": timeout})
            self._iops_refuse(
                408, "request timeout", "body", f"send the whole request within {timeout:g} seconds"
            )

    def _iops_too_large(self) -> None:
        limit = settings.INGEST_MAX_BODY_BYTES
        self._iops_refuse(413, "body too large", "body", f"must be at most {limit} bytes")

    def gotLength(self, length):
        super().gotLength(length)  # all headers are in: decide before any body is read
        method = getattr(self.channel, "_command", b"")
        target = getattr(self.channel, "_path", b"").split(b"?", 1)[0].decode("latin-1")
        if (
            method in BODY_METHODS
            and target not in ANONYMOUS_POST_PATHS
            and not _has_credential(self.requestHeaders)
        ):
            self._iops_refuse(
                401,
                "authentication required",
                "Authorization",
                "missing API key (Bearer KEY or X-API-Key) or staff session",
            )
        elif length is not None and length > settings.INGEST_MAX_BODY_BYTES:
            self._iops_too_large()

    def handleContentChunk(self, data):
        if self._iops_refused:
            return
        self._iops_read += len(data)
        if self._iops_read > settings.INGEST_MAX_BODY_BYTES:
            self._iops_too_large()
            return
        super().handleContentChunk(data)

    def requestReceived(self, command, path, version):
        if self._iops_refused:
            return
        self._iops_received = True
        self._iops_stop_deadline()
        super().requestReceived(command, path, version)

    def finish(self):
        channel = self.channel
        super().finish()
        if channel is not None and not channel.requests and getattr(channel, "transport", None):
            _arm_idle(channel)  # a kept-alive connection must start its next request in time

    def connectionLost(self, reason):
        self._iops_stop_deadline()
        super().connectionLost(reason)


class FactoryGuard(_Factory):
    """Mixed in before daphne's `HTTPFactory`: a new connection must send its request line in time."""

    def buildProtocol(self, addr):
        protocol = super().buildProtocol(addr)
        channel = getattr(protocol, "_channel", None)
        if channel is not None:
            _arm_idle(channel)
        return protocol


def install() -> None:
    """Swap daphne's request and HTTP factory classes for the guarded ones (idempotent)."""
    from daphne import http_protocol, server

    if getattr(http_protocol.WebRequest, "_iops_guarded", False):
        return
    # daphne's factory builds `WebRequest` and its server builds `HTTPFactory`, both looked up by name
    # when a connection or the server starts: the subclasses replace them for everything started after.
    http_protocol.WebRequest = type("GuardedRequest", (RequestGuard, http_protocol.WebRequest), {})
    guarded_factory = type("GuardedHTTPFactory", (FactoryGuard, http_protocol.HTTPFactory), {})
    http_protocol.HTTPFactory = guarded_factory
    server.HTTPFactory = guarded_factory
