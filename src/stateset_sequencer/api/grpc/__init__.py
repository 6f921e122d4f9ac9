"""The gRPC API beside the HTTP one, both fed by ``runtime.start_services``: the
reference's ``stateset.sequencer.v2.Sequencer``, ``stateset.sequencer.v2.KeyManagement``
and the deprecated ``stateset.sequencer.v1.Sequencer``, on ``grpc.aio`` (docs/GRPC.md).

``server.GrpcServer`` builds and runs it; ``calls`` is what every call goes through
(request id, credential, log line, metrics, faults to statuses); ``convert`` maps
messages to domain values; ``errors`` holds the one table of reasons to status codes.
"""

from __future__ import annotations

from .server import GrpcServer

__all__ = ["GrpcServer"]
