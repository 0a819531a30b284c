"""Jobs: what training jobs, eval runs and every later kind of job share.

The database is the truth about a job (its row, its events, its checkpoints); Redis only carries
an attempt's id to a worker. A kind is declared once in `kinds`; its worker side (the runner)
lives in `llmops_workers`.
"""
