"""Durable webhooks: what the log holds, POSTed to an application's endpoints,
signed, debounced per document, at least once and in seq order per document,
from each webhook's stored feed position (collab.webhooks.delivery); the
endpoint list, signatures and payloads without I/O (collab.webhooks.signing)."""

from __future__ import annotations

from collab.webhooks.signing import EVENTS, WebhookSpec, parse_specs, sign, verify

__all__ = ["EVENTS", "WebhookSpec", "parse_specs", "sign", "verify"]
