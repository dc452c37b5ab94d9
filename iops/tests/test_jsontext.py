"""JSON text on the hot path: orjson's output, and the stdlib's for what orjson refuses."""

from __future__ import annotations

import json

from iops.lib.jsontext import json_text


def test_json_text_round_trips_what_the_stdlib_encodes_including_integers_beyond_64_bits():
    for value in ({"a": 1.5, "b": [None, True], "c": "é"}, {"big": 10**30, "n": -(2**70)}, []):
        assert json.loads(json_text(value)) == value
