"""The native wire format of ``/ws``, sans I/O.

Every WebSocket frame is a binary frame holding exactly one MessagePack map with
a ``type`` key. This module turns frames into typed messages and back, and checks
every shape; it never touches a socket, so it can be tested and fuzzed alone.
docs/PROTOCOL.md is the reference for client authors.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any, ClassVar

import msgpack

from collab.errors import ErrorCode, ProtocolError

PROTOCOL_VERSION = 1


class MessageType(StrEnum):
    HELLO = "hello"
    WELCOME = "welcome"
    SUBSCRIBE = "subscribe"
    SYNC = "sync"
    UPDATE = "update"
    ACK = "ack"
    AWARENESS = "awareness"
    UNSUBSCRIBE = "unsubscribe"
    UNSUBSCRIBED = "unsubscribed"
    PING = "ping"
    PONG = "pong"
    HISTORY = "history"
    REAUTH = "reauth"
    REAUTHED = "reauthed"
    ERROR = "error"


# Field kinds checked on decode. A field whose dataclass default is None is optional.
STR, BIN, UINT, MAP, SCALAR, LIST = (
    "a string",
    "binary",
    "an unsigned integer",
    "a map",
    "an integer or a string",
    "an array",
)


def _meta(kind: str) -> dict[str, str]:
    return {"kind": kind}


@dataclass(frozen=True, slots=True)
class Message:
    TYPE: ClassVar[MessageType]


# -- client to server ---------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Hello(Message):
    TYPE: ClassVar = MessageType.HELLO
    version: int = field(metadata=_meta(UINT))
    client: str | None = field(default=None, metadata=_meta(STR))
    token: str | None = field(default=None, metadata=_meta(STR), repr=False)
    # The largest frame the client accepts: sync answers are cut to fit.
    max_frame_bytes: int | None = field(default=None, metadata=_meta(UINT))


@dataclass(frozen=True, slots=True)
class Subscribe(Message):
    TYPE: ClassVar = MessageType.SUBSCRIBE
    doc: str = field(metadata=_meta(STR))
    sv: bytes | None = field(default=None, metadata=_meta(BIN))
    seq: int | None = field(default=None, metadata=_meta(UINT))
    epoch: str | None = field(default=None, metadata=_meta(STR))


@dataclass(frozen=True, slots=True)
class ClientUpdate(Message):
    TYPE: ClassVar = MessageType.UPDATE
    doc: str = field(metadata=_meta(STR))
    ref: int = field(metadata=_meta(UINT))
    update: bytes = field(metadata=_meta(BIN), repr=False)


@dataclass(frozen=True, slots=True)
class Awareness(Message):
    """Both directions: a y-protocols awareness update for one document."""

    TYPE: ClassVar = MessageType.AWARENESS
    doc: str = field(metadata=_meta(STR))
    update: bytes = field(metadata=_meta(BIN), repr=False)


@dataclass(frozen=True, slots=True)
class Unsubscribe(Message):
    TYPE: ClassVar = MessageType.UNSUBSCRIBE
    doc: str = field(metadata=_meta(STR))


@dataclass(frozen=True, slots=True)
class Ping(Message):
    TYPE: ClassVar = MessageType.PING
    id: int | str | None = field(default=None, metadata=_meta(SCALAR))


@dataclass(frozen=True, slots=True)
class History(Message):
    """A page of a document's stored updates after ``after`` (and at most
    ``until``): for timelines and scrubbers, without subscribing. ``id`` comes
    back in the answer (or in an error's ``ref``); the next page is asked for once
    this one is handled, which is the flow control. An error about it carries
    ``id`` (never ``ref``, which names updates)."""

    TYPE: ClassVar = MessageType.HISTORY
    doc: str = field(metadata=_meta(STR))
    id: int = field(metadata=_meta(UINT))
    after: int = field(default=0, metadata=_meta(UINT))
    until: int | None = field(default=None, metadata=_meta(UINT))
    limit: int | None = field(default=None, metadata=_meta(UINT))


@dataclass(frozen=True, slots=True)
class Reauth(Message):
    """A fresh access token for this connection, before or after the one it has
    expires (the same user's): the connection goes on, subscriptions and all,
    with the new token's grants."""

    TYPE: ClassVar = MessageType.REAUTH
    token: str = field(metadata=_meta(STR), repr=False)


# -- server to client ---------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Welcome(Message):
    TYPE: ClassVar = MessageType.WELCOME
    version: int = field(metadata=_meta(UINT))
    server: str = field(metadata=_meta(STR))
    instance: str = field(metadata=_meta(STR))
    limits: dict[str, Any] = field(metadata=_meta(MAP))
    user: str | None = field(default=None, metadata=_meta(STR))
    # When the token expires (Unix seconds): send reauth before then.
    expires_s: int | None = field(default=None, metadata=_meta(UINT))


@dataclass(frozen=True, slots=True)
class Reauthed(Message):
    """Answer to reauth: the fresh token is the connection's now."""

    TYPE: ClassVar = MessageType.REAUTHED
    user: str | None = field(default=None, metadata=_meta(STR))
    expires_s: int | None = field(default=None, metadata=_meta(UINT))


@dataclass(frozen=True, slots=True)
class Sync(Message):
    """Answer to subscribe: what the client lacks (step 2) and the server's state
    vector, from which the client computes what the server lacks (step 1).

    ``mode`` says how ``update`` was made: ``diff`` (from the client's state
    vector), ``log`` (the log records after the seq it resumed from) or ``reset``
    (the client's copy has another epoch: drop it, ``update`` is the whole
    document). A large answer comes in ``parts`` frames (``part`` 0, 1, ...), each
    with a slice of ``update`` and ``total_bytes``; ``sv`` is in the last one."""

    TYPE: ClassVar = MessageType.SYNC
    doc: str = field(metadata=_meta(STR))
    epoch: str = field(metadata=_meta(STR))
    seq: int = field(metadata=_meta(UINT))
    update: bytes = field(metadata=_meta(BIN), repr=False)
    role: str = field(metadata=_meta(STR))
    sv: bytes | None = field(default=None, metadata=_meta(BIN), repr=False)
    mode: str | None = field(default=None, metadata=_meta(STR))
    part: int | None = field(default=None, metadata=_meta(UINT))
    parts: int | None = field(default=None, metadata=_meta(UINT))
    total_bytes: int | None = field(default=None, metadata=_meta(UINT))


@dataclass(frozen=True, slots=True)
class ServerUpdate(Message):
    TYPE: ClassVar = MessageType.UPDATE
    doc: str = field(metadata=_meta(STR))
    seq: int = field(metadata=_meta(UINT))
    update: bytes = field(metadata=_meta(BIN), repr=False)


@dataclass(frozen=True, slots=True)
class Ack(Message):
    TYPE: ClassVar = MessageType.ACK
    doc: str = field(metadata=_meta(STR))
    ref: int = field(metadata=_meta(UINT))
    seq: int = field(metadata=_meta(UINT))


@dataclass(frozen=True, slots=True)
class Unsubscribed(Message):
    TYPE: ClassVar = MessageType.UNSUBSCRIBED
    doc: str = field(metadata=_meta(STR))


@dataclass(frozen=True, slots=True)
class Pong(Message):
    TYPE: ClassVar = MessageType.PONG
    id: int | str | None = field(default=None, metadata=_meta(SCALAR))
    time_ms: int | None = field(default=None, metadata=_meta(UINT))


@dataclass(frozen=True, slots=True)
class HistoryPage(Message):
    """Answer to ``history``: ``updates`` in seq order, each a map of ``seq``,
    ``time_s``, ``user``, ``client``, ``instance`` and ``update`` (binary);
    ``next_after`` is the ``after`` of the next page, absent at the end; ``head``
    is the document's latest seq; ``names``, the named versions among the page's
    seqs (each a map of ``seq``, ``name``, ``user``, ``time_s``), absent if none."""

    TYPE: ClassVar = MessageType.HISTORY
    doc: str = field(metadata=_meta(STR))
    id: int = field(metadata=_meta(UINT))
    updates: list[dict[str, Any]] = field(metadata=_meta(LIST), repr=False)
    head: int = field(metadata=_meta(UINT))
    next_after: int | None = field(default=None, metadata=_meta(UINT))
    names: list[dict[str, Any]] | None = field(default=None, metadata=_meta(LIST))


@dataclass(frozen=True, slots=True)
class Error(Message):
    TYPE: ClassVar = MessageType.ERROR
    code: str = field(metadata=_meta(STR))
    message: str = field(metadata=_meta(STR))
    doc: str | None = field(default=None, metadata=_meta(STR))
    ref: int | None = field(default=None, metadata=_meta(UINT))  # of an update
    id: int | None = field(default=None, metadata=_meta(UINT))  # of a history request


CLIENT_MESSAGES: dict[str, type[Message]] = {
    cls.TYPE: cls
    for cls in (Hello, Subscribe, ClientUpdate, Awareness, Unsubscribe, Ping, History, Reauth)
}
SERVER_MESSAGES: dict[str, type[Message]] = {
    cls.TYPE: cls
    for cls in (
        Welcome,
        Sync,
        ServerUpdate,
        Ack,
        Awareness,
        Unsubscribed,
        Pong,
        HistoryPage,
        Reauthed,
        Error,
    )
}


def encode(message: Message) -> bytes:
    """One message as one MessagePack frame; ``None`` fields are left out."""
    body: dict[str, Any] = {"type": str(message.TYPE)}
    for f in dataclasses.fields(message):
        value = getattr(message, f.name)
        if value is not None:
            body[f.name] = value
    return msgpack.packb(body, use_bin_type=True)


def decode_client_message(frame: bytes) -> Message:
    """Decode a frame a client sent. Raises :class:`ProtocolError`."""
    return _decode(frame, CLIENT_MESSAGES)


def decode_server_message(frame: bytes) -> Message:
    """Decode a frame the server sent. Raises :class:`ProtocolError`."""
    return _decode(frame, SERVER_MESSAGES)


def _decode(frame: bytes, registry: dict[str, type[Message]]) -> Message:
    try:
        body = msgpack.unpackb(frame, raw=False, strict_map_key=True, use_list=True)
    except msgpack.ExtraData:
        raise ProtocolError("a frame must hold exactly one MessagePack value") from None
    except (ValueError, TypeError, msgpack.UnpackException) as exc:
        raise ProtocolError(f"frame is not valid MessagePack: {exc}") from None
    if not isinstance(body, dict):
        raise ProtocolError(f"a message must be a MessagePack map, not {_kind_of(body)}")
    kind = body.get("type")
    if not isinstance(kind, str):
        raise ProtocolError("a message needs a string 'type' field")
    cls = registry.get(kind)
    if cls is None:
        raise ProtocolError(f"unknown message type {kind!r}", code=ErrorCode.UNKNOWN_TYPE)
    values: dict[str, Any] = {}
    for f in dataclasses.fields(cls):
        value = body.get(f.name)
        required = f.default is dataclasses.MISSING
        if value is None:
            if required:
                raise ProtocolError(f"{kind}: missing required field {f.name!r}")
            continue
        if not _has_kind(value, f.metadata["kind"]):
            raise ProtocolError(
                f"{kind}: field {f.name!r} must be {f.metadata['kind']}, not {_kind_of(value)}"
            )
        values[f.name] = value
    # Unknown keys are ignored so that newer clients can add optional fields.
    return cls(**values)


def _has_kind(value: Any, kind: str) -> bool:
    if kind == STR:
        return isinstance(value, str)
    if kind == BIN:
        return isinstance(value, bytes)
    if kind == UINT:
        return isinstance(value, int) and not isinstance(value, bool) and value >= 0
    if kind == MAP:
        return isinstance(value, dict)
    if kind == SCALAR:
        return isinstance(value, (int, str)) and not isinstance(value, bool)
    if kind == LIST:
        return isinstance(value, list)
    raise AssertionError(kind)


def _kind_of(value: Any) -> str:
    names = {bytes: "binary", str: "string", dict: "map", list: "array", bool: "boolean"}
    if isinstance(value, int) and not isinstance(value, bool):
        return "integer"
    return names.get(type(value), type(value).__name__)


SYNC_OVERHEAD_BYTES = 256  # a sync part's fields besides its slice, its name and sv
MIN_SYNC_PART_BYTES = 1024


def sync_parts(
    doc: str,
    update: bytes,
    state_vector: bytes,
    *,
    part_bytes: int,
    max_frame_bytes: int | None = None,
) -> list[memoryview]:
    """``update`` cut into the slices of a sync answer sent in parts: each part's
    frame holds at most ``part_bytes`` of it and fits the client's frame limit
    (``max_frame_bytes``, as its hello announced); the last part also carries the
    state vector (an extra part with an empty slice if it would not fit beside
    one). One slice: the answer fits one frame. The slices are views of
    ``update``: copied all at once, a large document's answer would be held twice
    while it is sent (``bytes(part)`` as each is sent)."""
    size = part_bytes
    if max_frame_bytes is not None:
        room = max_frame_bytes - SYNC_OVERHEAD_BYTES - len(doc.encode())
        size = min(size, max(MIN_SYNC_PART_BYTES, room))
    whole = memoryview(update)
    if len(update) + len(state_vector) <= size:
        return [whole]
    parts = [whole[start : start + size] for start in range(0, len(update), size)]
    if len(parts[-1]) + len(state_vector) > size:
        parts.append(whole[len(update) :])
    return parts


class NativeFrames:
    """FrameCodec for ``/ws`` peers."""

    def update_frame(self, doc: str, seq: int, update: bytes) -> bytes:
        return encode(ServerUpdate(doc=doc, seq=seq, update=update))

    def awareness_frame(self, doc: str, update: bytes) -> bytes:
        return encode(Awareness(doc=doc, update=update))


NATIVE_FRAMES = NativeFrames()
