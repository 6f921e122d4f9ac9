"""The gRPC server: our three services, the standard health service (SERVING for "" and
each of ours) and server reflection, on a ``grpc.aio`` server bound to
``HOST:GRPC_PORT`` (docs/GRPC.md).

Messages either way are at most ``GRPC_MAX_MESSAGE_BYTES`` (a bigger one is refused
RESOURCE_EXHAUSTED by grpc before it is parsed). A lone server binds its port
exclusively (``SO_REUSEPORT`` off): a second server on a port in use fails to start,
rather than sharing its connections with another process. The workers of one supervisor
(``serve --workers N``) share it (``reuse_port``), once the supervisor has checked that no
one else holds it. Every request deserializer is wrapped,
so that bytes that are not the message reach the handler as ``calls.Malformed`` and are
refused in our words.

Stopping ends the open streams first (each tells its client where to resume), then
gives unary calls in flight ``grace`` seconds.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import grpc
import structlog
from grpc_health.v1 import health as grpc_health  # type: ignore[import-untyped]
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection  # type: ignore[import-untyped]

from ...proto import sequencer_pb2_grpc as v1_grpc
from ...proto import sequencer_v2_pb2_grpc as pb_grpc
from ...runtime import Services, StartupError
from . import keys, v1, v2
from .calls import Gate, Malformed

log = structlog.get_logger("stateset_sequencer.grpc")

SERVICE_NAMES = (v2.SERVICE, keys.SERVICE, v1.SERVICE)
DEFAULT_GRACE_S = 5.0


class _Captured:
    """Stands in for a server to the generated ``add_*_to_server``, keeping its method
    table (names, serializers, our handlers) to register again with wrapped parsers."""

    def __init__(self) -> None:
        self.service = ""
        self.handlers: dict[str, grpc.RpcMethodHandler[Any, Any]] = {}

    def add_generic_rpc_handlers(self, handlers: object) -> None:
        pass

    def add_registered_method_handlers(
        self, service: str, handlers: Mapping[str, grpc.RpcMethodHandler[Any, Any]]
    ) -> None:
        self.service = service
        self.handlers = dict(handlers)


def _tolerant(parse: Callable[[bytes], Any] | None) -> Callable[[bytes], Any]:
    assert parse is not None  # every generated handler has a deserializer
    owner = getattr(parse, "__self__", None)
    name = owner.DESCRIPTOR.full_name if owner is not None else "request"

    def deserialize(data: bytes) -> Any:
        try:
            return parse(data)
        except Exception:
            return Malformed(name)

    return deserialize


def _given(behaviour: Callable[..., Any] | None) -> Callable[..., Any]:
    assert behaviour is not None  # the one of its kind a generated handler sets
    return behaviour


def _rewrap(handler: grpc.RpcMethodHandler[Any, Any]) -> grpc.RpcMethodHandler[Any, Any]:
    parse = _tolerant(handler.request_deserializer)
    out = handler.response_serializer
    if handler.request_streaming and handler.response_streaming:
        return grpc.stream_stream_rpc_method_handler(_given(handler.stream_stream), parse, out)
    if handler.response_streaming:
        return grpc.unary_stream_rpc_method_handler(_given(handler.unary_stream), parse, out)
    if handler.request_streaming:
        return grpc.stream_unary_rpc_method_handler(_given(handler.stream_unary), parse, out)
    return grpc.unary_unary_rpc_method_handler(_given(handler.unary_unary), parse, out)


def _register(server: grpc.aio.Server, add: Callable[[Any, Any], None], servicer: object) -> None:
    captured = _Captured()
    add(servicer, captured)
    handlers = {name: _rewrap(h) for name, h in captured.handlers.items()}
    server.add_generic_rpc_handlers(
        (grpc.method_handlers_generic_handler(captured.service, handlers),)
    )
    server.add_registered_method_handlers(captured.service, handlers)


def listen_address(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host and not host.startswith("[") else f"{host}:{port}"


class GrpcServer:
    """Our gRPC API over started services; :meth:`start` binds and serves."""

    def __init__(self, services: Services, *, reuse_port: bool = False) -> None:
        self.services = services
        self.gate = Gate(services)
        self.port: int | None = None
        limit = services.settings.GRPC_MAX_MESSAGE_BYTES
        self._server = grpc.aio.server(
            options=[
                ("grpc.max_send_message_length", limit),
                ("grpc.max_receive_message_length", limit),
                ("grpc.so_reuseport", 1 if reuse_port else 0),
            ]
        )
        self._health = grpc_health.aio.HealthServicer()
        _register(self._server, pb_grpc.add_SequencerServicer_to_server, v2.SequencerV2(self.gate))
        _register(
            self._server, pb_grpc.add_KeyManagementServicer_to_server, keys.KeyManagement(self.gate)
        )
        _register(self._server, v1_grpc.add_SequencerServicer_to_server, v1.SequencerV1(self.gate))
        health_pb2_grpc.add_HealthServicer_to_server(self._health, self._server)
        reflection.enable_server_reflection(
            (*SERVICE_NAMES, grpc_health.SERVICE_NAME, reflection.SERVICE_NAME), self._server
        )

    async def start(self, host: str | None = None, port: int | None = None) -> int:
        """Bind ``host:port`` (the settings' by default; port 0: any free one) and serve;
        the port bound. A port that cannot be bound is a :class:`StartupError`."""
        settings = self.services.settings
        address = listen_address(
            settings.HOST if host is None else host, settings.grpc_port if port is None else port
        )
        try:
            bound = self._server.add_insecure_port(address)
        except RuntimeError:
            bound = 0
        if not bound:
            raise StartupError(
                f"gRPC cannot listen on {address} (in use, or not an address of this host): "
                "set GRPC_PORT to a free port, or GRPC_DISABLED=true"
            )
        for name in ("", *SERVICE_NAMES):
            await self._health.set(name, health_pb2.HealthCheckResponse.SERVING)
        await self._server.start()
        self.port = bound
        return bound

    async def stop(self, grace: float = DEFAULT_GRACE_S) -> None:
        await self._health.enter_graceful_shutdown()
        self.gate.close()
        await self._server.stop(grace)
