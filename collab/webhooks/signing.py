"""Webhooks without I/O: which endpoints get which events (``--webhook``), the
signature header, and the idempotency key.

A webhook is ``URL`` (every event) or ``URL#events=created,changed`` (those
events only). Each request carries

    Collab-Signature: t=1765000000,v1=5257a8...,v1=0f11c2...

one ``v1`` per secret (HMAC-SHA256, hex, over ``f"{t}.{body}"``): while secrets
are rotated the server signs with the new one and the old one, and a receiver
that knows either accepts the request (:func:`verify`, which docs/INTEGRATING.md
shows standing alone).
"""

from __future__ import annotations

import hashlib
import hmac
import time
import urllib.parse
from collections.abc import Sequence
from dataclasses import dataclass

EVENTS = ("created", "changed", "deleted", "restored")
SIGNATURE_HEADER = "Collab-Signature"
IDEMPOTENCY_HEADER = "Idempotency-Key"
EVENT_HEADER = "Collab-Event"
TOLERANCE_S = 300.0  # how old a signed timestamp a receiver should accept


class WebhookSpecError(ValueError):
    """A ``--webhook`` value that cannot be used."""


@dataclass(frozen=True, slots=True)
class WebhookSpec:
    """One endpoint and the events it gets. ``name`` is the URL without what may
    be a credential (a user and password, the query): what the store keeps its
    position under, and what /metrics, logs and ``collab webhooks status`` show."""

    url: str
    events: frozenset[str]

    @property
    def name(self) -> str:
        parts = urllib.parse.urlsplit(self.url)
        host = parts.hostname or ""
        if ":" in host:
            host = f"[{host}]"  # an IPv6 address
        netloc = host if parts.port is None else f"{host}:{parts.port}"
        return urllib.parse.urlunsplit((parts.scheme, netloc, parts.path, "", ""))

    @classmethod
    def parse(cls, text: str) -> WebhookSpec:
        url, _, fragment = text.strip().partition("#")
        parts = urllib.parse.urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.netloc:
            raise WebhookSpecError(f"webhook {text!r}: expected an http:// or https:// URL")
        events = frozenset(EVENTS)
        if fragment:
            options = urllib.parse.parse_qs(fragment, keep_blank_values=True, separator="&")
            unknown_options = set(options) - {"events"}
            if unknown_options:
                raise WebhookSpecError(
                    f"webhook {text!r}: unknown option {sorted(unknown_options)[0]!r} "
                    "(expected URL#events=created,changed)"
                )
            events = frozenset(e.strip() for e in ",".join(options["events"]).split(",") if e)
            unknown = events - set(EVENTS)
            if unknown or not events:
                raise WebhookSpecError(
                    f"webhook {text!r}: events must be some of {', '.join(EVENTS)}"
                )
        return cls(url, events)


def parse_specs(text: str) -> list[WebhookSpec]:
    """The webhooks of the ``webhook`` setting: specs separated by spaces."""
    specs = [WebhookSpec.parse(part) for part in text.split()]
    names = [spec.name for spec in specs]
    if len(set(names)) != len(names):
        raise WebhookSpecError("two webhooks have one URL (queries and passwords left out)")
    return specs


def sign(body: bytes, secrets: Sequence[str], timestamp: int | None = None) -> str:
    """The ``Collab-Signature`` header of ``body``, signed with every secret."""
    t = int(time.time()) if timestamp is None else timestamp
    signed = f"{t}.".encode() + body
    signatures = [hmac.new(s.encode(), signed, hashlib.sha256).hexdigest() for s in secrets]
    return ",".join([f"t={t}", *(f"v1={sig}" for sig in signatures)])


def verify(
    body: bytes,
    header: str,
    secret: str,
    *,
    tolerance_s: float = TOLERANCE_S,
    now: float | None = None,
) -> bool:
    """Whether ``header`` signs ``body`` with ``secret``, recently (a replayed old
    request fails). What a receiver does; the server only signs."""
    fields = [item.partition("=") for item in header.split(",")]
    stamps = [value for key, _, value in fields if key == "t"]
    # ASCII digits, as many as a time has: a hostile header must not raise.
    if len(stamps) != 1 or not (stamps[0].isascii() and stamps[0].isdigit()):
        return False
    if len(stamps[0]) > 12:
        return False
    t = int(stamps[0])
    if abs((time.time() if now is None else now) - t) > tolerance_s:
        return False
    expected = hmac.new(secret.encode(), f"{t}.".encode() + body, hashlib.sha256).hexdigest()
    return any(
        hmac.compare_digest(expected.encode(), value.encode())
        for key, _, value in fields
        if key == "v1"
    )


def idempotency_key(event: str, doc: str, epoch: str | None, first_seq: int, last_seq: int) -> str:
    """The same delivery, sent again, has the same key: the event, the document
    (quoted: a header is ASCII), its epoch and the seq range."""
    return f"{event}/{epoch or '-'}/{first_seq}-{last_seq}/{urllib.parse.quote(doc, safe='')}"
