"""Pushes "something changed" notes to the dashboard group. Messages carry ids, never payloads.

Consumers coalesce them and render at most a few updates a second (DASHBOARD_PUSH_INTERVAL_MS).
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import asdict, dataclass, field

from asgiref.sync import async_to_sync
from channels.layers import get_channel_layer

logger = logging.getLogger(__name__)

DASHBOARD_GROUP = "dashboard"
_server_loop: asyncio.AbstractEventLoop | None = None


@dataclass
class Change:
    events: int = 0
    alerts_created: list[int] = field(default_factory=list)
    alerts_updated: list[int] = field(default_factory=list)
    insights: list[int] = field(default_factory=list)  # stored insights (the drawer and feed row show them)


def register_server_loop(loop: asyncio.AbstractEventLoop) -> None:
    """Embedded mode: the in-memory layer lives on the server's loop; sends from threads go through it."""
    global _server_loop
    _server_loop = loop


def _send(message: dict) -> None:
    layer = get_channel_layer()
    if layer is None:
        return
    loop = _server_loop
    if loop is not None and loop.is_running():
        # InMemoryChannelLayer queues are not thread-safe: hand the send to the loop that owns them.
        future = asyncio.run_coroutine_threadsafe(layer.group_send(DASHBOARD_GROUP, message), loop)
        future.result(timeout=5)
    else:
        async_to_sync(layer.group_send)(DASHBOARD_GROUP, message)


def publish_change(change: Change) -> None:
    try:
        _send({"type": "dashboard.changed", **asdict(change)})
    except Exception:  # noqa: BLE001 - a dashboard push must never fail the pipeline
        logger.warning("dashboard push failed", exc_info=True)


def publish_alert_change(alert_id: int) -> None:
    publish_change(Change(alerts_updated=[alert_id]))
