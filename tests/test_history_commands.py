"""The history commands against a store URL and against a running server: history,
show, replay, export and import (whole histories, refused when damaged). They run
in-process through collab's command line entry, and as a user runs them
(``python -m collab ...`` in a process) where they take their environment or working
directory (tests/cli.py)."""

from __future__ import annotations

import base64
import json
import os
from pathlib import Path

import pycrdt
import pytest

from collab.core import archive
from collab.core.history import state_at
from collab.errors import StoreError
from collab.store.memory import MemoryStore
from collab.store.sqlite import SQLiteStore
from tests.cli import collab_in_process, collab_process

DOC = "team/notes"


async def collab(
    *args: str, ok: bool = True, cwd: Path | None = None, env: dict[str, str] | None = None
) -> tuple[int, str, str]:
    """``collab ARGS``: in-process, or given a working directory or an environment of
    its own, as ``python -m collab`` in a process (tests/cli.py)."""
    if cwd is None and env is None:
        code, out, err = await collab_in_process(*args)
    else:
        code, out, err = await collab_process(*args, cwd=cwd, env=env)
    if ok:
        assert code == 0, err
    return code, out, err


@pytest.fixture
def store_url(settings) -> str:
    return settings.store_url


async def write_history(connect) -> list[str]:
    """Three versions of a text; returns the text after each update."""
    client = await connect()
    remote = await client.subscribe(DOC)
    text = remote.doc.get("text", type=pycrdt.Text)
    versions = []
    for word in ("alpha ", "beta ", "gamma"):
        text.insert(len(text), word)
        await remote.flushed()
        versions.append(str(text))
    return versions


async def test_history_lists_updates_and_a_timeline(server, connect, store_url):
    await write_history(connect)

    _, out, _ = await collab("history", DOC, "--store-url", store_url)
    lines = out.splitlines()
    assert [line.split("\t")[0] for line in lines] == ["1", "2", "3"]
    assert all(line.endswith(" bytes") for line in lines)
    _, grouped, _ = await collab("history", DOC, "--group", "--store-url", store_url)
    assert grouped.splitlines()[0].startswith("1-3\t")
    _, limited, _ = await collab(
        "history", DOC, "--limit", "2", "--after", "1", "--store-url", store_url
    )
    assert [line.split("\t")[0] for line in limited.splitlines()] == ["2", "3"]


async def test_name_gives_a_version_a_name_that_history_shows_by_store_or_server(
    server, connect, store_url
):
    await write_history(connect)
    through = ("--server", f"http://127.0.0.1:{server.port}")

    _, out, _ = await collab("name", DOC, "2", "Sent to legal", "--store-url", store_url)
    assert out == "version 2 of team/notes is named 'Sent to legal'\n"
    await collab("name", DOC, "3", "Final", *through)

    _, plain, _ = await collab("history", DOC, "--store-url", store_url)
    assert plain.splitlines()[1].endswith(" bytes\t[2: Sent to legal]")
    assert plain.splitlines()[0].endswith(" bytes")
    _, grouped, _ = await collab("history", DOC, "--group", *through)
    assert grouped.splitlines()[0].endswith("\t[2: Sent to legal]\t[3: Final]")
    _, listed, _ = await collab("history", DOC, "--names", "--store-url", store_url)
    assert [line.split("\t")[::3] for line in listed.splitlines()] == [
        ["2", "Sent to legal"],
        ["3", "Final"],
    ]

    await collab("name", DOC, "3", "--remove", *through)
    _, listed, _ = await collab("history", DOC, "--names", *through)
    assert [line.split("\t")[0] for line in listed.splitlines()] == ["2"]
    code, _, err = await collab("name", DOC, "9", "Later", "--store-url", store_url, ok=False)
    assert code == 1 and "past the document's latest version" in err
    code, _, err = await collab("name", DOC, "3", "--remove", *through, ok=False)
    assert code == 1 and "has no name" in err
    code, _, err = await collab("name", DOC, "3", ok=False)
    assert code == 2 and "give a name, or --remove" in err


async def test_show_prints_a_version_by_seq_or_time_as_text_or_json(server, connect, store_url):
    versions = await write_history(connect)
    url = f"http://127.0.0.1:{server.port}"

    _, text, _ = await collab("show", DOC, "--at", "2", "--store-url", store_url)
    assert versions[1] in text and "## text (text)" in text
    _, body, _ = await collab("show", DOC, "--format", "json", "--server", url)
    assert json.loads(body)["content"] == {"text": versions[2]}
    _, early, _ = await collab(
        "show", DOC, "--at", "2000-01-01T00:00:00Z", "--format", "json", "--store-url", store_url
    )
    assert json.loads(early)["seq"] == 0
    code, _, err = await collab("show", "missing", "--store-url", store_url, ok=False)
    assert code == 1 and "no document named 'missing'" in err
    code, _, err = await collab("show", DOC, "--at", "9", "--server", url, ok=False)
    assert code == 1 and "past the document's latest version" in err


async def test_replay_prints_the_text_as_it_evolved(server, connect, store_url):
    versions = await write_history(connect)
    url = f"http://127.0.0.1:{server.port}"
    for where in (["--store-url", store_url], ["--server", url]):
        _, out, _ = await collab("replay", DOC, "--from", "1", *where)
        texts = [line for line in out.splitlines() if not line.startswith("---")]
        assert texts == versions  # seq 1 (the start), then 2 and 3


async def test_export_then_import_into_an_empty_store_keeps_every_version(
    server, connect, store_url, tmp_path: Path
):
    client = await connect()
    remote = await client.subscribe(DOC)
    text = remote.doc.get("text", type=pycrdt.Text)
    items = remote.doc.get("items", type=pycrdt.Array)
    for i in range(40):
        text.insert(len(text) if i % 3 else 0, f"{i} ")
        items.append(i)
        if i % 7 == 0:
            del text[0:1]
        await remote.flushed()
    file = tmp_path / "notes.jsonl"
    _, out, _ = await collab("export", DOC, str(file), "--store-url", store_url)
    assert "80 updates" in out or "updates" in out
    target = tmp_path / "restored.db"

    # Snapshots every 10 updates (thinned) and checkpoints, written by the import.
    _, out, _ = await collab(
        "import",
        str(file),
        "--store-url",
        f"sqlite:///{target}",
        env={**os.environ, "COLLAB_SNAPSHOT_EVERY_UPDATES": "10"},
    )

    assert f"imported {DOC}" in out
    source, copy = SQLiteStore(Path(store_url.removeprefix("sqlite:///"))), SQLiteStore(target)
    await source.open()
    await copy.open()
    try:
        head = (await source.get_document(DOC)).head_seq
        assert (await copy.get_document(DOC)).head_seq == head
        assert [c.seq for c in await copy.checkpoints(DOC)] == list(range(10, head + 1, 10))
        assert len(await copy.snapshot_seqs(DOC)) > 3  # the newest three and older ones
        for seq in range(head + 1):
            assert (await state_at(copy, DOC, seq))[1] == (await state_at(source, DOC, seq))[1]
        originals = await source.read_updates(DOC)
        imported = await copy.read_updates(DOC)
        assert [(r.time_s, r.author.user, r.author.client) for r in imported] == [
            (r.time_s, r.author.user, r.author.client) for r in originals
        ]
    finally:
        await source.close()
        await copy.close()
    # Once more: the name is taken.
    code, _, err = await collab("import", str(file), "--store-url", f"sqlite:///{target}", ok=False)
    assert code == 1 and "exists" in err


async def test_export_all_and_import_through_a_server(server, connect, store_url, tmp_path):
    await write_history(connect)
    other = await (await connect()).subscribe("other")
    other.doc.get("text", type=pycrdt.Text).insert(0, "x")
    await other.flushed()
    url = f"http://127.0.0.1:{server.port}"

    _, out, _ = await collab("export", "--all", str(tmp_path / "backup"), "--server", url)

    assert "exported 2 documents" in out
    files = sorted(p.name for p in (tmp_path / "backup").iterdir())
    assert files == ["other.collab.jsonl", "team%2Fnotes.collab.jsonl"]
    backup = tmp_path / "backup" / "team%2Fnotes.collab.jsonl"
    _, out, _ = await collab("import", str(backup), "--as", "copy", "--server", url)
    assert "imported copy: 3 updates" in out
    _, shown, _ = await collab("show", "copy", "--format", "json", "--server", url)
    assert json.loads(shown)["content"] == {"text": "alpha beta gamma"}


@pytest.mark.parametrize(
    ("damage", "message"),
    [
        (lambda lines: lines[:-1], "truncated"),
        (lambda lines: [lines[0], lines[2], lines[1], *lines[3:]], "seq 2 where 1"),
        (lambda lines: [lines[0], lines[1], b"", *lines[2:]], "not JSON"),
        (lambda lines: [*lines, b'{"seq": 9}'], "content after the end"),
        (lambda lines: [lines[0].replace(b'"version":1', b'"version":7'), *lines[1:]], "version 7"),
        (lambda lines: [lines[0], _with_time(lines[1], 1e20), *lines[2:]], "between 1970 and 9999"),
        (
            lambda lines: [lines[0], _with_time(lines[1], "NaN"), *lines[2:]],
            "between 1970 and 9999",
        ),
    ],
)
async def test_a_damaged_export_is_refused_and_stores_nothing(
    server, connect, store_url, tmp_path, damage, message
):
    await write_history(connect)
    file = tmp_path / "notes.jsonl"
    await collab("export", DOC, str(file), "--store-url", store_url)
    lines = file.read_bytes().splitlines()
    (tmp_path / "bad.jsonl").write_bytes(b"\n".join(damage(lines)) + b"\n")
    target = tmp_path / "target.db"

    code, _, err = await collab(
        "import", str(tmp_path / "bad.jsonl"), "--store-url", f"sqlite:///{target}", ok=False
    )

    assert code == 1 and message in err, err
    store = SQLiteStore(target)
    await store.open()
    try:
        assert await store.list_documents() == []
    finally:
        await store.close()


async def test_an_altered_update_is_refused_by_its_digest_or_the_strict_reader(
    server, connect, store_url, tmp_path
):
    await write_history(connect)
    file = tmp_path / "notes.jsonl"
    await collab("export", DOC, str(file), "--store-url", store_url)
    lines = file.read_bytes().splitlines()
    entry = json.loads(lines[2])
    valid = pycrdt.Doc()
    valid.get("text", type=pycrdt.Text).insert(0, "forged")
    forged = valid.get_update()  # a valid update, but not the one exported: the digest
    for data, message in ((forged, "digest"), (b"\xff\xff\xff", "not a valid Yjs update")):
        entry["update"] = base64.b64encode(data).decode()
        altered = [lines[0], lines[1], json.dumps(entry).encode(), *lines[3:]]
        (tmp_path / "bad.jsonl").write_bytes(b"\n".join(altered) + b"\n")
        code, _, err = await collab(
            "import",
            str(tmp_path / "bad.jsonl"),
            "--store-url",
            f"sqlite:///{tmp_path}/t.db",
            ok=False,
        )
        assert code == 1 and message in err, err


def _with_time(line: bytes, time_s: object) -> bytes:
    entry = json.loads(line)
    entry["time_s"] = float(time_s) if isinstance(time_s, str) else time_s
    return json.dumps(entry).encode()  # NaN is written as NaN, which JSON readers take


async def test_an_import_the_store_fails_part_way_leaves_no_half_document(
    server, connect, store_url, tmp_path
):
    client = await connect()
    remote = await client.subscribe(DOC)
    text = remote.doc.get("text", type=pycrdt.Text)
    for i in range(2500):  # three batches of the import
        text.insert(len(text), "x")
        if i % 500 == 499:
            await remote.flushed()
    await remote.flushed()
    file = tmp_path / "notes.jsonl"
    await collab("export", DOC, str(file), "--store-url", store_url)

    class FullDisk(MemoryStore):
        appends = 0

        async def append(self, updates):
            self.appends += 1
            if self.appends == 2:
                raise StoreError("sqlite: database or disk is full")
            return await super().append(updates)

    target = FullDisk()
    await target.open()
    with pytest.raises(StoreError, match="disk is full"):
        await archive.import_document(target, file.read_bytes().splitlines())
    assert await target.get_document(DOC) is None  # the first batch was taken back
    assert await target.list_documents() == []


@pytest.mark.parametrize(
    "command",
    [
        ["history", DOC],
        ["show", DOC],
        ["replay", DOC],
        ["export", DOC, "out.jsonl"],
        ["check"],
    ],
    ids=lambda command: command[0],
)
async def test_a_read_command_run_where_there_is_no_store_says_so_and_creates_none(
    tmp_path, command
):
    env = {k: v for k, v in os.environ.items() if not k.startswith("COLLAB_")}
    code, _, err = await collab(*command, ok=False, cwd=tmp_path, env=env)
    assert code == 1
    assert f"no store at {tmp_path / 'data' / 'collab.db'}" in err
    assert "Traceback" not in err
    assert list(tmp_path.iterdir()) == []  # no ./data/collab.db, no export file


async def test_a_read_command_refuses_a_file_that_is_not_a_store(tmp_path):
    empty = tmp_path / "empty.db"
    empty.touch()
    code, _, err = await collab("history", DOC, "--store-url", f"sqlite:///{empty}", ok=False)
    assert code == 1 and "is not a collab store" in err
    assert empty.stat().st_size == 0
