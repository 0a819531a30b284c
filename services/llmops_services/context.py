"""The shared resources of a server process: settings, the database and the artifact store."""

from __future__ import annotations

import logging
from dataclasses import dataclass

from llmops_services.artifacts import ArtifactStore
from llmops_services.db.database import Database
from llmops_services.settings import Settings
from llmops_services.webhooks import outbox

log = logging.getLogger("llmops.platform")


@dataclass
class Platform:
    """What every service of one process shares."""

    settings: Settings
    db: Database
    store: ArtifactStore

    @classmethod
    def open(cls, settings: Settings) -> Platform:
        """Creates the data dir, migrates the database, records webhook deliveries of the jobs
        this process ends (when webhooks are configured) and opens the store."""
        settings.data_dir.mkdir(parents=True, exist_ok=True)
        db = Database(settings.resolved_database_url)
        db.migrate()
        if settings.webhook_urls:
            outbox.install(db, settings.webhook_urls)
        return cls(settings=settings, db=db, store=open_store(settings))

    def close(self) -> None:
        """Releases database connections."""
        self.db.close()


def open_store(settings: Settings) -> ArtifactStore:
    """The artifact store the settings name, with its cache and endpoint."""
    return ArtifactStore(
        settings.resolved_artifacts_url,
        cache_dir=settings.resolved_artifact_cache_dir,
        endpoint_url=settings.s3_endpoint_url,
    )
