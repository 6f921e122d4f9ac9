"""Request dependencies: the services, the caller's credential, and the admin allowlist."""

from __future__ import annotations

import ipaddress
import uuid
from collections.abc import Callable, Mapping
from typing import Annotated

from fastapi import Depends, Request

from ...runtime import IpNetwork, Services
from ...sequencer.auth import (
    DISABLED_CONTEXT,
    AuthContext,
    AuthError,
    AuthReason,
    RateLimiterUnavailable,
)
from ...store.errors import StoreError
from .errors import AuthFailure, auth_backend_failure, auth_failure, rate_limit_unavailable


def get_services(request: Request) -> Services:
    services: Services = request.app.state.services
    return services


ServicesDep = Annotated[Services, Depends(get_services)]


# How many forwarded hops are read, from the right: a real chain of proxies is a few hops
# long, and a client may send any number of its own.
MAX_FORWARDED_HOPS = 32
_MAX_HOP_CHARS = 64  # the longest address text (IPv6 with brackets and a port is 47)
CLIENT_IP_STATE = "client_ip"
IpAddress = ipaddress.IPv4Address | ipaddress.IPv6Address


def client_ip(request: Request, services: Services) -> str:
    """The client's address, the one answer the rate limits, the refusal audit and the
    admin allowlist all use (docs/EDGE.md): the socket peer, or, when
    ``TRUST_PROXY_HEADERS`` is on and the peer is a trusted proxy, the address its
    forwarded headers give (:func:`forwarded_client`). Worked out once per request."""
    cached = getattr(request.state, CLIENT_IP_STATE, None)
    if isinstance(cached, str):
        return cached
    peer_text = request.client.host if request.client else ""
    peer = parse_hop(peer_text)
    if peer is None:
        answer = peer_text  # not an IP socket (a test transport, a Unix socket)
    elif services.settings.trust_proxy_headers and _in_networks(peer, services.trusted_proxies):
        answer = str(forwarded_client(peer, forwarded_hops(request), services.trusted_proxies))
    else:
        answer = str(peer)
    setattr(request.state, CLIENT_IP_STATE, answer)
    return answer


def forwarded_hops(request: Request) -> list[str]:
    """The addresses a proxy chain reports, left to right, from the first of
    ``X-Forwarded-For``, ``X-Real-IP`` and ``Forwarded`` that is present; at most the
    last :data:`MAX_FORWARDED_HOPS`. Repeated header lines read as one list, in order."""
    xff = ",".join(request.headers.getlist("x-forwarded-for"))
    if xff.strip():
        return _last_hops(xff)
    real = request.headers.get("x-real-ip", "")
    if real.strip():
        return [real]
    forwarded = ",".join(request.headers.getlist("forwarded"))
    if forwarded.strip():
        return [_forwarded_for(element) for element in _last_hops(forwarded)]
    return []


def _last_hops(text: str) -> list[str]:
    parts = text.rsplit(",", MAX_FORWARDED_HOPS)
    return parts[-MAX_FORWARDED_HOPS:]


def _forwarded_for(element: str) -> str:
    """The ``for=`` of one RFC 7239 element ("" when it has none)."""
    for pair in element.split(";"):
        name, _, value = pair.strip().partition("=")
        if name.strip().lower() == "for":
            return value.strip().strip('"')
    return ""


def forwarded_client(peer: IpAddress, hops: list[str], trusted: list[IpNetwork]) -> IpAddress:
    """Read from the right, each trusted hop vouches for the one on its left: the first
    untrusted address is the client; when every hop is trusted, the leftmost. Entries
    left of an untrusted one are the client's own words and never read. A hop that is not
    an address (garbage, ``unknown``, an obfuscated name) ends the walk: the client is the
    nearest address on its right."""
    current = peer
    for raw in reversed(hops):
        hop = parse_hop(raw)
        if hop is None:
            return current
        if not _in_networks(hop, trusted):
            return hop
        current = hop
    return current


def parse_hop(text: str) -> IpAddress | None:
    """An address as proxies write it: bare, ``[v6]``, ``[v6]:port`` or ``v4:port``;
    an IPv4-mapped IPv6 address reads as its IPv4 address."""
    item = text.strip()
    if not item or len(item) > _MAX_HOP_CHARS:
        return None
    if item.startswith("["):
        host, sep, rest = item[1:].partition("]")
        if not sep or (rest and not (rest.startswith(":") and rest[1:].isdigit())):
            return None
        item = host
    elif item.count(":") == 1:
        host, _, port = item.partition(":")
        if not port.isdigit():
            return None
        item = host
    try:
        address = ipaddress.ip_address(item)
    except ValueError:
        return None
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return address.ipv4_mapped
    return address


def _in_networks(address: IpAddress, networks: list[IpNetwork]) -> bool:
    return any(address in net for net in networks)


def _in(address: str, networks: list[IpNetwork]) -> bool:
    ip = parse_hop(address)
    return ip is not None and _in_networks(ip, networks)


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


class AuthUnavailable(Exception):
    """Neither a yes nor a no: the store behind the credentials (``limiter`` False) or the
    shared rate limiter (True) cannot answer now."""

    def __init__(self, *, limiter: bool) -> None:
        super().__init__("rate limiter" if limiter else "authentication backend")
        self.limiter = limiter


async def admit(
    services: Services,
    headers: Mapping[str, str],
    source: str,
    refused: Callable[[AuthError, bool], None],
) -> AuthContext:
    """The one admission of a caller, whatever the API (HTTP here, gRPC in
    ``api/grpc/auth.py``): the per-source throttle of refused credentials, the credential,
    then its rate limits. ``refused(error, throttled)`` is told each refusal to count and
    audit; a credential over its budget is counted only (a throttled client would
    otherwise fill the audit log). Raises :class:`AuthError` or :class:`AuthUnavailable`."""
    wait = services.auth_failures.retry_after(source)
    if wait is not None:
        throttled = AuthError(
            AuthReason.RATE_LIMITED, "Too many failed authentication attempts", wait
        )
        refused(throttled, True)
        raise throttled
    try:
        ctx = await services.authenticator.authenticate(headers)
    except AuthError as exc:
        refused(exc, False)
        raise
    except StoreError:
        raise AuthUnavailable(limiter=False) from None
    try:
        await services.rate_limits.check(ctx)
    except AuthError as exc:
        services.metrics.auth_failures.labels(exc.reason).inc()
        raise
    except RateLimiterUnavailable:
        raise AuthUnavailable(limiter=True) from None
    return ctx


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

        def refused(exc: AuthError, throttled: bool) -> None:
            _count_failure(request, services, source, exc, throttled=throttled)

        try:
            ctx = await admit(services, request.headers, source, refused)
        except AuthError as exc:
            raise auth_failure(exc) from None
        except AuthUnavailable as exc:
            raise (rate_limit_unavailable() if exc.limiter else auth_backend_failure()) from None
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
