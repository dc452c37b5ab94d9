"""The ingest fuzzing of test_fuzz.py again, through the lean ASGI route (ingest/asgi.py) that serves
POST /api/ingest in production: the same generated bodies and raw bytes reach the route through the
real ASGI application (iops.asgi) — never a 5xx, every 4xx names a field, every accepted event is
processed without a dead letter."""

from __future__ import annotations

import pytest

from ingest.tests.test_fuzz import (  # noqa: F401 - the same tests, collected here with the lean `post`
    test_accepted_fuzzed_events_are_processed_without_dead_letters,
    test_fuzzed_bodies_never_get_a_server_error_and_errors_name_a_field,
    test_fuzzed_raw_bytes_never_get_a_server_error,
)
from ingest.tests.test_lean_route import _close_thread_connections, post  # noqa: F401 - fixtures

pytestmark = pytest.mark.django_db(transaction=True)  # the route's pool threads use their own connections
