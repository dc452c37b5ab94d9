"""The dashboard's WebSocket is same-origin: scheme, host and port of the Origin must be the site's own
(issue 21, finding 5). Channels' AllowedHostsOriginValidator compared the host only, so a page of an
allowed host on another port or scheme could open the socket with a staff session."""

from __future__ import annotations

import pytest
from channels.db import database_sync_to_async
from channels.testing import WebsocketCommunicator
from django.test import Client

from iops.asgi import application

pytestmark = [pytest.mark.django_db(transaction=True)]


@database_sync_to_async
def _staff_cookie() -> str:
    from django.contrib.auth import get_user_model

    user, _ = get_user_model().objects.get_or_create(username="ws-staff", defaults={"is_staff": True})
    client = Client()
    client.force_login(user)
    return f"sessionid={client.cookies['sessionid'].value}"


async def _connects(origin: str | None, host: str = "127.0.0.1:8000", **extra: str) -> bool:
    headers = [(b"host", host.encode()), (b"cookie", (await _staff_cookie()).encode())]
    if origin is not None:
        headers.append((b"origin", origin.encode()))
    headers += [(k.replace("_", "-").encode(), v.encode()) for k, v in extra.items()]
    comm = WebsocketCommunicator(application, "/ws/dashboard/", headers=headers)
    connected, _ = await comm.connect()
    await comm.disconnect()
    return connected


@pytest.mark.parametrize(
    "origin",
    [
        "http://127.0.0.1:8001",  # same host, another port
        "https://127.0.0.1:8000",  # same host and port, another scheme
        "http://127.0.0.1",  # default port is 80, not 8000
        "http://localhost:8000",  # another allowed host
        "null",
        None,
    ],
)
async def test_a_socket_from_another_origin_of_an_allowed_host_is_refused(origin):
    assert not await _connects(origin)


async def test_a_socket_from_the_sites_own_origin_connects():
    assert await _connects("http://127.0.0.1:8000")
    assert await _connects("http://localhost", host="localhost:80")


async def test_behind_a_tls_proxy_the_https_origin_is_the_sites(settings):
    settings.SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")
    settings.ALLOWED_HOSTS = ["iops.example.com"]
    https = {"x_forwarded_proto": "https"}
    assert await _connects("https://iops.example.com", host="iops.example.com", **https)
    assert not await _connects("http://iops.example.com", host="iops.example.com", **https)
    assert not await _connects("https://iops.example.com:8443", host="iops.example.com", **https)


async def test_a_csrf_trusted_origin_connects(settings):
    settings.CSRF_TRUSTED_ORIGINS = ["https://ops.example.com"]
    assert await _connects("https://ops.example.com")
    assert not await _connects("https://ops.example.com:444")
