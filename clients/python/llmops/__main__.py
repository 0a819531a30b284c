"""`python -m llmops` runs the CLI."""

from llmops.cli.main import app

app(prog_name="llmops")
