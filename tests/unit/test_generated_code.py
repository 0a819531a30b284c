"""Generated code and migrations must match their sources: stale stubs or a table change without a
migration fail here, before they can land."""

from __future__ import annotations

import filecmp
import os
import subprocess
import sys
from pathlib import Path

from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext

from llmops_services.db.database import Database
from llmops_services.db.tables import Base

ROOT = Path(__file__).resolve().parents[2]
GENERATED = ROOT / "clients" / "python" / "llmops" / "v1"


def test_python_stubs_are_fresh(tmp_path: Path) -> None:
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}"}
    subprocess.run([str(ROOT / "scripts" / "gen_protos.sh"), str(tmp_path)], check=True, env=env)
    fresh = tmp_path / "llmops" / "v1"
    names = sorted(p.name for p in fresh.iterdir())
    assert names == sorted(p.name for p in GENERATED.iterdir() if p.name != "__pycache__")
    comparison = filecmp.cmpfiles(fresh, GENERATED, names, shallow=False)
    assert comparison[1] == [], f"stale generated files, run `make protos`: {comparison[1]}"


def test_migrations_match_the_tables(tmp_path: Path) -> None:
    db = Database(f"sqlite:///{tmp_path / 'schema.db'}")
    db.migrate()
    with db.engine.connect() as connection:
        differences = compare_metadata(MigrationContext.configure(connection), Base.metadata)
    db.close()
    assert differences == [], f"tables differ from the migrations: {differences}"
