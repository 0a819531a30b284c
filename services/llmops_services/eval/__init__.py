"""The Eval service: eval runs as worker jobs, their metrics, reports and gates."""
