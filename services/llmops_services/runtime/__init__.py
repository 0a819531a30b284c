"""What every service process shares: the server, its interceptors, logs, metrics and traces."""
