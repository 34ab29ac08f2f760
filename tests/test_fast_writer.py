"""A client writing faster than the store commits is slowed down, not refused and
not buffered: the server stops reading its socket while the write queue is more
than half full. 100 MB of updates (one map key overwritten with 8 KiB values, so
the document stays small) grow the server's memory by less than 52 MiB, and every
update is acknowledged."""

from __future__ import annotations

import asyncio
from pathlib import Path

import msgpack
import pycrdt
import pytest

from tests.helpers import RawPeer
from tests.processes import server_process

pytestmark = pytest.mark.slow

VALUE_BYTES = 8 * 1024
TOTAL_BYTES = 100 * 1000 * 1000


def rss_kib(pid: int, field: str = "VmRSS") -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise AssertionError(f"no {field} for {pid}")


def overwrites(count: int) -> list[bytes]:
    doc = pycrdt.Doc(client_id=77)
    entries = doc.get("map", type=pycrdt.Map)
    updates: list[bytes] = []
    doc.observe(lambda event: updates.append(event.update))
    for i in range(count):
        entries["value"] = f"{i:08d}" * (VALUE_BYTES // 8)
    return updates


async def test_a_writer_faster_than_the_store_is_slowed_down_and_every_update_acknowledged(
    tmp_path: Path,
):
    count = TOTAL_BYTES // VALUE_BYTES
    updates = overwrites(count)
    async with server_process(f"sqlite:///{tmp_path}/fast.db") as server:
        pid = server.process.pid
        peer = await RawPeer.connect(f"{server.ws_url}/ws")
        await peer.hello()
        await peer.subscribe("fast")
        peer.send({"type": "update", "doc": "fast", "ref": 0, "update": updates[0]})
        assert (await peer.recv_type("ack"))["ref"] == 0
        baseline = rss_kib(pid)
        peak = baseline

        async def sample() -> None:
            nonlocal peak
            while True:
                peak = max(peak, rss_kib(pid))
                await asyncio.sleep(0.02)  # a sampling period: RSS is read, not awaited

        sampler = asyncio.ensure_future(sample())
        for ref in range(1, count):  # as fast as the socket takes them
            peer.send({"type": "update", "doc": "fast", "ref": ref, "update": updates[ref]})
        acked = {0}
        errors = []
        try:
            while len(acked) + len(errors) < count:
                frame = await peer.recv_bytes(60)
                assert frame is not None, "the server closed the connection"
                message = msgpack.unpackb(frame, raw=False)
                if message["type"] == "ack":
                    acked.add(message["ref"])
                elif message["type"] == "error":
                    errors.append(message)
        finally:
            sampler.cancel()
        peak = max(peak, rss_kib(pid, "VmHWM"))  # the kernel's peak, between samples too
        peer.close()

    assert errors == []
    assert acked == set(range(count))
    growth_mib = (peak - baseline) / 1024
    # Measured alone: 31-38 MiB (26-33 before snapshots kept an authors index); 57-74
    # while each snapshot read its span of the log twice, once for its authors.
    assert growth_mib < 52, f"server RSS grew {growth_mib:.1f} MiB for {TOTAL_BYTES / 1e6:.0f} MB"
