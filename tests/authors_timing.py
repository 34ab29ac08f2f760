"""How long GET .../authors takes on a long history: a document of 100,000
one-character updates (typed by two authors taking turns every 1,000 updates),
imported as an export (snapshots and authors indexes written as the writer would
write them), then the latest version's authors and an old version's, timed.
Prints figures; asserts nothing about time:
``python -m tests.authors_timing [UPDATES]`` from the repository."""

from __future__ import annotations

import asyncio
import statistics
import sys
import tempfile
import time

from tornado.httpclient import AsyncHTTPClient

from collab.app import CollabServer
from collab.config import Settings
from collab.core import archive, authors
from collab.store import Author, UpdateRecord
from collab.store.sqlite import SQLiteStore
from tests.helpers import typing_updates


async def main(count: int) -> None:
    updates = typing_updates(count)
    writer = archive.ArchiveWriter()
    now = time.time()
    people = [Author("ann", "laptop", "a"), Author("bob", "phone", "a")]
    lines = [writer.header(archive.ArchiveHeader("typed", None, now, count))]
    lines += [
        writer.update(UpdateRecord("typed", seq, data, now, people[(seq // 1000) % 2]))
        for seq, data in enumerate(updates, 1)
    ]
    lines.append(writer.end())
    with tempfile.TemporaryDirectory() as folder:
        store = SQLiteStore(f"{folder}/collab.db")
        await store.open()
        try:
            started = time.perf_counter()
            await archive.import_document(store, lines)
            print(f"imported {count} updates in {time.perf_counter() - started:.1f} s")
            for label, seq in (("latest", None), ("seq 50,123", min(count, 50_123))):
                times = []
                for _ in range(7):
                    started = time.perf_counter()
                    found = await authors.authors_at(store, "typed", seq)
                    times.append(time.perf_counter() - started)
                runs = len(found.roots["text"]["runs"])
                print(
                    f"authors at {label}: median {statistics.median(times) * 1000:.0f} ms, "
                    f"min {min(times) * 1000:.0f} ms, max {max(times) * 1000:.0f} ms "
                    f"({runs} runs, {len(found.authors)} authors)"
                )
        finally:
            await store.close()
        # The same through HTTP: a server on that file, the read in its worker
        # processes (the first request starts them: left out of the figures).
        server = CollabServer(
            Settings(host="127.0.0.1", port=0, store_url=f"sqlite:///{folder}/collab.db")
        )
        await server.start()
        try:
            http = AsyncHTTPClient()
            url = f"http://127.0.0.1:{server.port}/api/documents/typed/authors"
            for label, query in (("latest", ""), ("seq 50,123", "?seq=50123")):
                await http.fetch(url + query, request_timeout=60)
                times = []
                for _ in range(7):
                    started = time.perf_counter()
                    await http.fetch(url + query, request_timeout=60)
                    times.append(time.perf_counter() - started)
                print(
                    f"GET .../authors{query or ''} ({label}) over HTTP: median "
                    f"{statistics.median(times) * 1000:.0f} ms, max {max(times) * 1000:.0f} ms"
                )
        finally:
            await server.stop()


if __name__ == "__main__":
    asyncio.run(main(int(sys.argv[1]) if len(sys.argv) > 1 else 100_000))
