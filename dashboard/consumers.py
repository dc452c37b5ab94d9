"""/ws/dashboard/ and /ws/entities/…: staff-only sockets; coalesce change notes into a few rendered
updates a second.

On connect it sends the whole live state (the catch-up after any reconnect), then at most one
update per DASHBOARD_PUSH_INTERVAL_MS however many change notes arrive: a burst of N notes in T
seconds yields at most ceil(T / interval) + 1 messages. A note after a quiet interval is rendered at
once (leading edge); notes inside the interval wait for its end (trailing edge).
"""

from __future__ import annotations

import asyncio
import time
from urllib.parse import parse_qs

from channels.db import database_sync_to_async
from channels.generic.websocket import AsyncWebsocketConsumer
from django.conf import settings
from django.utils import timezone

from dashboard.embed import EmbedRefused, embed_grant, render_embed_state
from dashboard.rendering import render_entity, render_state, render_update
from dashboard.selectors import ENTITY_TYPES, FeedFilters, parse_range
from dashboard.timezones import user_zone, zone_active
from iops.lib.realtime import DASHBOARD_GROUP


class _LiveConsumer(AsyncWebsocketConsumer):
    """Staff-only socket on the dashboard group: sends its state on connect, then at most one update
    per DASHBOARD_PUSH_INTERVAL_MS however many change notes arrive. Subclasses say what the state
    is (`initial`) and what an update is (`update`, None for nothing to send)."""

    async def connect(self):
        if not self.authorized():
            await self.close(code=4403)
            return
        if not self.setup():
            await self.close(code=4404)
            return
        self._pending: asyncio.Task | None = None
        self._dirty = False
        self._last_flush = float("-inf")
        self.zone = await database_sync_to_async(user_zone)(self.scope.get("user"))
        await self.channel_layer.group_add(DASHBOARD_GROUP, self.channel_name)
        await self.accept()
        html = await database_sync_to_async(self._in_zone)(self.initial, now=timezone.now())
        if html:
            await self.send(text_data=html)

    def authorized(self) -> bool:
        """A staff session (the embed socket takes its signed link instead)."""
        user = self.scope.get("user")
        return user is not None and user.is_authenticated and user.is_staff

    def _in_zone(self, render, **kwargs):
        """Render in the user's display zone, as their page request does (dates, labels, "today")."""
        with zone_active(self.zone):
            return render(**kwargs)

    def setup(self) -> bool:
        """Read the socket's parameters; False refuses it."""
        return True

    def initial(self, *, now) -> str | None:
        raise NotImplementedError

    def update(self, *, now, notes) -> str | None:
        """Render an update for the notes taken since the last one (`take_notes`)."""
        raise NotImplementedError

    def note(self, event: dict) -> None:
        """Remember what a change note says until the next flush (runs on the event loop)."""

    def take_notes(self):
        """What the notes since the last flush said, handed to `update` (runs on the event loop, so
        no note can slip in between reading and clearing)."""
        return None

    async def disconnect(self, code):
        pending = getattr(self, "_pending", None)
        if pending is not None:
            pending.cancel()
        expiry = getattr(self, "_expiry", None)
        if expiry is not None:
            expiry.cancel()
        await self.channel_layer.group_discard(DASHBOARD_GROUP, self.channel_name)

    async def receive(self, text_data=None, bytes_data=None):
        """The page sends nothing; anything it does send is ignored."""

    async def dashboard_changed(self, event):
        self.note(event)
        self._dirty = True
        if self._pending is None or self._pending.done():
            self._pending = asyncio.ensure_future(self._flush())

    async def _flush(self):
        """Render while notes are pending, flushes at least DASHBOARD_PUSH_INTERVAL_MS apart."""
        loop = asyncio.get_running_loop()
        interval = settings.DASHBOARD_PUSH_INTERVAL_MS / 1000
        while self._dirty:
            wait = self._last_flush + interval - loop.time()
            if wait > 0:
                await asyncio.sleep(wait)
            self._dirty = False
            self._last_flush = loop.time()
            notes = self.take_notes()
            html = await database_sync_to_async(self._in_zone)(self.update, now=timezone.now(), notes=notes)
            if html:
                await self.send(text_data=html)


class DashboardConsumer(_LiveConsumer):
    """/ws/dashboard/?range=…&severity=…&status=…&muted=…: KPIs, charts and the alert feed."""

    def setup(self) -> bool:
        query = parse_qs(self.scope.get("query_string", b"").decode())

        def first(name: str) -> str | None:
            return (query.get(name) or [None])[0]

        self.range_key = parse_range(first("range"))
        self.filters = FeedFilters.parse(first("severity"), first("status"), first("muted"))
        self._created: set[int] = set()
        self._updated: set[int] = set()
        self._insights: set[int] = set()
        return True

    def initial(self, *, now) -> str:
        return render_state(range_key=self.range_key, filters=self.filters, now=now)

    def note(self, event: dict) -> None:
        self._created.update(event.get("alerts_created", []))
        self._updated.update(event.get("alerts_updated", []))
        self._insights.update(event.get("insights", []))

    def take_notes(self) -> tuple[list[int], list[int], list[int]]:
        notes = sorted(self._created), sorted(self._updated), sorted(self._insights)
        self._created, self._updated, self._insights = set(), set(), set()
        return notes

    def update(self, *, now, notes) -> str:
        created, updated, insights = notes
        return render_update(
            range_key=self.range_key,
            filters=self.filters,
            now=now,
            created=created,
            updated=updated,
            insights=insights,
        )


class EntityConsumer(_LiveConsumer):
    """/ws/entities/{entity_type}/{entity_id}: an entity page's parts (figures, chart, alerts,
    insights, sessions), re-rendered after change notes; only the parts that changed are sent, so a
    form the user is filling in elsewhere on the page stays as it is (change notes name alerts, not
    the entities a batch touched, hence the render-and-compare)."""

    def setup(self) -> bool:
        kwargs = self.scope["url_route"]["kwargs"]
        self.entity_type, self.entity_id = kwargs["entity_type"], kwargs["entity_id"]
        self._shown: dict[str, str] = {}
        return self.entity_type in ENTITY_TYPES

    def initial(self, *, now) -> str | None:
        return self._changed_parts(now=now)

    def update(self, *, now, notes) -> str | None:
        return self._changed_parts(now=now)

    def _changed_parts(self, *, now) -> str | None:
        parts = render_entity(entity_type=self.entity_type, entity_id=self.entity_id, now=now)
        if parts is None:
            return None
        changed = [html for part, html in parts.items() if self._shown.get(part) != html]
        self._shown = parts
        return "".join(changed) or None


class EmbedConsumer(_LiveConsumer):
    """/ws/embed/{panel}/?t=TOKEN: one embedded panel (dashboard/embed.py), authorised by its signed
    link rather than a session (the iframe is on another site: no cookie, and no staff), read-only,
    closed with 4403 when the link expires."""

    def authorized(self) -> bool:
        query = parse_qs(self.scope.get("query_string", b"").decode())
        panel = self.scope["url_route"]["kwargs"]["panel"]
        try:
            self.grant = embed_grant((query.get("t") or [None])[0], panel=panel)
        except EmbedRefused:
            return False
        return True

    def setup(self) -> bool:
        remaining = self.grant.expires_at.timestamp() - time.time()
        self._expiry = asyncio.get_running_loop().call_later(
            max(0.0, remaining), lambda: asyncio.ensure_future(self.close(code=4403))
        )
        return True

    def initial(self, *, now) -> str:
        return render_embed_state(panel=self.grant.panel, range_key=self.grant.range_key, now=now)

    def update(self, *, now, notes) -> str:
        return self.initial(now=now)
