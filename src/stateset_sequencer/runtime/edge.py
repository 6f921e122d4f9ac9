"""Start-up checks of the edge settings that are not IP lists: the CORS origins.

Each refusal is a ``ValueError`` whose message names the setting and the fix; the
composition root (``service.py``) turns it into a :class:`StartupError`.
"""

from __future__ import annotations

import ipaddress
import re

CORS_SETTING = "CORS_ALLOW_ORIGINS"
_SCHEMES = {"http": 80, "https": 443}
_LABEL = re.compile(r"^(?!-)[a-z0-9-]{1,63}(?<!-)$")
_ORIGIN = re.compile(
    r"^(?P<scheme>[A-Za-z][A-Za-z0-9+.\-]*)://(?P<host>\[[^\]/]*\]|[^:/?#\[\]@]*)(?::(?P<port>[0-9]{1,5}))?$"
)
MAX_ORIGINS = 100


def parse_cors_origins(text: str | None, *, production: bool) -> list[str] | None:
    """The allowed origins, normalised as browsers send them (lower case, no default
    port); None when CORS is off (unset or empty). ``*`` allows any origin, outside
    production only."""
    if text is None or not text.strip():
        return None
    items = [part.strip() for part in text.split(",") if part.strip()]
    if not items:
        return None
    if "*" in items:
        if len(items) > 1:
            raise ValueError(f"{CORS_SETTING}: '*' cannot be combined with other origins")
        if production:
            raise ValueError(
                f"{CORS_SETTING}='*' is refused in production: list the origins allowed "
                "(https://app.example.com,https://admin.example.com)"
            )
        return ["*"]
    if len(items) > MAX_ORIGINS:
        raise ValueError(f"{CORS_SETTING}: at most {MAX_ORIGINS} origins")
    origins: list[str] = []
    for item in items:
        origin = normalise_origin(item)
        if origin not in origins:
            origins.append(origin)
    return origins


def normalise_origin(item: str) -> str:
    """``scheme://host[:port]`` as a browser's ``Origin`` header carries it."""
    shown = item[:200]
    match = _ORIGIN.fullmatch(item)
    if match is None:
        raise ValueError(
            f"{CORS_SETTING}: {shown!r} is not an origin: write scheme://host[:port], with "
            "no path, query or trailing slash"
        )
    scheme = match["scheme"].lower()
    if scheme not in _SCHEMES:
        raise ValueError(f"{CORS_SETTING}: {shown!r}: the scheme must be http or https")
    host = match["host"].lower()
    if host.startswith("["):
        try:
            address = ipaddress.IPv6Address(host[1:-1])
        except ValueError:
            raise ValueError(f"{CORS_SETTING}: {shown!r}: {host} is not an IPv6 address") from None
        host = f"[{address.compressed}]"
    elif not _is_host(host):
        raise ValueError(f"{CORS_SETTING}: {shown!r}: {host!r} is not a host name or address")
    port = match["port"]
    if port is not None:
        number = int(port)
        if not 1 <= number <= 65535:
            raise ValueError(f"{CORS_SETTING}: {shown!r}: port {port} is out of range")
        if number != _SCHEMES[scheme]:
            return f"{scheme}://{host}:{number}"
    return f"{scheme}://{host}"


def _is_host(host: str) -> bool:
    if not host or len(host) > 253:
        return False
    try:
        ipaddress.IPv4Address(host)
        return True
    except ValueError:
        pass
    labels = host.removesuffix(".").split(".")
    if all(label.isdigit() for label in labels):
        return False  # digits that are not a dotted quad
    return all(_LABEL.match(label) for label in labels)
