"""Request dependencies: the services, the caller's credential, and the admin allowlist."""

from __future__ import annotations

import ipaddress
import uuid
from typing import Annotated

from fastapi import Depends, Request

from ...runtime import IpNetwork, Services
from ...sequencer.auth import DISABLED_CONTEXT, AuthContext, AuthError, AuthReason
from ...store.errors import StoreError
from .errors import AuthFailure, auth_backend_failure, auth_failure


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


def check_admin_ip(request: Request, services: Services) -> None:
    """``ADMIN_IP_ALLOWLIST``: checked before authentication, as in the reference."""
    allow = services.admin_allowlist
    if allow is not None and not _in(client_ip(request, services), allow):
        raise AuthFailure(403, "ADMIN_IP_DENIED", "admin access denied")


async def admin_ip_guard(request: Request, services: ServicesDep) -> None:
    """The allowlist as a route dependency: the edge (``middleware.py``) has already
    applied it to every route that declares this; kept so that the declaration is what
    says which routes the allowlist covers."""
    check_admin_ip(request, services)


AUTH_STATE = "auth_context"


async def authenticate_request(request: Request, services: Services) -> AuthContext:
    """Resolve the request's credential from its headers alone: the edge calls this
    before any byte of the body is read, and hands the context on in the request state.

    A source with too many refusals this minute is answered 429 before its credential
    reaches the store; every refusal is counted in ``services.auth_failures`` (one audit
    row per source, reason and minute)."""
    if services.auth_disabled:
        ctx = DISABLED_CONTEXT
    else:
        source = client_ip(request, services)
        wait = services.auth_failures.retry_after(source)
        if wait is not None:
            throttled = AuthError(
                AuthReason.RATE_LIMITED, "Too many failed authentication attempts", wait
            )
            _count_failure(request, services, source, throttled, throttled=True)
            raise auth_failure(throttled)
        try:
            ctx = await services.authenticator.authenticate(request.headers)
        except AuthError as exc:
            _count_failure(request, services, source, exc)
            raise auth_failure(exc) from None
        except StoreError:
            raise auth_backend_failure() from None
        try:
            services.rate_limits.check(ctx)
        except AuthError as exc:
            # A valid credential over its budget: counted, not audited (a throttled
            # client would otherwise fill the audit log).
            services.metrics.auth_failures.labels(exc.reason).inc()
            raise auth_failure(exc) from None
        request.state.tenant_id = str(ctx.tenant_id)
        request.state.subject = ctx.subject
    setattr(request.state, AUTH_STATE, ctx)
    return ctx


def _count_failure(
    request: Request,
    services: Services,
    source: str,
    exc: AuthError,
    *,
    throttled: bool = False,
) -> None:
    services.metrics.auth_failures.labels(exc.reason).inc()
    services.auth_failures.record(
        source,
        str(exc.reason),
        exc.message,
        path=request.url.path,
        request_id=getattr(request.state, "request_id", None),
        user_agent=request.headers.get("user-agent"),
        throttled=throttled,
    )


async def authenticate(request: Request, services: ServicesDep) -> AuthContext:
    """The caller's context, as the edge resolved it before the body was read."""
    ctx = getattr(request.state, AUTH_STATE, None)
    if isinstance(ctx, AuthContext):
        return ctx
    # Only an app driven without the edge layer gets here; the answer is the same.
    return await authenticate_request(request, services)


Auth = Annotated[AuthContext, Depends(authenticate)]


def bind_stream(request: Request, tenant_id: uuid.UUID, store_id: uuid.UUID | None) -> None:
    """Name the stream in this request's access log line."""
    request.state.tenant_id = str(tenant_id)
    if store_id is not None:
        request.state.store_id = str(store_id)


def actor(ctx: AuthContext) -> tuple[str, str]:
    """``(actor, actor_type)`` for audit rows."""
    return ctx.subject or str(ctx.tenant_id), ctx.kind
