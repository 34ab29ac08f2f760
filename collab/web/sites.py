"""Which names the server answers to (``Host``) and which other sites' pages may
change documents (``Origin``), without I/O.

In open mode (no access tokens) anyone who reaches the server may edit, so what
reaches it must be kept to the people on the machine or network it serves:

- A page of another site that the user visits could send a "simple" cross-site
  POST or open a WebSocket: browsers say where such a request comes from in
  ``Origin`` (and ``Sec-Fetch-Site``), and only the server's own pages and the
  ``allowed_origins`` may. Tornado's cross-origin protection reads those headers
  (same origin, direct navigation and clients without ``Origin`` pass) and asks
  :meth:`Sites.origin_trusted` about the rest.
- A DNS-rebinding page (``evil.example`` made to resolve to 127.0.0.1) is the
  server's own origin as far as the browser knows, but it names itself in
  ``Host``: only IP addresses, ``localhost`` names, the configured ``host`` and
  the ``allowed_hosts`` are answered. An IP address is always safe: a page at an
  address is that address, nothing can rebind it. The port is not checked: the
  browser sends the one it connected to, which says nothing about the page.

With access tokens the token is the access control (another site's page has no
token to send), so both default to any; ``allowed_origins`` and ``allowed_hosts``
narrow that when set.
"""

from __future__ import annotations

import ipaddress
import re
import urllib.parse
from dataclasses import dataclass

ANY = "*"
HOST_NAME = re.compile(r"[a-z0-9_-]+(\.[a-z0-9_-]+)*")
WILDCARD_ADDRESSES = frozenset({"", "0.0.0.0", "::"})


def _names(listed: str) -> frozenset[str]:
    return frozenset(name.strip().lower() for name in listed.split(",") if name.strip())


def host_name(host: str) -> str | None:
    """The name (or address) in a ``Host`` header, lowercase, without its port or
    IPv6 brackets; None when it is not a host."""
    try:
        parts = urllib.parse.urlsplit("//" + host.strip())
        parts.port  # noqa: B018 - raises ValueError for a port that is not one
    except ValueError:
        return None
    name = parts.hostname
    if not name or parts.username is not None or parts.path or parts.query or parts.fragment:
        return None
    name = name.rstrip(".")
    return name if HOST_NAME.fullmatch(name) or is_address(name) else None


def is_address(name: str) -> bool:
    try:
        ipaddress.ip_address(name)
    except ValueError:
        return False
    return True


@dataclass(frozen=True, slots=True)
class Sites:
    any_host: bool
    hosts: frozenset[str]  # names answered to besides addresses and localhost
    any_origin: bool
    origins: frozenset[str]  # scheme://host[:port], as browsers send them

    @classmethod
    def of(
        cls, *, host: str, allowed_hosts: str, allowed_origins: str, tokens_required: bool
    ) -> Sites:
        """From the settings: ``host`` the server listens on, the two lists, and
        whether access tokens are required (then both default to any)."""
        hosts, origins = _names(allowed_hosts), _names(allowed_origins)
        listen = host.strip().lower()
        own = {listen} if listen not in WILDCARD_ADDRESSES else set()
        return cls(
            any_host=ANY in hosts or (tokens_required and not hosts),
            hosts=frozenset(hosts | own) - {ANY},
            any_origin=ANY in origins or (tokens_required and not origins),
            origins=frozenset(o.rstrip("/") for o in origins) - {ANY},
        )

    def host_allowed(self, host: str | None) -> bool:
        """Whether a request naming ``host`` is answered. A request without a
        ``Host`` does not come from a browser (they always send one)."""
        if self.any_host or host is None:
            return True
        name = host_name(host)
        if name is None:
            return False
        return (
            is_address(name)
            or name == "localhost"
            or name.endswith(".localhost")  # RFC 6761: loopback, resolved by the browser
            or name in self.hosts
        )

    def origin_trusted(self, origin: str) -> bool:
        """Whether a page of ``origin``, another origin than the server's, may open
        a WebSocket or send a request that changes something."""
        return self.any_origin or origin.strip().rstrip("/").lower() in self.origins
