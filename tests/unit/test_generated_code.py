"""Generated code and migrations must match their sources: stale stubs or a table change without a
migration fail here, before they can land."""

from __future__ import annotations

import filecmp
import os
import shutil
import subprocess
import sys
from pathlib import Path

from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext

from llmops_services.db.database import Database
from llmops_services.db.tables import Base

ROOT = Path(__file__).resolve().parents[2]
GENERATED = ROOT / "clients" / "python" / "llmops" / "v1"
# The gateway's generated Go code and OpenAPI documents (scripts/gen_gateway.sh), each folder with
# the names of its generated files.
GATEWAY_GENERATED = {
    "services/gateway/gen/llmops/v1": "*.go",
    "docs/openapi": "*.json",
    "services/gateway/openapi": "*.json",
}
GO_PLUGINS = (
    "protoc-gen-go",
    "protoc-gen-go-grpc",
    "protoc-gen-grpc-gateway",
    "protoc-gen-openapiv2",
)


def test_python_stubs_are_fresh(tmp_path: Path) -> None:
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}"}
    subprocess.run([str(ROOT / "scripts" / "gen_protos.sh"), str(tmp_path)], check=True, env=env)
    fresh = tmp_path / "llmops" / "v1"
    names = sorted(p.name for p in fresh.iterdir())
    assert names == sorted(p.name for p in GENERATED.iterdir() if p.name != "__pycache__")
    comparison = filecmp.cmpfiles(fresh, GENERATED, names, shallow=False)
    assert comparison[1] == [], f"stale generated files, run `make protos`: {comparison[1]}"


def test_gateway_code_and_openapi_are_fresh(tmp_path: Path) -> None:
    """Fails (does not skip) without the Go plugins: CI installs them with `make gateway-tools`."""
    missing = [
        tool
        for tool in GO_PLUGINS
        if not (ROOT / ".bin" / tool).exists() and shutil.which(tool) is None
    ]
    assert not missing, f"missing {', '.join(missing)}: run `make gateway-tools`"
    done = subprocess.run(
        [str(ROOT / "scripts" / "gen_gateway.sh"), str(tmp_path)], capture_output=True, text=True
    )
    assert done.returncode == 0, done.stderr
    for folder, pattern in GATEWAY_GENERATED.items():
        fresh = sorted(p.name for p in (tmp_path / folder).glob(pattern))
        assert fresh == sorted(p.name for p in (ROOT / folder).glob(pattern)), folder
        comparison = filecmp.cmpfiles(tmp_path / folder, ROOT / folder, fresh, shallow=False)
        assert comparison[1] == [], f"stale files in {folder}, run `make gateway-gen`"


def test_migrations_match_the_tables(tmp_path: Path) -> None:
    db = Database(f"sqlite:///{tmp_path / 'schema.db'}")
    db.migrate()
    with db.engine.connect() as connection:
        differences = compare_metadata(MigrationContext.configure(connection), Base.metadata)
    db.close()
    assert differences == [], f"tables differ from the migrations: {differences}"
