"""The sans-IO WebSocket frame parser (collab.web.frames): what a client may send,
what ends the connection and with which code, and frames cut anywhere."""

from __future__ import annotations

import os
import random
import struct

import pytest

from collab.errors import CloseCode
from collab.web.frames import FrameError, FrameParser, Opcode

LIMIT = 1 << 20


def frame(
    payload: bytes,
    opcode: int = Opcode.BINARY,
    *,
    fin: bool = True,
    masked: bool = True,
    rsv: int = 0,
    length: int | None = None,
) -> bytes:
    """One frame as a client writes it (masked unless told otherwise)."""
    first = (0x80 if fin else 0) | rsv | opcode
    size = len(payload) if length is None else length
    mask_bit = 0x80 if masked else 0
    if size < 126:
        header = bytes([first, mask_bit | size])
    elif size <= 0xFFFF:
        header = bytes([first, mask_bit | 126]) + struct.pack("!H", size)
    else:
        header = bytes([first, mask_bit | 127]) + struct.pack("!Q", size)
    if not masked:
        return header + payload
    mask = os.urandom(4)
    return header + mask + bytes(b ^ mask[i % 4] for i, b in enumerate(payload))


def parse_all(parser: FrameParser, data: bytes) -> list[tuple[int, bytes]]:
    parser.feed(data)
    messages = []
    while (message := parser.next_message()) is not None:
        messages.append(message)
    return messages


def test_a_masked_binary_frame_is_one_message_unmasked():
    assert parse_all(FrameParser(LIMIT), frame(b"hello")) == [(Opcode.BINARY, b"hello")]


def test_an_empty_frame_is_an_empty_message():
    assert parse_all(FrameParser(LIMIT), frame(b"")) == [(Opcode.BINARY, b"")]


def test_a_text_frame_is_handed_back_as_its_bytes():
    assert parse_all(FrameParser(LIMIT), frame("é".encode(), Opcode.TEXT)) == [
        (Opcode.TEXT, "é".encode())
    ]


@pytest.mark.parametrize("size", [0, 125, 126, 65535, 65536, 300_000])
def test_each_length_encoding_gives_the_whole_payload(size):
    payload = os.urandom(size)
    assert parse_all(FrameParser(LIMIT), frame(payload)) == [(Opcode.BINARY, payload)]


def test_an_unmasked_frame_is_read_when_masks_are_not_required():
    parser = FrameParser(LIMIT, require_mask=False)
    assert parse_all(parser, frame(b"abc", masked=False)) == [(Opcode.BINARY, b"abc")]


def test_many_frames_in_one_read_come_out_in_order():
    payloads = [os.urandom(n % 300) for n in range(200)]
    data = b"".join(frame(p) for p in payloads)
    assert parse_all(FrameParser(LIMIT), data) == [(Opcode.BINARY, p) for p in payloads]


def test_a_fragmented_message_is_joined_and_control_frames_between_come_first():
    data = (
        frame(b"one ", Opcode.TEXT, fin=False)
        + frame(b"p1", Opcode.PING)
        + frame(b"two ", Opcode.CONTINUATION, fin=False)
        + frame(b"", Opcode.PONG)
        + frame(b"three", Opcode.CONTINUATION)
        + frame(b"next")
    )
    assert parse_all(FrameParser(LIMIT), data) == [
        (Opcode.PING, b"p1"),
        (Opcode.PONG, b""),
        (Opcode.TEXT, b"one two three"),
        (Opcode.BINARY, b"next"),
    ]


def test_a_close_frame_is_handed_back_with_its_code_and_reason():
    payload = struct.pack("!H", 1000) + b"bye"
    assert parse_all(FrameParser(LIMIT), frame(payload, Opcode.CLOSE)) == [(Opcode.CLOSE, payload)]


def test_every_split_of_a_stream_gives_the_same_messages():
    data = (
        frame(b"a" * 5)
        + frame(b"b" * 200, Opcode.TEXT, fin=False)
        + frame(b"ping", Opcode.PING)
        + frame(b"c" * 70_000, Opcode.CONTINUATION)
        + frame(b"")
        + frame(b"d" * 130)
    )
    expected = parse_all(FrameParser(LIMIT), data)
    assert len(expected) == 5
    for cut in range(1, len(data)):
        parser = FrameParser(LIMIT)
        assert parse_all(parser, data[:cut]) + parse_all(parser, data[cut:]) == expected, cut
        assert parser.buffered_bytes == 0


def test_a_stream_fed_one_byte_at_a_time_gives_the_same_messages_and_says_what_it_wants():
    data = frame(b"x" * 300) + frame(b"y", Opcode.PING) + frame(b"z" * 70_000)
    parser = FrameParser(LIMIT)
    messages = []
    for i in range(len(data)):
        messages += parse_all(parser, data[i : i + 1])
        if i + 1 < len(data):
            assert parser.wanted >= 1
    assert messages == [
        (Opcode.BINARY, b"x" * 300),
        (Opcode.PING, b"y"),
        (Opcode.BINARY, b"z" * 70_000),
    ]


def test_wanted_is_the_rest_of_a_frame_once_its_header_is_read():
    whole = frame(b"q" * 100_000)
    parser = FrameParser(LIMIT)
    assert parse_all(parser, whole[:1000]) == []
    assert parser.wanted == len(whole) - 1000
    assert parse_all(parser, whole[1000:]) == [(Opcode.BINARY, b"q" * 100_000)]


def error_of(data: bytes, limit: int = LIMIT) -> FrameError:
    with pytest.raises(FrameError) as caught:
        parse_all(FrameParser(limit), data)
    return caught.value


def test_an_unmasked_client_frame_closes_with_1002():
    assert error_of(frame(b"abc", masked=False)).code == CloseCode.BAD_FRAME == 1002


@pytest.mark.parametrize("rsv", [0x40, 0x20, 0x10])
def test_a_reserved_bit_closes_with_1002(rsv):
    assert error_of(frame(b"abc", rsv=rsv)).code == CloseCode.BAD_FRAME


@pytest.mark.parametrize("opcode", [0x3, 0x4, 0x5, 0x6, 0x7, 0xB, 0xC, 0xD, 0xE, 0xF])
def test_a_reserved_opcode_closes_with_1002(opcode):
    assert error_of(frame(b"abc", opcode)).code == CloseCode.BAD_FRAME


def test_a_continuation_with_nothing_to_continue_closes_with_1002():
    assert error_of(frame(b"abc", Opcode.CONTINUATION)).code == CloseCode.BAD_FRAME


def test_a_new_message_inside_a_fragmented_one_closes_with_1002():
    data = frame(b"abc", fin=False) + frame(b"def")
    assert error_of(data).code == CloseCode.BAD_FRAME


def test_a_fragmented_control_frame_closes_with_1002():
    assert error_of(frame(b"abc", Opcode.PING, fin=False)).code == CloseCode.BAD_FRAME


def test_a_control_frame_over_125_bytes_closes_with_1002():
    assert error_of(frame(b"p" * 126, Opcode.PING)).code == CloseCode.BAD_FRAME


def test_a_frame_over_the_limit_closes_with_1009_from_its_header_alone():
    header_only = frame(b"", length=LIMIT + 1)  # no payload follows
    assert error_of(header_only).code == CloseCode.MESSAGE_TOO_BIG == 1009


def test_a_64_bit_length_past_the_limit_closes_with_1009():
    assert error_of(frame(b"", length=1 << 62)).code == CloseCode.MESSAGE_TOO_BIG


def test_fragments_adding_up_past_the_limit_close_with_1009():
    data = frame(b"a" * 600, fin=False) + frame(b"b" * 600, Opcode.CONTINUATION)
    assert error_of(data, limit=1000).code == CloseCode.MESSAGE_TOO_BIG


def test_a_message_of_exactly_the_limit_is_read():
    assert parse_all(FrameParser(1000), frame(b"a" * 1000)) == [(Opcode.BINARY, b"a" * 1000)]


def test_the_frames_before_a_bad_one_are_handed_back_first():
    parser = FrameParser(LIMIT)
    parser.feed(frame(b"good") + frame(b"bad", masked=False))
    assert parser.next_message() == (Opcode.BINARY, b"good")
    with pytest.raises(FrameError):
        parser.next_message()


def test_a_stream_cut_into_random_pieces_gives_the_same_messages():
    rng = random.Random(26)
    payloads = [rng.randbytes(rng.choice([0, 1, 125, 126, 400, 70_000])) for _ in range(40)]
    data = b"".join(frame(p) for p in payloads)
    for _ in range(50):
        parser = FrameParser(LIMIT)
        messages: list[tuple[int, bytes]] = []
        start = 0
        while start < len(data):
            size = rng.choice([1, 2, 3, 7, 100, 4096, 65536, 200_000])
            messages += parse_all(parser, data[start : start + size])
            start += size
        assert messages == [(Opcode.BINARY, p) for p in payloads]
        assert parser.buffered_bytes == 0
