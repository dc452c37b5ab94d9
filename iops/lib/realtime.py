"""Pushes "something changed" notes to the dashboard group. Messages carry ids, never payloads.

Consumers coalesce them and render at most a few updates a second (DASHBOARD_PUSH_INTERVAL_MS).
`one_push` gathers every change published on this thread inside a block into one message: the pipeline's
after-commit list uses it, so a batch whose insights are scored inline still makes one broadcast.
"""

from __future__ import annotations

import asyncio
import logging
import threading
from collections.abc import Iterator
from contextlib import contextmanager
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

    def merge(self, other: Change) -> None:
        self.events += other.events
        self.alerts_created += other.alerts_created
        self.alerts_updated += other.alerts_updated
        self.insights += other.insights

    def __bool__(self) -> bool:
        return bool(self.events or self.alerts_created or self.alerts_updated or self.insights)


_gathering = threading.local()


@contextmanager
def one_push(change: Change) -> Iterator[Change]:
    """Changes published on this thread inside the block join `change`, sent once when the block ends
    (nested blocks join the outer one). Nothing is sent for an empty change."""
    outer: Change | None = getattr(_gathering, "change", None)
    _gathering.change = outer or change
    if outer is not None:
        outer.merge(change)
    try:
        yield _gathering.change
    finally:
        _gathering.change = outer
        if outer is None and change:
            publish_change(change)


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
    """Send now, or join the push of an enclosing `one_push` block on this thread."""
    gathering: Change | None = getattr(_gathering, "change", None)
    if gathering is not None:
        gathering.merge(change)
        return
    _publish_now(change)


def _publish_now(change: Change) -> None:
    try:
        _send({"type": "dashboard.changed", **asdict(change)})
    except Exception:  # noqa: BLE001 - a dashboard push must never fail the pipeline
        logger.warning("dashboard push failed", exc_info=True)
