"""Reading WebSocket frames (RFC 6455 5.2) from bytes, with no socket in sight.

A ``FrameParser`` is fed what the stream had and hands back, one at a time, every
complete message in it: data messages put together from their fragments, and
control frames (ping, pong, close) as they come, even between the fragments of a
message. What breaks the protocol raises a ``FrameError`` with the close code the
connection must end with: 1002 for a frame RFC 6455 forbids (an unmasked frame
from a client, reserved bits, an unknown opcode, a bad fragment or control frame),
1009 for a message past the size limit, known from its header before its payload
arrives.

Permessage-deflate (RSV1) is not understood here: a connection that negotiated
it is read by Tornado's own reader (collab.web.reading).
"""

from __future__ import annotations

import struct
from enum import IntEnum

from tornado.util import _websocket_mask

from collab.errors import CloseCode

FIN = 0x80
RSV_MASK = 0x70
OPCODE_MASK = 0x0F
MASKED = 0x80
LENGTH_MASK = 0x7F
MAX_CONTROL_PAYLOAD_BYTES = 125  # RFC 6455 5.5

_LENGTH_16 = struct.Struct("!H")
_LENGTH_64 = struct.Struct("!Q")


class Opcode(IntEnum):
    CONTINUATION = 0x0
    TEXT = 0x1
    BINARY = 0x2
    CLOSE = 0x8
    PING = 0x9
    PONG = 0xA


_DATA_OPCODES = frozenset((Opcode.TEXT, Opcode.BINARY))
_CONTROL_OPCODES = frozenset((Opcode.CLOSE, Opcode.PING, Opcode.PONG))


class FrameError(Exception):
    """A frame that ends the connection with ``code`` (1002 or 1009)."""

    def __init__(self, code: CloseCode, reason: str) -> None:
        super().__init__(reason)
        self.code = code
        self.reason = reason


def _bad_frame(reason: str) -> FrameError:
    return FrameError(CloseCode.BAD_FRAME, reason)


class FrameParser:
    """Complete messages out of the bytes received so far.

    ``feed`` what arrived; call ``next_message`` until it returns None (more bytes
    are needed); ``wanted`` is then how many more bytes the frame under way needs
    at least. A message is ``(opcode, payload)``: TEXT or BINARY with the whole
    message's payload (its fragments joined), or a control frame's. The payload is
    unmasked; a text payload is not checked to be UTF-8 here.
    """

    __slots__ = (
        "_data",
        "_fragment_opcode",
        "_fragments",
        "_max_message_bytes",
        "_pos",
        "_require_mask",
        "_tail",
        "_tail_bytes",
        "wanted",
    )

    def __init__(self, max_message_bytes: int, *, require_mask: bool = True) -> None:
        self._max_message_bytes = max_message_bytes
        self._require_mask = require_mask  # a server reads clients, who must mask
        # Bytes not parsed yet are _data[_pos:] followed by the chunks in _tail: a
        # frame arriving in many pieces is joined once, when it is complete.
        self._data = b""
        self._pos = 0
        self._tail: list[bytes] = []
        self._tail_bytes = 0
        self._fragments: bytearray | None = None  # a fragmented message under way
        self._fragment_opcode = 0
        self.wanted = 2

    def feed(self, data: bytes) -> None:
        if self._pos >= len(self._data) and not self._tail:
            self._data, self._pos = data, 0
        else:
            self._tail.append(data)
            self._tail_bytes += len(data)

    @property
    def buffered_bytes(self) -> int:
        """Bytes received and not handed back yet (a frame under way)."""
        return len(self._data) - self._pos + self._tail_bytes

    def _join(self) -> None:
        self._data = b"".join([self._data[self._pos :], *self._tail])
        self._pos = 0
        self._tail.clear()
        self._tail_bytes = 0

    def next_message(self) -> tuple[int, bytes] | None:
        """The next complete message, or None when more bytes are needed."""
        while True:
            frame = self._next_frame()
            if frame is None:
                return None
            first, payload = frame
            opcode = first & OPCODE_MASK
            if opcode >= 0x8:  # control frames may come between fragments
                return opcode, payload
            if opcode == Opcode.CONTINUATION:
                fragments = self._fragments
                if fragments is None:
                    raise _bad_frame("a continuation frame with no message to continue")
                fragments += payload
                if first & FIN:
                    self._fragments = None
                    return self._fragment_opcode, bytes(fragments)
                continue
            if self._fragments is not None:
                raise _bad_frame("a new message before the fragmented one ended")
            if first & FIN:
                return opcode, payload
            self._fragments = bytearray(payload)
            self._fragment_opcode = opcode

    def _next_frame(self) -> tuple[int, bytes] | None:
        """The first byte and the unmasked payload of the next complete frame."""
        data, pos = self._data, self._pos
        available = len(data) - pos
        if available < 2:
            if self._tail and available + self._tail_bytes >= 2:
                self._join()
                return self._next_frame()
            self.wanted = 2 - available - self._tail_bytes
            return None
        first = data[pos]
        second = data[pos + 1]
        if first & RSV_MASK:
            raise _bad_frame("reserved bits set with no extension negotiated")
        opcode = first & OPCODE_MASK
        if opcode not in _DATA_OPCODES and opcode not in _CONTROL_OPCODES and opcode != 0:
            raise _bad_frame(f"unknown opcode {opcode:#x}")
        masked = second & MASKED
        if self._require_mask and not masked:
            raise _bad_frame("a client's frame must be masked")
        length = second & LENGTH_MASK
        if opcode >= 0x8:
            if length > MAX_CONTROL_PAYLOAD_BYTES:
                raise _bad_frame("a control frame longer than 125 bytes")
            if not first & FIN:
                raise _bad_frame("a fragmented control frame")
        header = 2
        if length == 126:
            header = 4
        elif length == 127:
            header = 10
        if masked:
            header += 4
        if available < header:
            if self._tail and available + self._tail_bytes >= header:
                self._join()
                return self._next_frame()
            self.wanted = header - available - self._tail_bytes
            return None
        if length == 126:
            (length,) = _LENGTH_16.unpack_from(data, pos + 2)
        elif length == 127:
            (length,) = _LENGTH_64.unpack_from(data, pos + 2)
        if opcode < 0x8:
            total = length + (len(self._fragments) if self._fragments is not None else 0)
            if total > self._max_message_bytes:
                raise FrameError(CloseCode.MESSAGE_TOO_BIG, "message too big")
        start = pos + header
        end = start + length
        if end <= len(data):
            self._pos = end
            body = data[start:end]
        elif self._tail and available + self._tail_bytes >= header + length:
            body = self._take_body(start, end - len(data))
        else:
            self.wanted = header + length - available - self._tail_bytes
            return None
        if masked:
            return first, _websocket_mask(data[start - 4 : start], body)
        return first, body

    def _take_body(self, start: int, missing: int) -> bytes:
        """A payload that begins at ``_data[start:]`` and ends ``missing`` bytes into
        the tail, copied once; what follows it becomes ``_data``."""
        parts: list[bytes | memoryview] = [memoryview(self._data)[start:]]
        tail = self._tail
        taken = 0
        for piece in tail:
            taken += 1
            if len(piece) > missing:
                parts.append(memoryview(piece)[:missing])
                self._data, self._pos = piece, missing
                break
            parts.append(piece)
            missing -= len(piece)
            if missing == 0:
                self._data, self._pos = b"", 0
                break
        del tail[:taken]
        self._tail_bytes = sum(map(len, tail))
        if self._pos >= len(self._data) and tail:
            self._data, self._pos = tail.pop(0), 0
            self._tail_bytes -= len(self._data)
        return b"".join(parts)
