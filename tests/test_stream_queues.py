"""The IOStream write queues that free their storage when empty
(collab.web.stream_queues): they behave as the deques they replace, Tornado uses
nothing else of them, and a socket's writes still arrive whole and in order."""

from __future__ import annotations

import inspect
import re
from collections import deque

import pytest
import tornado.iostream

from collab.web.stream_queues import ReleasingDeque
from collab.wire import yjs as yjs_protocol
from tests.helpers import text_of, text_update, wait_until
from tests.test_frame_reader import Wire
from tests.test_frames import frame
from tests.test_idle_memory import STEP1_EMPTY, synced_peer


def test_a_releasing_deque_behaves_as_a_deque_and_drops_its_storage_when_empty():
    queue: ReleasingDeque[int] = ReleasingDeque()
    assert not queue and len(queue) == 0 and list(queue) == []
    with pytest.raises(IndexError):
        queue[0]
    with pytest.raises(IndexError):
        queue.popleft()
    for item in (1, 2, 3):
        queue.append(item)
    assert queue and len(queue) == 3 and list(queue) == [1, 2, 3]
    assert (queue[0], queue[-1]) == (1, 3)
    assert [queue.popleft(), queue.popleft()] == [1, 2]
    queue.append(4)
    assert list(queue) == [3, 4]
    assert [queue.popleft(), queue.popleft()] == [3, 4]
    assert not queue and queue._items is None  # the deque under it is gone
    queue.append(5)
    queue.clear()
    assert not queue and queue._items is None


def test_a_releasing_deque_keeps_what_the_deque_it_replaces_held():
    assert list(ReleasingDeque(deque([1, 2]))) == [1, 2]
    assert ReleasingDeque(deque())._items is None


def test_tornado_uses_nothing_else_of_the_queues():
    """If this fails, Tornado's IOStream changed: read how it uses them now."""
    source = inspect.getsource(tornado.iostream)
    used = set(re.findall(r"self\._write_futures\.(\w+)", source))
    used |= set(re.findall(r"(?:self\._buffers|buffers)\.(\w+)", source))
    assert used <= {"append", "popleft", "clear"}, used
    assert "self._write_futures: collections.deque" in source
    assert "self._buffers: collections.deque" in source
    assert "buffers = self._buffers" in source


async def test_a_large_answer_to_a_slow_reader_arrives_whole_and_in_order(server):
    """An answer larger than the socket takes at once waits in the stream's queues,
    goes out whole, and leaves them released."""
    writer = await synced_peer(server.port, "big")
    await writer.write(frame(yjs_protocol.sync_update(text_update("x" * 3_000_000))))
    await wait_until(lambda: server.rooms.get("big").head_seq >= 1)
    reader = await Wire.connect(server.port, "/yjs/big")
    await reader.write(frame(STEP1_EMPTY))
    while True:  # the server's step 1, then its step 2 with the whole document
        _, payload = await reader.read_frame()
        if payload[:2] == b"\x00\x01":
            break
    assert text_of(yjs_protocol.decode(payload).payload) == "x" * 3_000_000
    for handler in server.sockets:
        stream = handler.ws_connection.stream
        await wait_until(lambda stream=stream: not stream._write_futures)
        assert stream._write_futures._items is None
        assert stream._write_buffer._buffers._items is None
    writer.close()
    reader.close()
