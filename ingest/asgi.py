"""The lean route for POST /api/ingest: a small ASGI app in front of Django for exactly this path.

Django's full request path (handler, middleware chain, several thread hops per request) costs more
than the ingest work itself. This route runs the very same steps (ingest/endpoint.py: checks,
validation with ingest.schemas, the cached key lookup of ingest.keys, publishing through the
EventStream) with one thread hop per request, and answers with the same status codes, bodies and
headers as the Django view. Every other path, and this one when SECURE_SSL_REDIRECT asks Django to
redirect, goes to Django unchanged.
"""

from __future__ import annotations

import asyncio
import contextvars
import functools
import logging
import uuid
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from django.conf import settings
from django.db import close_old_connections
from django.http.request import split_domain_port, validate_host
from django.utils import timezone

from ingest import endpoint
from ingest.keys import MISS, key_cache, key_from_headers
from iops.lib.request_id import request_id_var

logger = logging.getLogger("ingest.asgi")

PATH = "/api/ingest"
# The headers Django's middleware adds to every response (security, request id), mirrored here.
STATIC_HEADERS = [
    (b"content-type", b"application/json"),
    (b"x-content-type-options", b"nosniff"),
    (b"x-frame-options", b"DENY"),
    (b"referrer-policy", b"same-origin"),
    (b"cross-origin-opener-policy", b"same-origin"),
]


class _Headers:
    """Case-insensitive view of ASGI headers, the subset key_from_headers needs (`get`)."""

    def __init__(self, raw: list[tuple[bytes, bytes]]):
        self._h: dict[str, str] = {}
        for name, value in raw:
            key = name.decode("latin-1").lower()
            text = value.decode("latin-1")
            self._h[key] = f"{self._h[key]},{text}" if key in self._h else text

    def get(self, name: str, default: Any = None) -> Any:
        return self._h.get(name.lower(), default)


def _blocking(job, *args, **kwargs):
    """Run in the pool: Django's connection hygiene around the unit of work, as a request would get."""
    close_old_connections()
    try:
        return job(*args, **kwargs)
    finally:
        close_old_connections()


class IngestRoute:
    def __init__(self, django_app, *, threads: int = 8):
        self.django_app = django_app
        self.pool = ThreadPoolExecutor(max_workers=threads, thread_name_prefix="ingest")

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http" or scope["path"] != PATH or settings.SECURE_SSL_REDIRECT:
            return await self.django_app(scope, receive, send)
        headers = _Headers(scope["headers"])
        incoming = headers.get("x-request-id", "")
        rid = (
            incoming if 0 < len(incoming) <= 64 and incoming.replace("-", "").isalnum() else uuid.uuid4().hex
        )
        token = request_id_var.set(rid)  # issue 9: the id travels with the events to the worker
        try:
            reply = await self._handle(scope, receive, headers)
        except Exception:  # noqa: BLE001 - the one place that turns a bug into a 500 without a traceback leak
            logger.exception("ingest failed", extra={"request_id": rid})
            reply = endpoint.error(500, "internal error", [{"field": "body", "message": "try again later"}])
        finally:
            request_id_var.reset(token)
        await self._send(send, reply, rid)

    async def _handle(self, scope, receive, headers: _Headers) -> endpoint.Reply:
        host = headers.get("host", "")
        domain, _port = split_domain_port(host)
        allowed = settings.ALLOWED_HOSTS
        if settings.DEBUG and not allowed:
            allowed = [".localhost", "127.0.0.1", "[::1]"]
        if not domain or not validate_host(domain, allowed):
            return endpoint.error(400, "bad request", [{"field": "Host", "message": "host not allowed"}])
        if scope["method"] != "POST":
            return endpoint.method_not_allowed()
        loop = asyncio.get_running_loop()
        plaintext = key_from_headers(headers)
        key = key_cache.get(plaintext) if plaintext else None  # the hot path: no thread hop
        if key is MISS:
            key = await loop.run_in_executor(self.pool, _blocking, endpoint.authenticate, plaintext)
        if key is None:
            return endpoint.unauthenticated()
        if isinstance(key, endpoint.Reply):
            return key
        reply = endpoint.missing_scope(key) or endpoint.precheck(
            content_type=headers.get("content-type"), content_length=headers.get("content-length")
        )
        if reply is not None:
            return reply
        raw = await self._read_body(receive)
        if raw is None:
            return endpoint.too_large()
        now = timezone.now()
        job = functools.partial(
            contextvars.copy_context().run, endpoint.ingest_body, key=key, raw=raw, now=now
        )
        return await loop.run_in_executor(self.pool, _blocking, job)

    @staticmethod
    async def _read_body(receive) -> bytes | None:
        """The body, or None once it passes the limit (stop reading: a lying Content-Length is no help)."""
        limit = settings.INGEST_MAX_BODY_BYTES
        chunks: list[bytes] = []
        size = 0
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                break
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > limit:
                return None
            chunks.append(chunk)
            if not message.get("more_body", False):
                break
        return b"".join(chunks)

    @staticmethod
    async def _send(send, reply: endpoint.Reply, rid: str) -> None:
        content = reply.content()
        response_headers = [
            *STATIC_HEADERS,
            (b"content-length", str(len(content)).encode()),
            (b"x-request-id", rid.encode()),
            *(
                (name.lower().encode("latin-1"), value.encode("latin-1"))
                for name, value in reply.headers.items()
            ),
        ]
        await send({"type": "http.response.start", "status": reply.status, "headers": response_headers})
        await send({"type": "http.response.body", "body": content})
