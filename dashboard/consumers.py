"""/ws/dashboard/: staff-only socket; coalesces change notes into a few rendered updates a second.

On connect it sends the whole live state (the catch-up after any reconnect), then at most one
update per DASHBOARD_PUSH_INTERVAL_MS however many change notes arrive: a burst of N notes in T
seconds yields at most ceil(T / interval) + 1 messages.
"""

from __future__ import annotations

import asyncio
from urllib.parse import parse_qs

from channels.db import database_sync_to_async
from channels.generic.websocket import AsyncWebsocketConsumer
from django.conf import settings
from django.utils import timezone

from dashboard.rendering import render_state, render_update
from dashboard.selectors import FeedFilters, parse_range
from iops.realtime import DASHBOARD_GROUP


class DashboardConsumer(AsyncWebsocketConsumer):
    async def connect(self):
        user = self.scope.get("user")
        if user is None or not user.is_authenticated or not user.is_staff:
            await self.close(code=4403)
            return
        query = parse_qs(self.scope.get("query_string", b"").decode())

        def first(name: str) -> str | None:
            return (query.get(name) or [None])[0]

        self.range_key = parse_range(first("range"))
        self.filters = FeedFilters.parse(first("severity"), first("status"))
        self._created: set[int] = set()
        self._updated: set[int] = set()
        self._insights: set[int] = set()
        self._pending: asyncio.Task | None = None
        await self.channel_layer.group_add(DASHBOARD_GROUP, self.channel_name)
        await self.accept()
        html = await database_sync_to_async(render_state)(
            range_key=self.range_key, filters=self.filters, now=timezone.now()
        )
        await self.send(text_data=html)

    async def disconnect(self, code):
        if getattr(self, "_pending", None):
            self._pending.cancel()
        await self.channel_layer.group_discard(DASHBOARD_GROUP, self.channel_name)

    async def receive(self, text_data=None, bytes_data=None):
        """The page sends nothing; anything it does send is ignored."""

    async def dashboard_changed(self, event):
        self._created.update(event.get("alerts_created", []))
        self._updated.update(event.get("alerts_updated", []))
        self._insights.update(event.get("insights", []))
        if self._pending is None or self._pending.done():
            self._pending = asyncio.ensure_future(self._flush_later())

    async def _flush_later(self):
        await asyncio.sleep(settings.DASHBOARD_PUSH_INTERVAL_MS / 1000)
        created, updated = sorted(self._created), sorted(self._updated)
        insights = sorted(self._insights)
        self._created.clear()
        self._updated.clear()
        self._insights.clear()
        html = await database_sync_to_async(render_update)(
            range_key=self.range_key,
            filters=self.filters,
            now=timezone.now(),
            created=created,
            updated=updated,
            insights=insights,
        )
        await self.send(text_data=html)
