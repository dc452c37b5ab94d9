"""JSON text for the hot path (snapshot evidence, raw payloads): orjson, about ten times the stdlib's
encoder, with the stdlib for what orjson refuses (integers beyond 64 bits), so no value that encoded
before is refused now."""

from __future__ import annotations

import json
from typing import Any

import orjson


def json_text(value: Any) -> str:
    try:
        return orjson.dumps(value).decode()
    except orjson.JSONEncodeError:
        return json.dumps(value, separators=(",", ":"))
