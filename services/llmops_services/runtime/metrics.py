"""Prometheus metrics of the gRPC server, named as Go's grpc-prometheus names them."""

from __future__ import annotations

from prometheus_client import Counter, Histogram, start_http_server

STARTED = Counter(
    "grpc_server_started",
    "RPCs started on the server.",
    ["grpc_type", "grpc_service", "grpc_method"],
)
HANDLED = Counter(
    "grpc_server_handled",
    "RPCs completed on the server, whatever their status.",
    ["grpc_type", "grpc_service", "grpc_method", "grpc_code"],
)
HANDLING_SECONDS = Histogram(
    "grpc_server_handling_seconds",
    "Time from the start of an RPC to its status, as seen by the server.",
    ["grpc_type", "grpc_service", "grpc_method"],
)
MSG_RECEIVED = Counter(
    "grpc_server_msg_received",
    "Stream messages received on the server.",
    ["grpc_type", "grpc_service", "grpc_method"],
)
MSG_SENT = Counter(
    "grpc_server_msg_sent",
    "Stream messages sent by the server.",
    ["grpc_type", "grpc_service", "grpc_method"],
)


def start_metrics_server(port: int, host: str = "127.0.0.1") -> int:
    """Serves `/metrics` on a thread; returns the bound port (0 picks a free one)."""
    server, _thread = start_http_server(port, addr=host)
    return int(server.server_port)
