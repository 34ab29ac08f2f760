"""Settings: every knob of the server, with its unit and default, in one object.

Values come from (highest precedence first) command-line flags, ``COLLAB_*``
environment variables, and the defaults below. Nothing else in the package reads
the environment.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import secrets
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from typing import Any

ENV_PREFIX = "COLLAB_"
LOG_LEVELS = ("debug", "info", "warning", "error")
LOG_FORMATS = ("text", "json")
HTTP_COMPRESSIONS = ("gzip", "off")
WEBSOCKET_COMPRESSIONS = ("off", "deflate")
EVENT_LOOPS = ("asyncio", "uvloop")


class SettingsError(ValueError):
    """A setting has a value the server cannot run with."""


@dataclass(frozen=True, slots=True)
class Settings:
    host: str = field(default="127.0.0.1", metadata={"help": "address to listen on"})
    port: int = field(default=8000, metadata={"help": "TCP port (0 picks a free one)"})
    store_url: str = field(
        default="sqlite:///data/collab.db",
        metadata={
            "help": "sqlite:///relative/path.db, sqlite:////absolute/path.db, "
            "mongodb://host:port/database?options (a replica set) or memory://"
        },
    )
    allowed_origins: str = field(
        default="",
        metadata={
            "help": "comma-separated origins (https://app.example.com) whose pages may, "
            "besides the server's own, open WebSockets and send requests that change "
            "documents; * allows any. Empty: any while access tokens are required (tokens "
            "are the access control), only the server's own pages in open mode"
        },
    )
    allowed_hosts: str = field(
        default="",
        metadata={
            "help": "comma-separated host names (collab.example.com) the server answers to "
            "besides IP addresses, localhost and --host; * answers to any. Empty: any while "
            "access tokens are required; in open mode other names are refused (403), so "
            "that a DNS-rebinding page cannot reach the server"
        },
    )
    listen_backlog: int = field(
        default=4096,
        metadata={
            "help": "connections the kernel holds for the server to accept (listen backlog; "
            "Linux caps it at net.core.somaxconn). Past it, new connections' SYNs are dropped "
            "and retried a second later: thousands of clients reconnecting at once need it large"
        },
    )
    max_handshakes: int = field(
        default=32,
        metadata={
            "help": "connections the server takes on at once: while this many are between "
            "their accept and the end of their handshake (a WebSocket open and synced, or an "
            "HTTP request's head read), it accepts no more and the listen backlog holds them, "
            "so that connected clients are still answered during a storm of reconnections "
            "(0: no limit)"
        },
    )
    http_compression: str = field(
        default="gzip",
        metadata={
            "help": "gzip: compress HTTP answers (JSON, states, the page and its bundle) for "
            "clients that accept it; off: never"
        },
    )
    websocket_compression: str = field(
        default="off",
        metadata={
            "help": "off, or deflate: offer permessage-deflate on /ws and /yjs "
            "(docs/PERFORMANCE.md has what it saves and costs)"
        },
    )
    static_dir: str = field(default="", metadata={"help": "folder served at / (default: static/)"})
    workers: int = field(
        default=1,
        metadata={
            "help": "server processes sharing the port (SO_REUSEPORT) and the store, each "
            "an instance of its own; needs a fixed port and a shared store (SQLite or MongoDB)"
        },
    )
    event_loop: str = field(
        default="asyncio",
        metadata={"help": "asyncio, or uvloop (install collab[uvloop]; docs/PERFORMANCE.md)"},
    )
    log_level: str = field(default="info", metadata={"help": "debug, info, warning or error"})
    log_format: str = field(
        default="text",
        metadata={"help": "text (one readable line per event) or json (one JSON object per line)"},
    )

    ping_interval_s: float = field(
        default=20.0, metadata={"help": "seconds between WebSocket ping frames (0 disables)"}
    )
    ping_timeout_s: float | None = field(
        default=None,
        metadata={"help": "seconds to wait for a pong before closing (default: the interval)"},
    )
    max_frame_bytes: int = field(
        default=8 * 1024 * 1024, metadata={"help": "largest WebSocket message accepted"}
    )
    max_documents_per_connection: int = field(
        default=256, metadata={"help": "documents one native connection may subscribe to"}
    )
    max_document_name_bytes: int = field(
        default=512, metadata={"help": "longest document name, in UTF-8 bytes"}
    )
    outbound_queue_bytes: int = field(
        default=32 * 1024 * 1024,
        metadata={"help": "unsent bytes a peer may fall behind before it is told to reconnect"},
    )
    inbound_buffer_bytes: int = field(
        default=16 * 1024 * 1024,
        metadata={"help": "bytes a peer may send for a document that is still loading"},
    )

    sync_chunk_bytes: int = field(
        default=1024 * 1024,
        metadata={
            "help": "a sync answer larger than this is sent in parts of at most this many "
            "bytes (fewer when the client announces a smaller frame limit)"
        },
    )
    resume_ring_updates: int = field(
        default=500,
        metadata={"help": "recent updates each document keeps in memory for resuming peers"},
    )
    resume_ring_bytes: int = field(
        default=256 * 1024,
        metadata={"help": "bytes of recent updates each document keeps for resuming peers"},
    )
    resume_max_updates: int = field(
        default=1000,
        metadata={
            "help": "a resuming peer that missed more updates than this gets a state-vector "
            "diff, without reading the log"
        },
    )
    max_waiting_bytes: int = field(
        default=64 * 1024,
        metadata={
            "help": "bytes of updates a document keeps while they wait for updates they "
            "depend on; past it (or past 32 such updates), such updates are refused "
            "(each one that waits costs a read of all that waits)"
        },
    )

    snapshot_every_updates: int = field(
        default=500, metadata={"help": "write a snapshot after this many updates"}
    )
    snapshot_keep_recent: int = field(
        default=3,
        metadata={
            "help": "newest snapshots of a document kept; older ones are thinned out "
            "exponentially (every version stays reachable through the log)"
        },
    )
    room_linger_s: float = field(
        default=5.0,
        metadata={
            "help": "seconds a document stays loaded after its last peer leaves (a page "
            "reload finds it in memory); 0: unloaded at once"
        },
    )
    history_retention_s: float = field(
        default=0.0,
        metadata={
            "help": "seconds of history kept per document; older updates are dropped "
            "down to a snapshot, and older versions answer 'not retained' "
            "(0: keep everything)"
        },
    )
    retention_check_s: float = field(
        default=3600.0,
        metadata={"help": "seconds between passes that drop history past the retention"},
    )
    max_version_names: int = field(
        default=1000,
        metadata={
            "help": "named versions a document may have (each keeps its history from "
            "retention); naming one more is refused until a name is taken away"
        },
    )
    snapshot_every_bytes: int = field(
        default=4 * 1024 * 1024, metadata={"help": "or after this many update bytes"}
    )
    write_queue_bytes: int = field(
        default=8 * 1024 * 1024,
        metadata={
            "help": "update bytes waiting for the store past which new updates are refused "
            "(or their sender slowed down)"
        },
    )
    write_batch_max_updates: int = field(
        default=10_000, metadata={"help": "most updates committed in one store transaction"}
    )
    write_retry_max_s: float = field(
        default=5.0, metadata={"help": "longest pause between retries of a failed store write"}
    )
    snapshot_lease_s: float = field(
        default=60.0,
        metadata={"help": "how long one instance may take to write a document's snapshot"},
    )
    feed_poll_s: float = field(
        default=0.02,
        metadata={
            "help": "seconds between polls of the store for other instances' commits "
            "and presence (SQLite)"
        },
    )
    feed_audit_s: float = field(
        default=5.0,
        metadata={
            "help": "seconds between checks that every live document has all the updates "
            "the store holds (a safety net under the feed)"
        },
    )
    feed_lag_limit_s: float = field(
        default=30.0,
        metadata={
            "help": "/readyz answers 503 while other instances' commits arrive later than this"
        },
    )
    events_keepalive_s: float = field(
        default=15.0,
        metadata={
            "help": "seconds of quiet after which an event stream (/api/documents/DOC/events) "
            "gets a comment, so that proxies keep it open"
        },
    )
    events_buffer_bytes: int = field(
        default=4 * 1024 * 1024,
        metadata={
            "help": "bytes of updates held for an event stream client that reads slower "
            "than the document changes; past it the stream is closed (it resumes with "
            "Last-Event-ID)"
        },
    )
    changes_poll_s: float = field(
        default=0.1,
        metadata={
            "help": "seconds between each GET /api/events reader's polls of the store for "
            "new commits (SQLite; MongoDB's change streams push them)"
        },
    )
    webhook: str = field(
        default="",
        metadata={
            "help": "an endpoint that gets document events (created, changed, deleted, "
            "restored) as signed POSTs: URL, or URL#events=created,changed for some; the "
            "flag may be repeated, the variable holds several separated by spaces "
            "(docs/INTEGRATING.md)",
            "repeated": True,
        },
    )
    webhook_secret: str = field(
        default="",
        metadata={
            "help": "secret that signs webhook requests (HMAC-SHA256); while rotating, "
            "give the new and the old one separated by a comma: each request is signed "
            "with both"
        },
        repr=False,
    )
    webhook_quiet_s: float = field(
        default=2.0,
        metadata={"help": "seconds a document must be quiet before its changes are sent"},
    )
    webhook_max_wait_s: float = field(
        default=10.0,
        metadata={"help": "longest seconds a document's changes wait for a quiet moment"},
    )
    webhook_timeout_s: float = field(
        default=10.0, metadata={"help": "seconds a webhook endpoint has to answer"}
    )
    webhook_retry_max_s: float = field(
        default=60.0,
        metadata={"help": "longest pause between retries of a failing webhook endpoint"},
    )
    webhook_lease_s: float = field(
        default=30.0,
        metadata={
            "help": "how long one instance delivers a webhook without renewing its lease "
            "(another takes over after it); at least 3 x webhook_timeout_s"
        },
    )
    webhook_max_pending_documents: int = field(
        default=10_000,
        metadata={
            "help": "documents with changes waiting to be sent to one webhook, at most; "
            "past it the webhook reads no further in the log until some are sent"
        },
    )
    restore_timeout_s: float = field(
        default=30.0,
        metadata={"help": "seconds a restore waits for its update to be stored"},
    )
    awareness_flush_s: float = field(
        default=0.05, metadata={"help": "seconds between publications of presence changes"}
    )
    awareness_ttl_s: float = field(
        default=30.0,
        metadata={"help": "seconds a published presence state lives unless renewed"},
    )
    awareness_refresh_s: float = field(
        default=10.0, metadata={"help": "seconds between renewals of published presence states"}
    )
    hook_timeout_s: float = field(
        default=5.0,
        metadata={
            "help": "seconds an extension's hook may take (collab.extensions); a deciding "
            "hook past it fails closed, an observing one is skipped"
        },
    )
    hook_queue_events: int = field(
        default=10_000,
        metadata={"help": "events waiting for the extensions' observing hooks, at most"},
    )
    hook_change_debounce_s: float = field(
        default=1.0,
        metadata={"help": "quiet seconds after a document's last commit before on_change"},
    )
    hook_change_max_wait_s: float = field(
        default=10.0,
        metadata={"help": "seconds at most from a document's first change to its on_change"},
    )
    shutdown_flush_timeout_s: float = field(
        default=30.0, metadata={"help": "how long shutdown waits for pending writes"}
    )
    malloc_arena_max: int = field(
        default=2,
        metadata={
            "help": "malloc arenas the server's threads share (glibc; 0: glibc's default, 8 "
            "per core): each keeps the memory freed in it, so more arenas keep more"
        },
    )
    gc_rescan_s: float = field(
        default=600.0,
        metadata={
            "help": "collab serve sets aside what survives each full garbage collection "
            "(gc.freeze), so that later ones walk only newer objects and do not stall the "
            "event loop for long with many connections open; every this many seconds the "
            "set-aside objects are walked again, once, to free cycles among them (0: "
            "Python's own policy)"
        },
    )
    memory_trim_s: float = field(
        default=10.0,
        metadata={
            "help": "seconds between returns of memory freed inside the process to the "
            "system (glibc malloc_trim), which also follow each snapshot of 1 MiB or "
            "more; 0: never"
        },
    )

    auth_secret: str = field(
        default="",
        metadata={"help": "HS256 secret for JWT access tokens; empty means open access"},
        repr=False,
    )
    # -- security and fair use (docs/SECURITY.md) --------------------------------------
    auth_public_key_file: str = field(
        default="",
        metadata={
            "help": "PEM file of the public key (RSA: RS256, EC P-256: ES256) that signs "
            "access tokens, for an identity provider's tokens"
        },
    )
    auth_jwks_file: str = field(
        default="",
        metadata={
            "help": "JSON Web Key Set file of the keys (RS256, ES256) that sign access "
            "tokens; a token names its key by 'kid'"
        },
    )
    reauth_timeout_s: float = field(
        default=60.0,
        metadata={
            "help": "seconds a native connection whose token expired may take to present "
            "a fresh one (reauth) before it is closed"
        },
    )
    max_connections_per_ip: int = field(
        default=256,
        metadata={
            "help": "connections open at once from one address (HTTP, WebSockets, event "
            "streams; 0: any)"
        },
    )
    max_import_bytes: int = field(
        default=64 * 1024 * 1024,
        metadata={"help": "largest export file POST /api/documents/DOC/import takes"},
    )
    max_write_bytes: int = field(
        default=8 * 1024 * 1024,
        metadata={"help": "largest body POST /api/documents/DOC/updates takes (an HTTP write)"},
    )
    write_timeout_s: float = field(
        default=30.0,
        metadata={"help": "seconds an HTTP write waits for its update to be stored"},
    )
    rate_writes_per_s: float = field(
        default=10.0,
        metadata={
            "help": "HTTP writes a second one user (the address, without tokens) may make, "
            "on average; their bytes count against rate_bytes_per_s"
        },
    )
    rate_writes_burst: int = field(
        default=50, metadata={"help": "HTTP writes one user may make at once"}
    )
    idempotency_keys: int = field(
        default=10_000,
        metadata={"help": "answers to HTTP writes kept by Idempotency-Key, at most (this process)"},
    )
    idempotency_key_ttl_s: float = field(
        default=24 * 3600.0,
        metadata={"help": "seconds an HTTP write's answer is kept by its Idempotency-Key"},
    )
    max_header_bytes: int = field(
        default=64 * 1024, metadata={"help": "largest request head (request line and headers)"}
    )
    header_timeout_s: float = field(
        default=60.0,
        metadata={
            "help": "seconds a connection may take to send a request's head, and may stay "
            "idle between requests"
        },
    )
    body_timeout_s: float = field(
        default=120.0, metadata={"help": "seconds a request may take to send its body"}
    )
    rate_messages_per_s: float = field(
        default=100.0,
        metadata={"help": "messages a second one WebSocket may send, on average"},
    )
    rate_messages_burst: int = field(
        default=300, metadata={"help": "messages one WebSocket may send at once"}
    )
    rate_bytes_per_s: int = field(
        default=4 * 1024 * 1024,
        metadata={"help": "bytes a second one WebSocket may send, on average"},
    )
    rate_bytes_burst: int = field(
        default=32 * 1024 * 1024,
        metadata={
            "help": "bytes one WebSocket may send at once (at least max_frame_bytes: "
            "a resyncing client sends its whole document)"
        },
    )
    max_update_structs: int = field(
        default=20_000,
        metadata={
            "help": "most structs (items) one update may carry: applying one costs the "
            "event loop about 1.5 us each"
        },
    )
    max_cut_values: int = field(
        default=4_000_000,
        metadata={
            "help": "what cutting long items (runs of values or text) may cost pycrdt "
            "for one update, or the edits of one JSON write or restore, in values "
            "copied (a UTF-16 unit of text, or a block moved, counts a 64th): pycrdt "
            "copies an item each time an update inserts into it or deletes in it, at "
            "6-26 ns a value, and moves its writer's blocks after it along, holding "
            "the event loop"
        },
    )
    max_documents_created_per_minute: int = field(
        default=60,
        metadata={"help": "new documents one authenticated user may create a minute (0: any)"},
    )
    awareness_max_clients: int = field(
        default=16,
        metadata={"help": "awareness client ids one session may set"},
    )
    awareness_max_state_bytes: int = field(
        default=32 * 1024,
        metadata={"help": "largest awareness state of one client, as JSON"},
    )
    awareness_updates_per_s: float = field(
        default=30.0,
        metadata={"help": "awareness updates a second one session may send (burst: 3 s of it)"},
    )
    max_read_updates: int = field(
        default=100_000,
        metadata={
            "help": "log updates one read request (a version, a state, a diff) may read and "
            "apply; past it the request is refused (422), before the log is read; also the "
            "most log entries one timeline request reads"
        },
    )
    max_read_bytes: int = field(
        default=64 * 1024 * 1024,
        metadata={
            "help": "bytes of snapshots, checkpoints and updates one read request may read "
            "and rebuild from; past it the request is refused (422); also the most bytes "
            "of updates one page of history reads"
        },
    )
    max_read_cpu_s: float = field(
        default=2.0,
        metadata={
            "help": "CPU seconds one read request may spend rebuilding, rendering and "
            "diffing, counted as it goes; past it the request is refused (422)"
        },
    )
    max_expensive_requests: int = field(
        default=3,
        metadata={
            "help": "read requests that rebuild versions (content, versions, state, diff) "
            "running at once on this instance, on threads of their own; past it 429"
        },
    )
    max_expensive_requests_per_user: int = field(
        default=2,
        metadata={
            "help": "of those, running at once for one user (the client address when "
            "access is open; the page's history view asks for two versions at once); "
            "past it 429"
        },
    )
    max_list_rows: int = field(
        default=10_000,
        metadata={
            "help": "names of the store's list one GET /api/documents may read (each "
            "counted once per grant pattern it is tested against); past it the page ends "
            "early with a cursor (next_after) to go on from"
        },
    )
    list_cursor_secret: str = field(
        default="",
        metadata={
            "help": "key that seals list cursors standing at documents the token does not "
            "see; default: derived from auth_secret, else random per process (give every "
            "instance the same one when tokens are signed by public keys)"
        },
        repr=False,
    )

    instance_id: str = field(
        default_factory=lambda: secrets.token_hex(6),
        metadata={"help": "name of this server instance in update origins"},
    )

    def __post_init__(self) -> None:
        if self.ping_timeout_s is None:
            object.__setattr__(self, "ping_timeout_s", self.ping_interval_s)
        if not 0 <= self.port <= 65535:
            raise SettingsError(f"port must be between 0 and 65535, not {self.port}")
        if self.log_level not in LOG_LEVELS:
            raise SettingsError(f"log_level must be one of {', '.join(LOG_LEVELS)}")
        if self.event_loop not in EVENT_LOOPS:
            raise SettingsError(f"event_loop must be one of {', '.join(EVENT_LOOPS)}")
        if self.workers < 1:
            raise SettingsError("workers must be at least 1")
        if self.workers > 1 and self.port == 0:
            raise SettingsError("workers > 1 share one port: give a fixed port, not 0")
        if self.workers > 1 and self.store_url.startswith("memory:"):
            raise SettingsError("workers > 1 need a store they share: SQLite or MongoDB")
        if self.log_format not in LOG_FORMATS:
            raise SettingsError(f"log_format must be one of {', '.join(LOG_FORMATS)}")
        if self.http_compression not in HTTP_COMPRESSIONS:
            raise SettingsError(f"http_compression must be one of {', '.join(HTTP_COMPRESSIONS)}")
        if self.websocket_compression not in WEBSOCKET_COMPRESSIONS:
            raise SettingsError(
                f"websocket_compression must be one of {', '.join(WEBSOCKET_COMPRESSIONS)}"
            )
        if self.listen_backlog < 1:
            raise SettingsError("listen_backlog must be at least 1")
        if self.max_handshakes < 0:
            raise SettingsError("max_handshakes must not be negative (0: no limit)")
        assert self.ping_timeout_s is not None
        if self.ping_interval_s < 0 or self.ping_timeout_s < 0:
            raise SettingsError("ping_interval_s and ping_timeout_s must not be negative")
        if self.ping_interval_s and self.ping_timeout_s > self.ping_interval_s:
            # Tornado silently clamps the timeout to the interval; say so up front.
            raise SettingsError("ping_timeout_s must not be longer than ping_interval_s")
        for name in (
            "max_frame_bytes",
            "max_documents_per_connection",
            "max_document_name_bytes",
            "outbound_queue_bytes",
            "inbound_buffer_bytes",
            "snapshot_every_updates",
            "snapshot_keep_recent",
            "snapshot_every_bytes",
            "write_batch_max_updates",
            "write_queue_bytes",
            "max_waiting_bytes",
            "sync_chunk_bytes",
            "events_buffer_bytes",
            "resume_ring_updates",
            "resume_ring_bytes",
            "rate_messages_per_s",
            "rate_messages_burst",
            "rate_bytes_per_s",
            "rate_bytes_burst",
            "max_update_structs",
            "max_cut_values",
            "awareness_max_clients",
            "awareness_max_state_bytes",
            "awareness_updates_per_s",
            "reauth_timeout_s",
            "max_import_bytes",
            "max_write_bytes",
            "rate_writes_per_s",
            "rate_writes_burst",
            "idempotency_keys",
            "max_header_bytes",
            "max_read_updates",
            "max_read_bytes",
            "max_read_cpu_s",
            "max_expensive_requests",
            "max_expensive_requests_per_user",
            "max_list_rows",
            "webhook_max_pending_documents",
        ):
            if getattr(self, name) <= 0:
                raise SettingsError(f"{name} must be positive")
        if self.max_frame_bytes < 1024:
            raise SettingsError("max_frame_bytes must be at least 1024")
        if self.sync_chunk_bytes < 1024:
            raise SettingsError("sync_chunk_bytes must be at least 1024")
        if self.outbound_queue_bytes < 3 * self.sync_chunk_bytes:
            # A sync sent in parts keeps up to two parts unsent while it adds the
            # next: a smaller bound would close every peer that loads a large
            # document, again at every reconnect.
            raise SettingsError("outbound_queue_bytes must be at least 3 x sync_chunk_bytes")
        if self.resume_max_updates < 0:
            raise SettingsError("resume_max_updates must not be negative")
        if self.write_queue_bytes < self.max_frame_bytes:
            raise SettingsError("write_queue_bytes must be at least max_frame_bytes")
        if self.auth_secret and len(self.auth_secret.encode()) < 32:
            # RFC 7518 3.2: an HS256 key must be at least as long as the hash.
            raise SettingsError("auth_secret must be at least 32 bytes long")
        for name in (
            "write_retry_max_s",
            "shutdown_flush_timeout_s",
            "snapshot_lease_s",
            "feed_poll_s",
            "feed_audit_s",
            "feed_lag_limit_s",
            "retention_check_s",
            "events_keepalive_s",
            "restore_timeout_s",
            "write_timeout_s",
            "idempotency_key_ttl_s",
            "awareness_flush_s",
            "awareness_ttl_s",
            "awareness_refresh_s",
            "header_timeout_s",
            "body_timeout_s",
            "changes_poll_s",
            "webhook_quiet_s",
            "webhook_max_wait_s",
            "webhook_timeout_s",
            "webhook_retry_max_s",
            "webhook_lease_s",
            "hook_timeout_s",
            "hook_queue_events",
        ):
            if getattr(self, name) <= 0:
                raise SettingsError(f"{name} must be positive")
        if self.hook_change_debounce_s < 0 or self.hook_change_max_wait_s < 0:
            raise SettingsError(
                "hook_change_debounce_s and hook_change_max_wait_s must not be negative"
            )
        if self.rate_bytes_burst < self.max_frame_bytes:
            raise SettingsError("rate_bytes_burst must be at least max_frame_bytes")
        if self.max_connections_per_ip < 0 or self.max_documents_created_per_minute < 0:
            raise SettingsError(
                "max_connections_per_ip and max_documents_created_per_minute must not be "
                "negative (0: no cap)"
            )
        if sum(map(bool, (self.auth_secret, self.auth_public_key_file, self.auth_jwks_file))) > 1:
            raise SettingsError("give one of auth_secret, auth_public_key_file and auth_jwks_file")
        if self.gc_rescan_s < 0:
            raise SettingsError("gc_rescan_s must not be negative (0: Python's own policy)")
        if self.malloc_arena_max < 0 or self.memory_trim_s < 0:
            raise SettingsError("malloc_arena_max and memory_trim_s must not be negative (0: off)")
        if self.max_version_names < 0:
            raise SettingsError("max_version_names must not be negative (0: no names)")
        if self.room_linger_s < 0:
            raise SettingsError("room_linger_s must not be negative")
        if self.history_retention_s < 0:
            raise SettingsError("history_retention_s must not be negative (0: keep everything)")
        if self.awareness_refresh_s >= self.awareness_ttl_s:
            raise SettingsError("awareness_refresh_s must be shorter than awareness_ttl_s")

        if self.webhook_lease_s < 3 * self.webhook_timeout_s:
            # A request is started only while the lease has its timeout left, and the
            # lease is renewed every third of it.
            raise SettingsError("webhook_lease_s must be at least 3 x webhook_timeout_s")
        if self.webhook and not self.webhook_secret:
            raise SettingsError("webhooks are signed: set webhook_secret")

    def replace(self, **changes: Any) -> Settings:
        return dataclasses.replace(self, **changes)

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None, **overrides: Any) -> Settings:
        """Defaults, then ``COLLAB_*`` variables, then ``overrides``."""
        environ = os.environ if environ is None else environ
        values: dict[str, Any] = {}
        for f in fields(cls):
            raw = environ.get(ENV_PREFIX + f.name.upper())
            if raw is not None:
                values[f.name] = _parse(f, raw)
        values.update(overrides)
        return cls(**values)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """One ``--flag`` per setting; unset flags fall back to the environment."""
    for f in fields(Settings):
        flag = "--" + f.name.replace("_", "-")
        env = ENV_PREFIX + f.name.upper()
        # Parsed with the environment's values, in settings_from_namespace, so that
        # a bad flag gets the same message as a bad variable.
        parser.add_argument(
            flag,
            dest=f.name,
            default=None,
            action="append" if f.metadata.get("repeated") else "store",
            help=f"{f.metadata.get('help', '')} (env {env})",
        )


def settings_from_namespace(
    namespace: argparse.Namespace, environ: Mapping[str, str] | None = None
) -> Settings:
    given = {
        f.name: _parse(f, _joined(getattr(namespace, f.name)))
        for f in fields(Settings)
        if getattr(namespace, f.name, None) is not None
    }
    return Settings.from_env(environ, **given)


def _joined(raw: str | list[str]) -> str:
    """A repeated flag's values, as its environment variable holds them."""
    return " ".join(raw) if isinstance(raw, list) else raw


def _parse(f: dataclasses.Field[Any], raw: str) -> Any:
    # Annotations are strings here (``from __future__ import annotations``).
    kind = {"int": int, "float": float, "float | None": float}.get(str(f.type), str)
    try:
        return kind(raw)
    except ValueError:
        raise SettingsError(f"{f.name}: {raw!r} is not a valid {kind.__name__}") from None
