"""Error codes, WebSocket close codes and the exceptions that carry them.

An error that reaches a socket handler is turned into exactly one thing: an
``error`` message carrying its :class:`ErrorCode` (the connection stays open), or,
when the error has a ``close_code``, the connection is closed with that code and
the message as the reason.
"""

from __future__ import annotations

from enum import IntEnum, StrEnum


class CloseCode(IntEnum):
    """WebSocket close codes used by the server.

    4400-4499 mean "do not reconnect, it would fail again" (y-websocket's provider
    stops reconnecting on them from version 3.1); every other code is transient.
    """

    NORMAL = 1000
    GOING_AWAY = 1001  # the server is going away: reconnect
    BAD_FRAME = 1002  # a frame RFC 6455 forbids (unmasked, reserved bits, bad fragments)
    SERVICE_RESTART = 1012  # the server restarts (shutdown, rolling deploy): reconnect at once
    UNSUPPORTED_DATA = 1003  # a text frame on a binary protocol
    POLICY_VIOLATION = 1008  # past a fair-use limit (rates, sizes): reconnect later
    MESSAGE_TOO_BIG = 1009  # a message past max_frame_bytes
    INTERNAL_ERROR = 1011
    TRY_AGAIN_LATER = 1013  # peer fell too far behind: reconnect and resync
    TOKEN_EXPIRED = 4001  # the access token expired: reconnect with a fresh one
    PROTOCOL_ERROR = 4400  # malformed handshake or stream; retrying cannot help
    UNAUTHORIZED = 4401  # missing, invalid or expired token
    FORBIDDEN = 4403  # token valid, document not granted
    NOT_FOUND = 4404  # no such document, and the token may only read it


class ErrorCode(StrEnum):
    """Stable codes in the native protocol's ``error`` message."""

    BAD_MESSAGE = "bad_message"
    UNKNOWN_TYPE = "unknown_type"
    HELLO_REQUIRED = "hello_required"
    UNSUPPORTED_VERSION = "unsupported_version"
    INVALID_DOCUMENT_NAME = "invalid_document_name"
    INVALID_UPDATE = "invalid_update"
    INVALID_STATE_VECTOR = "invalid_state_vector"
    INVALID_AWARENESS = "invalid_awareness"
    NOT_SUBSCRIBED = "not_subscribed"
    ALREADY_SUBSCRIBED = "already_subscribed"
    TOO_MANY_DOCUMENTS = "too_many_documents"
    UNAUTHORIZED = "unauthorized"
    EXPIRED = "expired"
    REVOKED = "revoked"
    FORBIDDEN = "forbidden"
    READ_ONLY = "read_only"
    LOAD_FAILED = "load_failed"
    NOT_FOUND = "not_found"
    NOT_RETAINED = "not_retained"
    TOO_LARGE = "too_large"
    STORE_UNAVAILABLE = "store_unavailable"
    OVERLOADED = "overloaded"
    RATE_LIMITED = "rate_limited"
    AWARENESS_DENIED = "awareness_denied"
    AWARENESS_LIMIT = "awareness_limit"
    UPDATE_REFUSED = "update_refused"  # an extension's before_update refused it
    HOOK_FAILED = "hook_failed"  # an extension's deciding hook raised or ran out of time
    INTERNAL = "internal"


class CollabError(Exception):
    """Base of every error the server reports to a peer."""

    code: ErrorCode = ErrorCode.INTERNAL
    close_code: CloseCode | None = None

    def __init__(
        self,
        message: str,
        *,
        code: ErrorCode | None = None,
        close_code: CloseCode | None = None,
        doc: str | None = None,
        ref: int | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        if code is not None:
            self.code = code
        if close_code is not None:
            self.close_code = close_code
        self.doc = doc
        self.ref = ref


class ProtocolError(CollabError):
    """A frame or message is malformed, unknown or out of order."""

    code = ErrorCode.BAD_MESSAGE


class InvalidUpdate(CollabError):
    """A CRDT update, state vector or awareness update could not be decoded."""

    code = ErrorCode.INVALID_UPDATE


class DocumentDamaged(InvalidUpdate):
    """pycrdt failed (an error or a panic) while integrating an update into a live
    document: the update is refused and the document, which it may have half
    changed, is dropped and reloaded from the store."""


class Overloaded(CollabError):
    """The write queue is full or the store is failing: an update is refused
    before it is applied, and the peer sends it again later."""

    code = ErrorCode.OVERLOADED


class AccessDenied(CollabError):
    """The peer's identity does not allow what it asked for."""

    code = ErrorCode.FORBIDDEN


class RateLimited(CollabError):
    """A fair-use limit was passed (docs/SECURITY.md): messages or bytes per
    second, documents created per minute, awareness updates."""

    code = ErrorCode.RATE_LIMITED
    retry_after_s: float | None = None  # when known: how long until it would be admitted


class StoreError(Exception):
    """The store could not complete an operation (I/O, database, corruption)."""


class FeedLost(StoreError):
    """The store's feed cannot continue from the position it was given (MongoDB:
    the oplog no longer reaches the resume token). Follow again from the feed's
    current end, and read each live document's log for what was missed."""


class DocumentChanged(StoreError):
    """An append was refused for documents that are no longer the generation its
    updates were made for (deleted, or deleted and created again: another epoch).
    ``stale`` maps each to the epoch that is gone. Nothing of theirs was stored;
    the batch's other updates may be tried again without them."""

    def __init__(self, stale: dict[str, str]) -> None:
        super().__init__(f"deleted or replaced meanwhile: {sorted(stale)}")
        self.stale = stale


class SeqConflict(StoreError):
    """An append did not continue the document's log at head_seq + 1."""

    def __init__(self, doc: str, message: str) -> None:
        super().__init__(message)
        self.doc = doc


class LoadFailed(CollabError):
    """A document could not be loaded; nothing was written over the stored copy."""

    code = ErrorCode.LOAD_FAILED
