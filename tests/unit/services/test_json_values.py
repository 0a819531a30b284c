"""Non-finite floats survive the JSON columns on every database: written as a marker PostgreSQL
accepts, read back as the float; everything else is plain JSON, and bare tokens SQLite kept
from before still read."""

from __future__ import annotations

import json
import math

from llmops_services.db.json_values import dumps, loads


def test_non_finite_floats_round_trip_as_valid_json() -> None:
    value = {"perplexity": math.inf, "low": -math.inf, "rows": [1.5, math.nan], "name": "x"}
    text = dumps(value)
    json.loads(text, parse_constant=lambda token: (_ for _ in ()).throw(ValueError(token)))
    back = loads(text)
    assert back["perplexity"] == math.inf and back["low"] == -math.inf
    assert back["rows"][0] == 1.5 and math.isnan(back["rows"][1]) and back["name"] == "x"


def test_plain_values_and_old_rows_read_as_before() -> None:
    assert loads(dumps({"a": [1, "b", None, {"$float": "other"}]})) == {
        "a": [1, "b", None, {"$float": "other"}]
    }
    assert loads('{"perplexity": Infinity}') == {"perplexity": math.inf}
