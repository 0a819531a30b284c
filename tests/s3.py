"""A private S3 for tests: moto's server on a free port of this process, a bucket per use."""

from __future__ import annotations

import logging
import os
import uuid
from typing import Any

import s3fs
from moto.server import ThreadedMotoServer

# moto accepts any credentials; botocore needs some. Set in this process's environment so the
# services, workers and `llmops` processes the tests start find them where production does.
TEST_CREDENTIALS = {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing"}


class PrivateS3:
    """moto's S3 on 127.0.0.1 and a free port, in a thread of this process."""

    def __init__(self) -> None:
        self._server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
        self.endpoint_url = ""

    def start(self) -> PrivateS3:
        logging.getLogger("werkzeug").setLevel(logging.ERROR)  # a line per request otherwise
        for name, value in TEST_CREDENTIALS.items():
            os.environ.setdefault(name, value)
        self._server.start()
        host, port = self._server.get_host_and_port()
        self.endpoint_url = f"http://{host}:{port}"
        return self

    def stop(self) -> None:
        self._server.stop()

    def filesystem(self) -> Any:
        """An s3fs client of this server (no listing cache: other processes write to it)."""
        return s3fs.S3FileSystem(
            endpoint_url=self.endpoint_url, use_listings_cache=False, skip_instance_cache=True
        )

    def new_bucket(self) -> str:
        """Creates an empty bucket with a fresh name and returns the name."""
        name = f"llmops-test-{uuid.uuid4().hex[:16]}"
        self.filesystem().mkdir(name)
        return name
