"""The caller's credential from a call's metadata, with the HTTP edge's rules
(``api/http/deps.authenticate_request``): the same authenticator, the same per-source
throttle and audit of refused credentials, the same rate limits (so a tenant's budget is
one budget over HTTP and gRPC together), in the reference's metadata names:
``authorization`` (``Bearer <jwt>``, ``ApiKey <key>`` or a bare ``ss_...`` key) or
``x-api-key``. No credential is UNAUTHENTICATED; with ``AUTH_MODE=disabled`` every call
runs as the global admin, as in the reference.
"""

from __future__ import annotations

import grpc

from ...runtime import Services
from ...sequencer.auth import DISABLED_CONTEXT, AuthContext, AuthError
from ..http.deps import AuthUnavailable, admit
from .errors import RETRY_AFTER_METADATA, GrpcError, refusal

CREDENTIAL_METADATA = ("authorization", "x-api-key")


def peer_address(peer: str) -> str:
    """The client's address from grpc's peer text (``ipv4:127.0.0.1:5000``,
    ``ipv6:[::1]:5000``, ``unix:/path``): the key of the per-source throttle, as the
    socket peer is over HTTP."""
    kind, _, rest = peer.partition(":")
    if kind == "ipv6" and rest.startswith("["):
        return rest[1:].partition("]")[0]
    if kind == "ipv4":
        return rest.rpartition(":")[0] or rest
    return peer


def metadata_text(context: grpc.aio.ServicerContext[object, object]) -> dict[str, str]:
    """The call's text metadata, keys lowercase (grpc's own), the first of repeats."""
    found: dict[str, str] = {}
    for key, value in context.invocation_metadata() or ():
        if isinstance(value, str) and key not in found:
            found[key.lower()] = value
    return found


async def authenticate(
    services: Services,
    metadata: dict[str, str],
    *,
    source: str,
    method: str,
    request_id: str,
) -> AuthContext:
    """The caller's context; :class:`GrpcError` on a refusal (counted and audited as the
    HTTP edge counts it: one audit row per source, reason and minute)."""
    if services.auth_disabled:
        return DISABLED_CONTEXT
    headers = {name: metadata[name] for name in CREDENTIAL_METADATA if name in metadata}

    def refused(exc: AuthError, throttled: bool) -> None:
        _count(services, source, exc, method, request_id, metadata, throttled=throttled)

    try:
        return await admit(services, headers, source, refused)
    except AuthError as exc:
        raise refusal(exc) from None
    except AuthUnavailable as exc:
        raise GrpcError(
            grpc.StatusCode.UNAVAILABLE,
            "Rate limiter unavailable; retry shortly"
            if exc.limiter
            else "Authentication backend unavailable",
            ((RETRY_AFTER_METADATA, "1"),),
        ) from None


def _count(
    services: Services,
    source: str,
    exc: AuthError,
    method: str,
    request_id: str,
    metadata: dict[str, str],
    *,
    throttled: bool = False,
) -> None:
    services.metrics.auth_failures.labels(exc.reason).inc()
    services.auth_failures.record(
        source,
        str(exc.reason),
        exc.message,
        path=method,
        request_id=request_id,
        user_agent=metadata.get("user-agent"),
        throttled=throttled,
    )
