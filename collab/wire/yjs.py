"""The y-websocket wire format of ``/yjs/{document}``, sans I/O.

Each binary frame is one y-protocols message: a varuint message type, then
- sync (0): a varuint sync type (step 1, step 2, update) and a varuint-prefixed
  payload (a state vector for step 1, an update otherwise);
- awareness (1): a varuint-prefixed awareness update;
- auth (2): server to client only (permission denied);
- query awareness (3): no payload.

Frames are built with pycrdt's helpers and read with the strict reader from
:mod:`collab.wire.yformat`, which rejects truncated frames that pycrdt's own decoder
would read past or cut short.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import IntEnum

from pycrdt import (
    YMessageType,
    YSyncMessageType,
    create_awareness_message,
    create_update_message,
    write_message,
)

from collab.errors import CloseCode, ProtocolError
from collab.wire.yformat import FormatError, Reader

EMPTY_UPDATE = b"\x00\x00"
MESSAGE_AUTH = 2
MESSAGE_QUERY_AWARENESS = 3
AUTH_PERMISSION_DENIED = 0


class YjsKind(IntEnum):
    SYNC_STEP1 = 0
    SYNC_STEP2 = 1
    SYNC_UPDATE = 2
    AWARENESS = 3
    QUERY_AWARENESS = 4
    UNKNOWN = 5


@dataclass(frozen=True, slots=True)
class YjsMessage:
    kind: YjsKind
    payload: bytes = b""
    message_type: int = 0  # the raw type, for logging unknown messages


def decode(frame: bytes) -> YjsMessage:
    """Read one y-websocket frame. Raises ProtocolError (close 4400) when a known
    message is truncated or malformed; unknown message types decode as UNKNOWN."""
    reader = Reader(frame)
    try:
        message_type = reader.read_var_uint()
        if message_type == YMessageType.SYNC:
            sync_type = reader.read_var_uint()
            if sync_type not in (
                YSyncMessageType.SYNC_STEP1,
                YSyncMessageType.SYNC_STEP2,
                YSyncMessageType.SYNC_UPDATE,
            ):
                raise ProtocolError(
                    f"unknown sync message type {sync_type}", close_code=CloseCode.PROTOCOL_ERROR
                )
            return YjsMessage(YjsKind(sync_type), reader.read_var_bytes(), message_type)
        if message_type == YMessageType.AWARENESS:
            return YjsMessage(YjsKind.AWARENESS, reader.read_var_bytes(), message_type)
        if message_type == MESSAGE_QUERY_AWARENESS:
            return YjsMessage(YjsKind.QUERY_AWARENESS, b"", message_type)
        return YjsMessage(YjsKind.UNKNOWN, b"", message_type)
    except FormatError as exc:
        raise ProtocolError(
            f"malformed y-websocket message: {exc}", close_code=CloseCode.PROTOCOL_ERROR
        ) from None


def sync_step1(state_vector: bytes) -> bytes:
    return bytes([YMessageType.SYNC, YSyncMessageType.SYNC_STEP1]) + write_message(state_vector)


def sync_step2(update: bytes) -> bytes:
    return bytes([YMessageType.SYNC, YSyncMessageType.SYNC_STEP2]) + write_message(update)


def sync_update(update: bytes) -> bytes:
    return create_update_message(update)


def awareness(update: bytes) -> bytes:
    return create_awareness_message(update)


def permission_denied(reason: str) -> bytes:
    return bytes([MESSAGE_AUTH, AUTH_PERMISSION_DENIED]) + write_message(reason.encode())


class YjsFrames:
    """FrameCodec for y-websocket peers."""

    def update_frame(self, doc: str, seq: int, update: bytes) -> bytes | None:
        # y-websocket has no seqs: an update with nothing in it need not be sent.
        return None if update == EMPTY_UPDATE else sync_update(update)

    def awareness_frame(self, doc: str, update: bytes) -> bytes:
        return awareness(update)


YJS_FRAMES = YjsFrames()
