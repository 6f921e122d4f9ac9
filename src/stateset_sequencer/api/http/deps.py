"""Request dependencies: the services, the caller's credential, and the admin allowlist."""

from __future__ import annotations

import contextlib
import ipaddress
import uuid
from typing import Annotated

from fastapi import Depends, Request

from ...runtime import IpNetwork, Services
from ...sequencer.auth import DISABLED_CONTEXT, AuthContext, AuthError, AuthReason
from ...store.errors import StoreError
from ...store.records import AuditEntry
from ...ves.storable import make_storable
from .errors import AuthFailure, auth_backend_failure, auth_failure

AUDIT_TEXT_BYTES = 200


def get_services(request: Request) -> Services:
    services: Services = request.app.state.services
    return services


ServicesDep = Annotated[Services, Depends(get_services)]


def client_ip(request: Request, services: Services) -> str:
    """The socket peer, or the first forwarded address when the peer is a trusted proxy
    and ``TRUST_PROXY_HEADERS`` is on."""
    peer = request.client.host if request.client else ""
    if not services.settings.trust_proxy_headers or not _in(peer, services.trusted_proxies):
        return peer
    forwarded = request.headers.get("x-forwarded-for")
    if forwarded:
        return forwarded.split(",")[0].strip()
    real = request.headers.get("x-real-ip")
    if real:
        return real.strip()
    header = request.headers.get("forwarded", "")
    for part in header.split(";"):
        name, _, value = part.strip().partition("=")
        if name.lower() == "for" and value:
            return value.strip('"[]').split(",")[0]
    return peer


def _in(address: str, networks: list[IpNetwork]) -> bool:
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return False
    return any(ip in net for net in networks)


async def admin_ip_guard(request: Request, services: ServicesDep) -> None:
    """``ADMIN_IP_ALLOWLIST``: checked before authentication, as in the reference."""
    allow = services.admin_allowlist
    if allow is not None and not _in(client_ip(request, services), allow):
        raise AuthFailure(403, "ADMIN_IP_DENIED", "admin access denied")


async def authenticate(request: Request, services: ServicesDep) -> AuthContext:
    if services.auth_disabled:
        return DISABLED_CONTEXT
    try:
        ctx = await services.authenticator.authenticate(request.headers)
        services.rate_limits.check(ctx)
    except AuthError as exc:
        services.metrics.auth_failures.labels(exc.reason).inc()
        await _audit_failure(request, services, exc)
        raise auth_failure(exc) from None
    except StoreError:
        raise auth_backend_failure() from None
    request.state.tenant_id = str(ctx.tenant_id)
    request.state.subject = ctx.subject
    return ctx


async def _audit_failure(request: Request, services: Services, exc: AuthError) -> None:
    if exc.reason is AuthReason.RATE_LIMITED:
        return  # a flood of throttled requests would otherwise flood the audit log
    # Refusing the credential matters more than recording the refusal.
    with contextlib.suppress(StoreError):
        await services.store.append_audit(
            AuditEntry(
                action="auth.failure",
                actor=client_ip(request, services) or "unknown",
                actor_type="anonymous",
                success=False,
                resource_type="route",
                # A path may hold NUL (``%00``), which PostgreSQL text cannot: the row
                # would be lost there and kept on SQLite. The stored copy is made storable.
                resource_id=make_storable(request.url.path, max_bytes=AUDIT_TEXT_BYTES),
                request_id=getattr(request.state, "request_id", None),
                ip_address=client_ip(request, services) or None,
                user_agent=make_storable(
                    request.headers.get("user-agent") or "", max_bytes=AUDIT_TEXT_BYTES
                )
                or None,
                details={"code": str(exc.reason)},
                error_message=exc.message,
            )
        )


Auth = Annotated[AuthContext, Depends(authenticate)]


def bind_stream(request: Request, tenant_id: uuid.UUID, store_id: uuid.UUID | None) -> None:
    """Name the stream in this request's access log line."""
    request.state.tenant_id = str(tenant_id)
    if store_id is not None:
        request.state.store_id = str(store_id)


def actor(ctx: AuthContext) -> tuple[str, str]:
    """``(actor, actor_type)`` for audit rows."""
    return ctx.subject or str(ctx.tenant_id), ctx.kind
