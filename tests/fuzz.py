"""A seeded fuzzer for the update path, run against a real server process.

Each round sends one attack, a mutated Yjs update (bit flips, truncations,
trailing bytes, splices, updates that wait for missing dependencies, deep
nesting, huge lengths, replays, or a genuine edit), on ``/ws`` or ``/yjs/{doc}``,
while honest peers on both endpoints keep editing the same document. After every
round the server must be alive; every few rounds, and at the end:

- the live document (what a new subscriber gets) equals the document rebuilt from
  the store (the state API, which reads snapshots and the log) and what the
  honest peers hold;
- every stored update passes the strict reader and can be applied by Yjs in
  Node.js (the pinned ``yjs`` in tests/node), and Yjs, replaying what a
  y-websocket peer was sent, holds the same document as pycrdt's live state.

``tests/test_fuzz.py`` runs it for a bounded number of rounds; ``scripts/fuzz``
runs it for longer with a given seed and prints every attack.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import contextlib
import json
import random
import shutil
import sqlite3
import subprocess
import sys
import tempfile
import time
import urllib.parse
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pycrdt
from pycrdt import YMessageType, YSyncMessageType, create_update_message, write_message
from tornado.httpclient import AsyncHTTPClient, HTTPClientError
from tornado.websocket import WebSocketClientConnection, websocket_connect

from collab.client import CollabClient
from collab.errors import InvalidUpdate
from collab.wire.replica import Replica
from collab.wire.yformat import FormatError, check_update, decode_state_vector, var_uint
from tests.helpers import RawPeer
from tests.processes import ServerProcess, server_process
from tests.yjs_peer import YjsPeer

NODE_DIR = Path(__file__).parent / "node"
TIMEOUT_S = 10.0
DOC = "fuzzed"


@dataclass
class Report:
    seed: int
    rounds: int = 0
    outcomes: Counter[str] = field(default_factory=Counter)
    violations: list[str] = field(default_factory=list)
    checks: int = 0

    def summary(self) -> str:
        kinds = ", ".join(f"{k} {n}" for k, n in sorted(self.outcomes.items()))
        return (
            f"seed {self.seed}: {self.rounds} rounds, {self.checks} invariant checks, "
            f"{len(self.violations)} violations ({kinds})"
        )


class Violation(Exception):
    """An invariant does not hold."""


# -- attacks ---------------------------------------------------------------------------------


def any_value(depth: int) -> bytes:
    """A lib0 ``writeAny`` value: arrays nested ``depth`` levels around a null."""
    return b"\x75\x01" * depth + b"\x7e"


def var_string(text: str) -> bytes:
    data = text.encode()
    return var_uint(len(data)) + data


class Attacker:
    """Builds attacks from its own genuine updates, made on a document that also
    holds the honest peers' edits (so they name the honest peers' items).

    It does not write under an honest peer's Yjs client id: with open access any
    peer can, and no Yjs server can then tell the forgery from the real thing (the
    peer whose id is taken diverges). That threat is answered by access control,
    not by reading updates strictly, and is left out here."""

    def __init__(self, rng: random.Random) -> None:
        self.rng = rng
        self.corpus: list[bytes] = []  # the attacker's genuine updates, newest last
        self.doc = pycrdt.Doc(client_id=rng.randrange(1, 2**31))
        self.replica = Replica(self.doc)
        self.own: list[bytes] = []  # the attacker's own genuine updates, unsent ones too
        self.honest: set[int] = set()  # the honest peers' Yjs client ids
        self._applying = False
        self.doc.observe(self._on_change)

    def _on_change(self, event: Any) -> None:
        if not self._applying:
            self.own.append(event.update)
            self.replica.learn(event.update)
            self.corpus.append(event.update)
            del self.corpus[:-200]

    def hear(self, update: bytes) -> None:
        """An honest peer's update: the attacker's later edits build on it."""
        self._applying = True
        try:
            self.replica.apply(update, bounded=False)
        except InvalidUpdate:
            pass
        finally:
            self._applying = False

    def genuine(self) -> bytes:
        edit_text(self.doc, self.rng, ["x", "yz", "é", "😀"])
        return self.own[-1]

    def impersonates(self, data: bytes) -> bool:
        try:
            ranges = check_update(data)
        except FormatError:
            return False
        return any(group and group[0].client in self.honest for group in ranges.groups)

    def make(self) -> tuple[str, bytes]:
        kind = self.rng.choice(
            [
                "bitflip",
                "truncate",
                "trailing",
                "splice",
                "waits",
                "waits+trailing",
                "deep",
                "huge",
                "replay",
                "genuine",
            ]
        )
        rng = self.rng
        base = rng.choice(self.corpus) if self.corpus else self.genuine()
        data = bytearray(base)
        if kind == "bitflip":
            for _ in range(rng.randint(1, 3)):
                index = rng.randrange(len(data))
                data[index] ^= 1 << rng.randrange(8)
        elif kind == "truncate":
            del data[rng.randrange(1, len(data)) :]
        elif kind == "trailing":
            data += bytes(rng.randrange(256) for _ in range(rng.randint(1, 4)))
        elif kind == "splice":
            other = rng.choice(self.corpus or [base])
            data = data[: rng.randrange(len(data) + 1)] + other[rng.randrange(len(other) + 1) :]
        elif kind in ("waits", "waits+trailing"):
            # An edit whose predecessor is held back: it waits for a missing clock.
            self.genuine()
            data = bytearray(self.genuine())
            if kind == "waits+trailing":
                data += bytes([rng.randrange(256)])
        elif kind == "deep":
            depth = rng.choice([65, 200, 1000, 10_000, 40_000])
            client = rng.randrange(1, 2**31)
            item = b"\x28" + var_uint(1) + var_string("map") + var_string("deep") + var_uint(1)
            data = bytearray(
                var_uint(1) + var_uint(1) + var_uint(client) + var_uint(0) + item + any_value(depth)
            )
            data += var_uint(0)
        elif kind == "huge":
            index = rng.randrange(len(data) + 1)
            data[index:index] = rng.choice(
                [b"\xff\xff\xff\xff\x0f", b"\x80\x80\x80\x80\x10", b"\xff" * 9 + b"\x01"]
            )
        elif kind == "replay":
            pass
        elif kind == "genuine":
            data = bytearray(
                self.own[0] if len(self.own) and rng.random() < 0.2 else self.genuine()
            )
        return kind, bytes(data)


def edit_text(doc: pycrdt.Doc, rng: random.Random, inserts: list[str]) -> None:
    """Insert or delete one character of the root text, at a character boundary:
    pycrdt's offsets count UTF-8 bytes, and an offset inside a character makes it
    write updates that cut the character (which the server refuses)."""
    text = doc.get("text", type=pycrdt.Text)
    content = str(text)
    start = rng.randint(0, len(content))
    offset = len(content[:start].encode())
    if content and start < len(content) and rng.random() < 0.35:
        del text[offset : offset + len(content[start].encode())]
    else:
        text.insert(offset, rng.choice(inserts))


# -- fingerprints -----------------------------------------------------------------------------


def fingerprint(update: bytes) -> tuple[Any, ...]:
    """What a document holds, independent of how its history was split into items:
    its state vector, its deleted ranges (merged), and what waits for dependencies."""
    replica = Replica()
    replica.apply(update, bounded=False)
    waiting = check_update(replica.waiting) if replica.waiting is not None else None
    return (
        *integrated_fingerprint(replica.doc),
        (waiting.structs, waiting.deletes) if waiting else None,
    )


def integrated_fingerprint(doc: pycrdt.Doc) -> tuple[dict[int, int], list[tuple[int, int, int]]]:
    deletes: dict[int, list[tuple[int, int]]] = {}
    for client, start, end in check_update(doc.get_update()).deletes:
        deletes.setdefault(client, []).append((start, end))
    merged: list[tuple[int, int, int]] = []
    for client, spans in sorted(deletes.items()):
        for start, end in sorted(spans):
            if merged and merged[-1][0] == client and merged[-1][2] >= start:
                merged[-1] = (client, merged[-1][1], max(merged[-1][2], end))
            else:
                merged.append((client, start, end))
    return decode_state_vector(doc.get_state()), merged


# -- the run -----------------------------------------------------------------------------------


class Fuzzer:
    def __init__(
        self,
        server: ServerProcess,
        store_path: Path,
        *,
        seed: int,
        check_every: int = 25,
        log: Callable[[str], None] = lambda line: None,
    ) -> None:
        self.server = server
        self.store_path = store_path
        self.rng = random.Random(seed)
        self.report = Report(seed)
        self.check_every = check_every
        self.log = log
        self.attacker = Attacker(self.rng)
        self.http = AsyncHTTPClient()
        self._refs = 0
        self._doc_path = urllib.parse.quote(DOC, safe="")

    async def run(self, rounds: int) -> Report:
        alice = await CollabClient.connect(f"{self.server.ws_url}/ws", client_id="alice")
        bob = YjsPeer(f"{self.server.ws_url}/yjs/{DOC}")
        attacker = await RawPeer.connect(f"{self.server.ws_url}/ws")
        try:
            remote = await alice.subscribe(DOC)
            remote.doc.observe(lambda event: self.attacker.hear(event.update))
            bob.doc.observe(lambda event: self.attacker.hear(event.update))
            self.attacker.honest = {remote.doc.client_id, bob.doc.client_id}
            await bob.reconnect()
            await attacker.hello(client="attacker")
            await attacker.subscribe(DOC)
            self.alice, self.remote, self.bob, self.ws = alice, remote, bob, attacker
            for round_ in range(rounds):
                self.report.rounds = round_ + 1
                try:
                    await self._round(round_)
                    if (round_ + 1) % self.check_every == 0 or round_ + 1 == rounds:
                        await self.check()
                except Violation as exc:
                    self.report.violations.append(f"round {round_}: {exc}")
                    self.log(f"VIOLATION round {round_}: {exc}")
                    break
            if not self.report.violations:
                try:
                    await self.check_with_yjs()
                except Violation as exc:
                    self.report.violations.append(f"end: {exc}")
                    self.log(f"VIOLATION at the end: {exc}")
        finally:
            attacker.close()
            with contextlib.suppress(Exception):
                await bob.disconnect()
            with contextlib.suppress(Exception):
                await alice.close()
        return self.report

    async def _round(self, round_: int) -> None:
        kind, data = self.attacker.make()
        endpoint = self.rng.choice(["ws", "yjs"])
        outcome = await (self._attack_ws(data) if endpoint == "ws" else self._attack_yjs(data))
        self.report.outcomes[outcome] += 1
        self.log(
            f"{round_:5d} {endpoint:3s} {kind:15s} {len(data):7d} B  {outcome}  {data[:24].hex()}"
        )
        # The attack's answer says the server lives; a process that dies after
        # answering is found by the next round (its attack then fails and asks
        # /healthz, as every invariant check does).
        if not self.server.alive:
            raise Violation(f"the server process died (exit code {self.server.process.returncode})")
        if self.rng.random() < 0.6:
            self._honest_edit()

    def _honest_edit(self) -> None:
        doc = self.rng.choice([self.remote.doc, self.bob.doc])
        rng = self.rng
        choice = rng.randrange(5)
        with doc.transaction():
            if choice in (0, 1):
                edit_text(doc, rng, ["a", "bc", "ü", "👍"])
            elif choice == 2:
                doc.get("map", type=pycrdt.Map)[rng.choice("abc")] = rng.choice(
                    [1, "v", [1, {"k": True}], None]
                )
            elif choice == 3:
                doc.get("map", type=pycrdt.Map)["nested"] = pycrdt.Map(
                    {"list": pycrdt.Array([1, 2]), "text": pycrdt.Text("t")}
                )
            else:
                doc.get("array", type=pycrdt.Array).append(rng.choice([1, "x", [2]]))

    # -- sending -------------------------------------------------------------------------------

    async def _attack_ws(self, data: bytes) -> str:
        self._refs += 1
        ref = self._refs
        self.ws.send({"type": "update", "doc": DOC, "ref": ref, "update": data})
        while True:
            try:
                message = await self.ws.recv(TIMEOUT_S)
            except (AssertionError, TimeoutError) as exc:
                await self._alive()
                raise Violation(f"/ws attacker got no answer: {exc}") from None
            if message.get("ref") != ref:
                continue
            if message["type"] == "ack":
                return "ws accepted"
            if message["type"] == "error":
                return f"ws {message['code']}"

    async def _attack_yjs(self, data: bytes) -> str:
        url = f"{self.server.ws_url}/yjs/{DOC}"
        try:
            ws = await asyncio.wait_for(websocket_connect(url), TIMEOUT_S)
        except Exception as exc:
            await self._alive()
            raise Violation(f"/yjs connection failed: {exc}") from None
        try:
            ws.write_message(create_update_message(data), binary=True)
            # Sync step 1 after it: its step 2 comes once the update was handled.
            empty_sv = b"\x00"
            ws.write_message(
                bytes([YMessageType.SYNC, YSyncMessageType.SYNC_STEP1]) + write_message(empty_sv),
                binary=True,
            )
            return await self._yjs_outcome(ws)
        finally:
            ws.close()

    async def _yjs_outcome(self, ws: WebSocketClientConnection) -> str:
        while True:
            try:
                frame = await asyncio.wait_for(ws.read_message(), TIMEOUT_S)
            except TimeoutError:
                raise Violation("/yjs attacker got no answer") from None
            if frame is None:
                if ws.close_code is None:  # the connection broke: no close frame
                    await self._alive()
                return f"yjs closed {ws.close_code}"
            if isinstance(frame, bytes) and frame[:2] == bytes([0, 1]):
                return "yjs handled"

    async def _alive(self) -> None:
        if not self.server.alive:
            raise Violation(f"the server process died (exit code {self.server.process.returncode})")
        try:
            await self.http.fetch(f"{self.server.url}/healthz", request_timeout=TIMEOUT_S)
        except Exception as exc:
            # A process that is dying closes its sockets before it can be reaped.
            for _ in range(40):
                if not self.server.alive:
                    code = self.server.process.returncode
                    raise Violation(f"the server process died (exit code {code})") from None
                await asyncio.sleep(0.05)
            raise Violation(f"/healthz failed: {exc}") from None

    # -- invariants ---------------------------------------------------------------------------

    async def check(self) -> None:
        """Live document = rebuilt from the store = what honest peers hold."""
        self.report.checks += 1
        await self._alive()
        try:
            await self.remote.flushed(TIMEOUT_S)
            await self.bob.synced(TIMEOUT_S)
        except (TimeoutError, AssertionError) as exc:
            raise Violation(f"an honest peer's edits were not all stored: {exc!r}") from None
        except InvalidUpdate as exc:
            raise Violation(f"an honest peer was sent an update it cannot apply: {exc}") from None
        # The y-websocket peer's edits are applied (its sync answered) but have no
        # acks: they may still be on their way to the store.
        await self._writes_stored()
        live = await self._live_state()
        stored = await self._stored_state()
        try:
            live_print = integrated_fingerprint(replica_of(live).doc)
        except InvalidUpdate as exc:
            raise Violation(
                f"the live document holds what the strict reader refuses: {exc}"
            ) from None
        try:
            stored_print = integrated_fingerprint(replica_of(stored).doc)  # integrated only
        except InvalidUpdate as exc:
            raise Violation(
                f"the stored document holds what the strict reader refuses: {exc}"
            ) from None
        if live_print != stored_print:
            raise Violation("the live document differs from the one rebuilt from the store")
        expected = integrated_fingerprint(replica_of(live).doc)

        def holds_it(doc: pycrdt.Doc) -> bool:
            return integrated_fingerprint(doc) == expected

        for name, peer, doc in (
            ("the native peer", self.remote, self.remote.doc),
            ("the y-websocket peer", self.bob, self.bob.doc),
        ):
            try:
                await peer.wait_for(lambda doc=doc: holds_it(doc), TIMEOUT_S)
            except (TimeoutError, AssertionError):
                held = integrated_fingerprint(doc)
                raise Violation(
                    f"{name} does not hold the live document: state vector {held[0]} "
                    f"!= {expected[0]}, or deletions {held[1]} != {expected[1]}"
                ) from None
            except InvalidUpdate as exc:
                raise Violation(f"{name} was sent an update it cannot apply: {exc}") from None

    async def _writes_stored(self) -> None:
        deadline = asyncio.get_running_loop().time() + TIMEOUT_S
        while True:
            response = await self.http.fetch(
                f"{self.server.url}/healthz", request_timeout=TIMEOUT_S
            )
            if json.loads(response.body)["write_queue"] == 0:
                return
            if asyncio.get_running_loop().time() > deadline:
                raise Violation("the server's write queue did not drain")
            await asyncio.sleep(0.01)

    async def _live_state(self) -> bytes:
        peer = await RawPeer.connect(f"{self.server.ws_url}/ws")
        try:
            await peer.hello()
            return (await peer.subscribe(DOC))["update"]
        finally:
            peer.close()

    async def _stored_state(self) -> bytes:
        try:
            response = await self.http.fetch(
                f"{self.server.url}/api/documents/{self._doc_path}/state?waiting=no",
                request_timeout=TIMEOUT_S,
            )
        except HTTPClientError as exc:
            body = exc.response.body.decode(errors="replace") if exc.response else ""
            raise Violation(f"the state API answered {exc.code}: {body}") from None
        return response.body

    async def check_with_yjs(self) -> None:
        """Every stored update passes the strict reader, and Yjs in Node, replaying
        the log, holds what pycrdt holds."""
        await self.check()
        log = stored_log(self.store_path, DOC)
        for seq, update in log:
            try:
                check_update(update)
            except FormatError as exc:
                raise Violation(f"stored update {seq} fails the strict reader: {exc}") from None
        live = await self._live_state()
        result = await replay_in_node(
            {
                "live": [live],
                "alice": [self.remote.doc.get_update()],
                # What a y-websocket peer holds (what it was sent, and its own
                # edits), replayed by Yjs itself.
                "bob": list(self.bob.history),
            },
            each={"log": [update for _, update in log]},
        )
        if result is None:
            return  # no Node.js here: the check above is what remains
        for label, outcome in result.items():
            if not outcome["ok"]:
                where = f"update {outcome['index']}" if label in ("log", "bob") else "its state"
                raise Violation(f"Yjs cannot apply {label}'s {where}: {outcome['error']}")
        dumps = {label: result[label]["dump"] for label in ("live", "alice", "bob")}
        if len(set(dumps.values())) > 1:
            live_dump = dumps["live"]
            other = next(label for label, dump in dumps.items() if dump != live_dump)
            at = next(
                (
                    i
                    for i, (a, b) in enumerate(zip(live_dump, dumps[other], strict=False))
                    if a != b
                ),
                min(len(live_dump), len(dumps[other])),
            )
            raise Violation(
                f"Yjs holds another document for {other} than for the live state: "
                f"...{live_dump[max(0, at - 80) : at + 80]}... against "
                f"...{dumps[other][max(0, at - 80) : at + 80]}..."
            )


def replica_of(update: bytes) -> Replica:
    replica = Replica()
    replica.apply(update, bounded=False)
    return replica


def stored_log(path: Path, doc: str) -> list[tuple[int, bytes]]:
    """The document's update log, read from the SQLite file (read-only)."""
    connection = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    try:
        rows = connection.execute(
            "SELECT seq, data FROM updates WHERE doc = ? ORDER BY seq", (doc,)
        ).fetchall()
    finally:
        connection.close()
    return [(seq, bytes(data)) for seq, data in rows]


def node_available() -> bool:
    return shutil.which("node") is not None and (NODE_DIR / "node_modules" / "yjs").is_dir()


async def replay_in_node(
    docs: dict[str, list[bytes]], each: dict[str, list[bytes]] | None = None
) -> dict[str, Any] | None:
    """Run tests/node/replay.mjs; None when Node.js or the npm packages are missing."""
    if not node_available():
        return None

    def encoded(labels: dict[str, list[bytes]]) -> dict[str, list[str]]:
        return {k: [base64.b64encode(u).decode() for u in v] for k, v in labels.items()}

    payload = json.dumps({"docs": encoded(docs), "each": encoded(each or {})}).encode()
    process = await asyncio.create_subprocess_exec(
        "node",
        str(NODE_DIR / "replay.mjs"),
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(process.communicate(payload), 60)
    if process.returncode != 0:
        raise Violation(f"replay.mjs failed: {err.decode()[-500:]}")
    return json.loads(out)


async def fuzz_server(
    workdir: Path,
    *,
    seed: int,
    rounds: int,
    python_prelude: str | None = None,
    log: Callable[[str], None] = lambda line: None,
    check_every: int = 25,
) -> Report:
    """Start a server process on a fresh SQLite file in ``workdir`` and fuzz it."""
    store_path = workdir / "fuzz.db"
    async with server_process(
        f"sqlite:///{store_path}",
        "--snapshot-every-updates",
        "20",
        python_prelude=python_prelude,
    ) as server:
        fuzzer = Fuzzer(server, store_path, seed=seed, check_every=check_every, log=log)
        report = await fuzzer.run(rounds)
        if not server.alive and not report.violations:
            report.violations.append("the server process died")
        if report.violations:
            # What the server said of it: its warnings and errors, last first.
            lines = server.log_text().splitlines()
            noted = [line for line in lines if " WARNING " in line or " ERROR " in line]
            for line in noted[-15:]:
                log(f"server: {line}")
    return report


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="scripts/fuzz", description="Fuzz the update path of a collab server."
    )
    parser.add_argument("--seed", type=int, default=None, help="random seed (default: random)")
    parser.add_argument("--rounds", type=int, default=2000, help="attacks to send")
    parser.add_argument(
        "--check-every", type=int, default=25, help="rounds between invariant checks"
    )
    parser.add_argument("--quiet", action="store_true", help="print only the summary")
    args = parser.parse_args(argv)
    seed = args.seed if args.seed is not None else random.randrange(2**32)
    started = time.monotonic()
    print(f"fuzzing with seed {seed}, {args.rounds} rounds", flush=True)
    if not node_available():
        print("note: Node.js or tests/node/node_modules missing: no Yjs check", flush=True)
    with tempfile.TemporaryDirectory(prefix="collab-fuzz-") as workdir:
        report = asyncio.run(
            fuzz_server(
                Path(workdir),
                seed=seed,
                rounds=args.rounds,
                check_every=args.check_every,
                log=(lambda line: None) if args.quiet else (lambda line: print(line, flush=True)),
            )
        )
    print(f"{report.summary()} in {time.monotonic() - started:.0f}s")
    for violation in report.violations:
        print(f"VIOLATION {violation}")
    return 1 if report.violations else 0


if __name__ == "__main__":
    sys.exit(main())
