"""The native wire format, without sockets: every message round-trips and every
malformed frame raises ProtocolError with a useful message."""

from __future__ import annotations

import msgpack
import pytest

from collab.errors import ErrorCode, ProtocolError
from collab.names import validate_document_name
from collab.wire import native as p

CLIENT_EXAMPLES = [
    p.Hello(version=1, client="tab-1", token="t"),
    p.Subscribe(doc="notes", sv=b"\x00", seq=4, epoch="e1"),
    p.ClientUpdate(doc="notes", ref=7, update=b"\x00\x00"),
    p.Awareness(doc="notes", update=b"\x00"),
    p.Unsubscribe(doc="notes"),
    p.Ping(id=3),
    p.Ping(),
]
SERVER_EXAMPLES = [
    p.Welcome(version=1, server="collab/x", instance="i", limits={"max_frame_bytes": 1}, user="u"),
    p.Sync(doc="d", epoch="e", seq=0, update=b"\x00\x00", sv=b"\x00", role="write"),
    p.ServerUpdate(doc="d", seq=9, update=b"\x01"),
    p.Ack(doc="d", ref=1, seq=9),
    p.Unsubscribed(doc="d"),
    p.Pong(id="x", time_ms=5),
    p.Error(code="bad_message", message="m", doc="d", ref=2),
]


@pytest.mark.parametrize("message", CLIENT_EXAMPLES, ids=repr)
def test_client_messages_round_trip(message):
    assert p.decode_client_message(p.encode(message)) == message


@pytest.mark.parametrize("message", SERVER_EXAMPLES, ids=repr)
def test_server_messages_round_trip(message):
    assert p.decode_server_message(p.encode(message)) == message


def test_optional_fields_are_left_out_of_the_frame():
    assert msgpack.unpackb(p.encode(p.Ping())) == {"type": "ping"}


def test_unknown_keys_are_ignored_for_forward_compatibility():
    frame = msgpack.packb({"type": "ping", "id": 1, "priority": "high"})
    assert p.decode_client_message(frame) == p.Ping(id=1)


def test_binary_fields_are_messagepack_bin_not_str():
    frame = p.encode(p.ClientUpdate(doc="d", ref=1, update=b"\x00\x00"))
    assert msgpack.unpackb(frame, raw=True)[b"update"] == b"\x00\x00"
    assert b"\xc4\x02\x00\x00" in frame  # bin 8, length 2


@pytest.mark.parametrize(
    ("frame", "code", "fragment"),
    [
        (b"", ErrorCode.BAD_MESSAGE, "not valid MessagePack"),
        (b"\xc1", ErrorCode.BAD_MESSAGE, "not valid MessagePack"),
        (msgpack.packb({"type": "ping"}) + b"\x01", ErrorCode.BAD_MESSAGE, "exactly one"),
        (msgpack.packb("hello"), ErrorCode.BAD_MESSAGE, "not string"),
        (msgpack.packb({1: 2}), ErrorCode.BAD_MESSAGE, "not valid MessagePack"),
        (msgpack.packb({"type": 1}), ErrorCode.BAD_MESSAGE, "'type'"),
        (msgpack.packb({"type": "welcome"}), ErrorCode.UNKNOWN_TYPE, "welcome"),
        (msgpack.packb({"type": "hello", "version": True}), ErrorCode.BAD_MESSAGE, "boolean"),
        (msgpack.packb({"type": "ping", "id": [1]}), ErrorCode.BAD_MESSAGE, "'id'"),
    ],
)
def test_malformed_frames_raise_protocol_errors(frame, code, fragment):
    with pytest.raises(ProtocolError) as raised:
        p.decode_client_message(frame)
    assert raised.value.code == code
    assert fragment in raised.value.message


def test_deeply_nested_frames_are_refused_not_crashing():
    frame = b"\x91" * 100_000 + b"\xc0"
    with pytest.raises(ProtocolError):
        p.decode_client_message(frame)


@pytest.mark.parametrize("name", ["notes", "team/notes", "ünïcode ✓", "a" * 512])
def test_valid_document_names(name):
    validate_document_name(name, 512)


@pytest.mark.parametrize("name", ["", "tab\there", "nul\x00", "del\x7f", "a" * 513, "é" * 257])
def test_invalid_document_names(name):
    with pytest.raises(ProtocolError) as raised:
        validate_document_name(name, 512)
    assert raised.value.code == ErrorCode.INVALID_DOCUMENT_NAME


@pytest.mark.parametrize(
    ("size", "sv", "part_bytes", "max_frame"),
    [
        (100, 10, 1024, None),  # fits one frame
        (10_000, 10, 1024, None),
        (10_000, 1020, 1024, None),  # the sv does not fit beside the last slice
        (50_000, 30, 8192, 4096),  # the client's frame limit is smaller than a part
        (50_000, 30, 8192, 100),  # never below the smallest part
    ],
)
def test_a_sync_answer_in_parts_fits_each_frame_and_puts_the_update_back_whole(
    size, sv, part_bytes, max_frame
):
    update, vector = bytes(range(256)) * (size // 256) + b"x" * (size % 256), b"v" * sv
    parts = p.sync_parts("doc", update, vector, part_bytes=part_bytes, max_frame_bytes=max_frame)
    assert b"".join(parts) == update
    limit = part_bytes
    if max_frame is not None:
        limit = min(limit, max(p.MIN_SYNC_PART_BYTES, max_frame - p.SYNC_OVERHEAD_BYTES - 3))
    if len(parts) == 1:
        assert size + sv <= limit
    else:
        assert all(len(part) <= limit for part in parts)
        assert len(parts[-1]) + sv <= limit  # the last part carries the state vector
