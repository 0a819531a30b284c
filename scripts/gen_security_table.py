"""Writes the per-RPC roles table of docs/security.md from `METHOD_ROLES` and the contract.

Each row is one RPC of the `llmops.v1` services: its kind (unary or streaming), its REST route (the
`google.api.http` annotation the gateway serves) and the least role it needs. The table replaces
what lies between the `<!-- roles:begin -->` and `<!-- roles:end -->` comments; the rest of the
file is written by hand.

    python scripts/gen_security_table.py          # rewrites docs/security.md
    python scripts/gen_security_table.py --check  # exits 1 when docs/security.md is stale

tests/unit/test_roles_table.py fails when the file is stale.
"""

from __future__ import annotations

import argparse
import importlib
import pkgutil
import sys
from pathlib import Path

from google.api import annotations_pb2, http_pb2
from google.protobuf.descriptor import MethodDescriptor

import llmops.v1
from llmops_services.runtime.roles import METHOD_ROLES, PACKAGE

ROOT = Path(__file__).resolve().parents[1]
DOC = ROOT / "docs" / "security.md"
BEGIN = "<!-- roles:begin -->"
END = "<!-- roles:end -->"


def contract_methods() -> list[MethodDescriptor]:
    """Every RPC of every service in the `llmops.v1` file descriptors, sorted by full name."""
    methods: dict[str, MethodDescriptor] = {}
    for module_info in pkgutil.iter_modules(llmops.v1.__path__):
        if not module_info.name.endswith("_pb2"):
            continue
        module = importlib.import_module(f"llmops.v1.{module_info.name}")
        for service in module.DESCRIPTOR.services_by_name.values():
            if service.full_name.startswith(f"{PACKAGE}."):
                for method in service.methods:
                    methods[full_name(method)] = method
    return [methods[name] for name in sorted(methods)]


def full_name(method: MethodDescriptor) -> str:
    """The gRPC path of a method, `/llmops.v1.RegistryService/GetModel`."""
    return f"/{method.containing_service.full_name}/{method.name}"


def kind(method: MethodDescriptor) -> str:
    """unary, server stream, client stream or bidi stream."""
    if method.client_streaming and method.server_streaming:
        return "bidi stream"
    if method.client_streaming:
        return "client stream"
    if method.server_streaming:
        return "server stream"
    return "unary"


def rest_routes(method: MethodDescriptor) -> list[str]:
    """The method's REST routes from its `google.api.http` annotation, `GET /v1/models/{model}`."""
    rule: http_pb2.HttpRule = method.GetOptions().Extensions[annotations_pb2.http]
    routes = []
    for binding in [rule, *rule.additional_bindings]:
        pattern = binding.WhichOneof("pattern")
        if pattern is None:
            continue
        if pattern == "custom":
            routes.append(f"{binding.custom.kind} {binding.custom.path}")
        else:
            routes.append(f"{pattern.upper()} {getattr(binding, pattern)}")
    return routes


def table() -> str:
    """The markdown table, one row per RPC."""
    lines = [
        "| RPC | kind | REST route | least role |",
        "|---|---|---|---|",
    ]
    for method in contract_methods():
        name = full_name(method)
        role = METHOD_ROLES.get(name, "**none: add it to roles.py**")
        routes = ", ".join(f"`{route}`" for route in rest_routes(method)) or "(gRPC only)"
        service = method.containing_service.name
        lines.append(f"| `{service}.{method.name}` | {kind(method)} | {routes} | {role} |")
    return "\n".join(lines) + "\n"


def render(text: str) -> str:
    """`text` with the part between the markers replaced by the current table."""
    head, begin, rest = text.partition(BEGIN)
    _, end, tail = rest.partition(END)
    if not begin or not end:
        raise ValueError(f"{DOC.relative_to(ROOT)} lacks the {BEGIN} ... {END} markers")
    return f"{head}{BEGIN}\n{table()}{END}{tail}"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--check", action="store_true", help="exit 1 when the file is stale")
    args = parser.parse_args(argv)
    current = DOC.read_text()
    fresh = render(current)
    if args.check:
        if fresh != current:
            print(f"{DOC.relative_to(ROOT)} is stale: run scripts/gen_security_table.py")
            return 1
        return 0
    if fresh != current:
        DOC.write_text(fresh)
    return 0


if __name__ == "__main__":
    sys.exit(main())
