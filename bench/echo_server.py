"""The ceiling: a bare grpc.aio server answering RegistryService/GetPromptTemplate with a constant.

No interceptors, no database, no logging: what Python gRPC alone costs per call on this machine.
The response has the same fields (and the same serialized size) as the platform's answer for the
bundled `summarization` template, so both servers put the same bytes on the wire.

Usage: python bench/echo_server.py [PORT]   (0, the default, picks a free port)
Prints `echo     127.0.0.1:PORT` once it listens; stops on SIGTERM or SIGINT.
"""

from __future__ import annotations

import asyncio
import signal
import sys

import grpc
from google.protobuf import timestamp_pb2

from llmops.v1 import registry_service_pb2, registry_service_pb2_grpc

HOST = "127.0.0.1"

# The bundled template (config/prompt_templates.json), as the platform returns it; the seeding
# time is stored with microseconds, so the timestamp carries seconds and nanos like a real one.
RESPONSE = registry_service_pb2.PromptTemplate(
    template_id="summarization",
    version=1,
    template="Summarize in one sentence.\nText: {text}\nSummary:",
    description="Summarize a short report in one sentence.",
    task="summarization",
    create_time=timestamp_pb2.Timestamp(seconds=1_767_225_600, nanos=123_456_000),
)


class EchoRegistry(registry_service_pb2_grpc.RegistryServiceServicer):
    """Only GetPromptTemplate; every other method is the generated UNIMPLEMENTED."""

    async def GetPromptTemplate(
        self,
        request: registry_service_pb2.GetPromptTemplateRequest,
        context: grpc.aio.ServicerContext[
            registry_service_pb2.GetPromptTemplateRequest, registry_service_pb2.PromptTemplate
        ],
    ) -> registry_service_pb2.PromptTemplate:
        return RESPONSE


async def serve(port: int) -> None:
    """Serves until SIGTERM or SIGINT, printing the bound address first."""
    server = grpc.aio.server(options=[("grpc.so_reuseport", 0)])
    registry_service_pb2_grpc.add_RegistryServiceServicer_to_server(
        EchoRegistry(),  # type: ignore[abstract]  # the stubs mark every method abstract
        server,
    )
    bound = server.add_insecure_port(f"{HOST}:{port}")
    if bound == 0:
        raise OSError(f"could not bind {HOST}:{port}")
    await server.start()
    print(f"echo     {HOST}:{bound}", flush=True)
    stopping = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stopping.set)
    await stopping.wait()
    await server.stop(1.0)


def main(argv: list[str]) -> int:
    port = int(argv[1]) if len(argv) > 1 else 0
    asyncio.run(serve(port))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
