"""A server's address: whether its host can be dialled at all, and how messages name it."""

from __future__ import annotations

import ipaddress
from urllib.parse import urlsplit

DEFAULT_PORTS = {"ws": 80, "wss": 443, "http": 80, "https": 443}


def dialable(host: str) -> bool:
    """An IP address, or a name DNS can hold (no empty label, none over 63 characters)."""
    try:
        ipaddress.ip_address(host)
        return True
    except ValueError:
        pass
    try:
        return 0 < len(host.encode("idna")) <= 253
    except UnicodeError:
        return False


def server_of(url: str) -> str:
    """`host:port` as dialled, for messages: an IPv6 address in brackets, the scheme's own
    port when none is given, and never the URL's userinfo."""
    parts = urlsplit(url)
    host = parts.hostname or "?"
    if ":" in host:
        host = f"[{host}]"
    try:
        port: int | str | None = parts.port
    except ValueError:  # Python's message would quote the "port", perhaps a password
        port = "?"
    return f"{host}:{DEFAULT_PORTS.get(parts.scheme, '?') if port is None else port}"
