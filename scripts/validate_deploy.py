"""Offline checks of deploy/ that need a schema rather than a tool (scripts/check_deploy.sh runs
them in its tool venv, which has jsonschema and PyYAML):

- `crds RENDERED CORE_OUT`: validates every custom resource of a rendered kustomize build
  (KEDA's ScaledObject and TriggerAuthentication) against the openAPIV3Schema of the CRD
  vendored in deploy/k8s/schemas, strictly (unknown fields are errors, as kubectl's strict
  field validation makes them), and writes the other documents to CORE_OUT for
  kubernetes-validate.
- `compose FILE SCHEMA`: validates a compose file against the compose specification's JSON
  schema and checks that the files it bind-mounts exist.
- `dashboard-rules DASHBOARD OUT`: writes every PromQL query of a Grafana dashboard into OUT as
  a recording rule, for `promtool check rules` to parse them.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import yaml
from jsonschema import Draft7Validator, Draft202012Validator  # type: ignore[import-untyped]

ROOT = Path(__file__).resolve().parents[1]
CRD_DIR = ROOT / "deploy" / "k8s" / "schemas"


def strict(schema: Any) -> Any:
    """The schema with unknown properties refused wherever it lists properties and allows
    nothing else (no additionalProperties, no x-kubernetes-preserve-unknown-fields)."""
    if isinstance(schema, dict):
        out = {key: strict(value) for key, value in schema.items()}
        if (
            "properties" in out
            and "additionalProperties" not in out
            and not out.get("x-kubernetes-preserve-unknown-fields")
        ):
            out["additionalProperties"] = False
        return out
    if isinstance(schema, list):
        return [strict(item) for item in schema]
    return schema


def crd_schemas() -> dict[tuple[str, str], dict[str, Any]]:
    """(apiVersion, kind) → strict schema, from every vendored CRD."""
    schemas: dict[tuple[str, str], dict[str, Any]] = {}
    for path in sorted(CRD_DIR.glob("*.yaml")):
        crd = yaml.safe_load(path.read_text())
        group, kind = crd["spec"]["group"], crd["spec"]["names"]["kind"]
        for version in crd["spec"]["versions"]:
            schema = strict(version["schema"]["openAPIV3Schema"])
            # The API server checks metadata itself; the CRD only says `type: object`.
            schema["properties"]["metadata"] = {"type": "object"}
            schemas[(f"{group}/{version['name']}", kind)] = schema
    return schemas


def check_crds(rendered: Path, core_out: Path) -> list[str]:
    schemas = crd_schemas()
    errors: list[str] = []
    core: list[Any] = []
    custom = 0
    for doc in yaml.safe_load_all(rendered.read_text()):
        if not doc:
            continue
        key = (doc.get("apiVersion", ""), doc.get("kind", ""))
        name = f"{key[1]}/{doc.get('metadata', {}).get('name', '?')}"
        schema = schemas.get(key)
        if schema is not None:
            custom += 1
            for error in Draft7Validator(schema).iter_errors(doc):
                where = "/".join(str(p) for p in error.absolute_path) or "(root)"
                errors.append(f"{rendered}: {name}: {where}: {error.message}")
        else:  # kubernetes-validate refuses any kind it has no schema for
            core.append(doc)
    core_out.write_text(yaml.safe_dump_all(core, sort_keys=False))
    print(f"{rendered.name}: {custom} custom resources checked against vendored CRDs")
    return errors


def check_compose(compose: Path, schema_path: Path) -> list[str]:
    spec = json.loads(schema_path.read_text())
    document = yaml.safe_load(compose.read_text())
    errors = [
        f"{compose}: {'/'.join(str(p) for p in e.absolute_path) or '(root)'}: {e.message}"
        for e in Draft202012Validator(spec).iter_errors(document)
    ]
    for name, service in (document.get("services") or {}).items():
        for volume in service.get("volumes", []):
            source = volume.split(":", 1)[0] if isinstance(volume, str) else volume.get("source")
            local = isinstance(source, str) and source.startswith(".")
            if local and not (compose.parent / str(source)).exists():
                errors.append(f"{compose}: service {name} mounts missing {source}")
    print(f"{compose.name}: {len(document.get('services') or {})} services checked")
    return errors


def dashboard_rules(dashboard: Path, out: Path) -> list[str]:
    panels = json.loads(dashboard.read_text())["panels"]
    rules = [
        {"record": f"dashboard:panel{panel['id']}:{target['refId']}", "expr": target["expr"]}
        for panel in panels
        for target in panel.get("targets", [])
    ]
    out.write_text(yaml.safe_dump({"groups": [{"name": dashboard.stem, "rules": rules}]}))
    print(f"{dashboard.name}: {len(rules)} queries written to {out}")
    return [] if rules else [f"{dashboard}: no queries"]


def main(argv: list[str]) -> int:
    if len(argv) == 3 and argv[0] == "crds":
        errors = check_crds(Path(argv[1]), Path(argv[2]))
    elif len(argv) == 3 and argv[0] == "compose":
        errors = check_compose(Path(argv[1]), Path(argv[2]))
    elif len(argv) == 3 and argv[0] == "dashboard-rules":
        errors = dashboard_rules(Path(argv[1]), Path(argv[2]))
    else:
        print(__doc__, file=sys.stderr)
        return 2
    for error in errors:
        print(f"error: {error}", file=sys.stderr)
    return 1 if errors else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
