"""A server's address: whether its host can be dialled at all, and how messages name it."""

from __future__ import annotations

import ipaddress
import re
from urllib.parse import urlsplit

DEFAULT_PORTS = {"ws": 80, "wss": 443, "http": 80, "https": 443}


_NAME = re.compile(rb"[A-Za-z0-9._-]+")


def dialable(host: str) -> bool:
    """An IP address, or a name DNS can hold (no empty label, none over 63 characters)."""
    try:
        ipaddress.ip_address(host)
        return True
    except ValueError:
        pass
    try:
        name = host.encode("idna")
    except UnicodeError:
        return False
    # Letters, digits, `-`, `_` and dots once encoded: `%`, `;` or a space is no host's
    # (a password typed where the host goes was dialled, and named in the failure: h161).
    return 0 < len(name) <= 253 and _NAME.fullmatch(name) is not None


def names_credentials(url: str) -> bool:
    """Whether a server's URL holds an `@`, as is or percent-encoded once or twice (`%40`,
    `%2540`): no server URL holds one, so the credentials typed before it are in it."""
    lowered = url.lower()
    return "@" in url or "%40" in lowered or "%25" in lowered


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
