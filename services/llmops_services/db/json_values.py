"""How the JSON columns (metrics, hyperparameters, reports) are written and read: as the standard
library does, except for floats that are not finite. A perplexity that overflowed is `inf`, and
PostgreSQL's JSON type refuses the `Infinity` and `NaN` tokens Python writes for it (SQLite keeps
them), so a job's metrics would fail to save there. Such a float is written as
`{"$float": "inf"}` (or `"-inf"`, `"nan"`) and read back as the float on both databases; rows
SQLite stored earlier with bare tokens still read, since `json.loads` accepts them."""

from __future__ import annotations

import json
import math
from typing import Any

__all__ = ["dumps", "loads"]

_KEY = "$float"
_NAMES = ("inf", "-inf", "nan")


def _encode(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return {_KEY: "nan" if math.isnan(value) else ("inf" if value > 0 else "-inf")}
    if isinstance(value, dict):
        return {key: _encode(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [_encode(item) for item in value]
    return value


def _decode(entry: dict[str, Any]) -> Any:
    if len(entry) == 1 and entry.get(_KEY) in _NAMES:
        return float(entry[_KEY])
    return entry


def dumps(value: Any) -> str:
    """JSON text of `value`, with non-finite floats written as `{"$float": ...}`."""
    return json.dumps(_encode(value), allow_nan=False)


def loads(text: str | bytes) -> Any:
    """The value of JSON text written by `dumps` (or by the standard library)."""
    return json.loads(text, object_hook=_decode)
