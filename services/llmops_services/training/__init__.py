"""Training jobs: request checks, hyperparameter rules, the job store and the service."""
