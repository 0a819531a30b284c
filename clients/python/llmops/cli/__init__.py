"""The `llmops` command line, on the SDK: `llmops.cli.main:app`."""
