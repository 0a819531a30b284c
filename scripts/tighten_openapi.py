"""Writes into the merged Swagger document what protoc-gen-openapiv2 leaves out but the gateway
enforces, so that a client generated from it, or a fuzzer, sends only requests the gateway takes:

- objects take no unknown properties (the gateway's JSON decoder refuses them with 400:
  `DiscardUnknown: false`), except `protobufAny`, whose `@type` object stays open;
- int64/uint64 fields are strings of decimal digits (proto3 JSON, as Google APIs write them);
- the document's title, version and a description that says both.

Standard library only: scripts/gen_gateway.sh runs it on the files it generates.
Usage: python3 scripts/tighten_openapi.py FILE...
"""

from __future__ import annotations

import json
import sys
from typing import Any

DESCRIPTION = (
    "REST/JSON for the LLM Customization Ops gRPC services, and the OpenAI-compatible API under "
    "/openai/v1 (not in this document; see docs/openai.md). JSON follows proto3's JSON mapping "
    "with proto field names: int64 and uint64 values are decimal strings (numbers are accepted "
    "too), enums are their names, and fields left at their zero value are still written. A "
    "request with a field this document does not name (by its name or lowerCamelCase form) is "
    "refused with 400 INVALID_ARGUMENT. "
    "Errors are google.rpc.Status objects; server-streaming methods answer newline-delimited "
    "JSON, one object per message."
)
# Up to 18 (19) digits: every string the pattern admits fits the type.
INT64_PATTERNS = {"int64": "^-?[0-9]{1,18}$", "uint64": "^[0-9]{1,19}$"}


def tightened(node: Any) -> Any:
    """`node` with `additionalProperties: false` on every object that lists its properties and
    does not already say, and a pattern on every int64/uint64 string."""
    if isinstance(node, list):
        return [tightened(item) for item in node]
    if not isinstance(node, dict):
        return node
    out = {key: tightened(value) for key, value in node.items()}
    if "properties" in out and "additionalProperties" not in out:
        out["additionalProperties"] = False
    if out.get("type") == "string" and out.get("format") in INT64_PATTERNS:
        out.setdefault("pattern", INT64_PATTERNS[out["format"]])
    return out


def tighten_document(document: dict[str, Any]) -> dict[str, Any]:
    """The whole document tightened, with its `info` filled in."""
    out: dict[str, Any] = tightened(document)
    out["info"] = {
        "title": "LLM Customization Ops API",
        "version": "v1",
        "description": DESCRIPTION,
    }
    return out


def main(paths: list[str]) -> None:
    for path in paths:
        with open(path, encoding="utf-8") as f:
            document = json.load(f)
        with open(path, "w", encoding="utf-8") as f:
            json.dump(tighten_document(document), f, indent=2, ensure_ascii=False)
            f.write("\n")


if __name__ == "__main__":
    main(sys.argv[1:])
