"""``collab history``, ``show``, ``replay``, ``export``, ``import`` and ``name``: a document's
history from the command line, against a store URL or a running server
(collab.sources). Progress goes to stderr (tqdm, shown on a terminal only);
results go to stdout.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime
import hashlib
import json
import sys
import urllib.parse
from pathlib import Path
from typing import Any, TextIO

import pycrdt
from tqdm import tqdm

from collab.config import Settings
from collab.core import archive, render
from collab.errors import CollabError, StoreError
from collab.sources import PAGE, ServerSource, Source, SourceError, StoreSource
from collab.wire import crdt, yformat

MAX_FILE_NAME = 200  # bytes of a file name, before its suffix (255 is the usual limit)
MAX_PAUSE_S = 2.0  # of a replay: long pauses in the history are shortened to this


def add_commands(commands: Any) -> None:
    def source_options(parser: argparse.ArgumentParser) -> None:
        parser.add_argument("--store-url", default=None, help="(env COLLAB_STORE_URL)")
        parser.add_argument(
            "--server", default=None, metavar="URL", help="a running server, e.g. http://host:8080"
        )
        parser.add_argument("--token", default=None, help="access token for --server")

    history = commands.add_parser("history", help="list a document's updates or changes")
    history.add_argument("doc")
    history.add_argument(
        "--group", action="store_true", help="a timeline of changes instead of every update"
    )
    history.add_argument("--after", type=int, default=0, help="start after this seq")
    history.add_argument("--limit", type=int, default=None, help="at most this many lines")
    history.add_argument(
        "--names", action="store_true", help="only the named versions: seq, time, user, name"
    )
    source_options(history)

    name = commands.add_parser(
        "name", help='name a version of a document ("Sent to legal"), or take its name away'
    )
    name.add_argument("doc")
    name.add_argument("seq", type=int, help="the version (a seq: see collab history)")
    name.add_argument("name", nargs="?", default=None, help="the name to give it")
    name.add_argument("--remove", action="store_true", help="take the version's name away")
    source_options(name)

    show = commands.add_parser("show", help="print a document's content, now or at a version")
    show.add_argument("doc")
    show.add_argument("--at", default=None, help="a seq, or an ISO 8601 time")
    show.add_argument("--format", choices=("json", "text"), default="text")
    source_options(show)

    replay = commands.add_parser("replay", help="print a document's text as it evolved")
    replay.add_argument("doc")
    replay.add_argument("--from", dest="from_seq", type=int, default=0, help="start at this seq")
    replay.add_argument(
        "--speed",
        type=float,
        default=0.0,
        help="play back at this multiple of real time (0, the default: no pauses)",
    )
    source_options(replay)

    export = commands.add_parser(
        "export", help="write a document's whole history to a file (docs/EXPORT.md)"
    )
    export.add_argument("doc", nargs="?", help="the document (or --all)")
    export.add_argument("file", help="the file, or with --all the folder")
    export.add_argument("--all", action="store_true", help="every document, one file each")
    source_options(export)

    imports = commands.add_parser("import", help="create a document from an export file")
    imports.add_argument("file")
    imports.add_argument("--as", dest="name", default=None, help="a new name for it")
    source_options(imports)


def run(args: argparse.Namespace) -> int:
    if args.command == "name" and args.remove == (args.name is not None):
        print("collab name: give a name, or --remove", file=sys.stderr)
        return 2
    try:
        return asyncio.run(_run(args))
    except (SourceError, archive.ArchiveError, StoreError, OSError) as exc:
        print(f"collab {args.command}: {exc}", file=sys.stderr)
        return 1


async def _run(args: argparse.Namespace) -> int:
    source = _source(args)
    await source.open()
    try:
        command = {
            "history": _history,
            "show": _show,
            "replay": _replay,
            "export": _export,
            "import": _import,
            "name": _name,
        }[args.command]
        return await command(source, args, sys.stdout)
    finally:
        await source.close()


def _source(args: argparse.Namespace) -> Source:
    if args.server:
        return ServerSource(args.server, args.token)
    settings = Settings.from_env()
    url = args.store_url or settings.store_url
    return StoreSource(url, settings, create=args.command == "import")


def _time(time_s: float | None) -> str:
    if time_s is None:
        return "-"
    moment = datetime.datetime.fromtimestamp(time_s, tz=datetime.UTC)
    return moment.isoformat(timespec="seconds")


async def _name(source: Source, args: argparse.Namespace, out: TextIO) -> int:
    if args.remove:
        await source.unname_version(args.doc, args.seq)
        out.write(f"version {args.seq} of {args.doc} has no name now\n")
        return 0
    named = await source.name_version(args.doc, args.seq, args.name)
    out.write(f"version {named['seq']} of {args.doc} is named {named['name']!r}\n")
    return 0


async def _history(source: Source, args: argparse.Namespace, out: TextIO) -> int:
    await source.document(args.doc)  # an unknown document is an error, not an empty list
    # Named versions are listed by themselves with --names, and otherwise at the end
    # of the line of their update (or of the change they end in).
    named = {n["seq"]: n for n in await source.version_names(args.doc)}
    if args.names:
        for n in named.values():
            out.write(f"{n['seq']}\t{_time(n['time_s'])}\t{n['user'] or '-'}\t{n['name']}\n")
        return 0

    def names_in(first: int, last: int) -> str:
        found = [f"{seq}: {n['name']}" for seq, n in named.items() if first <= seq <= last]
        return "".join(f"\t[{f}]" for f in found)

    remaining = args.limit
    after = args.after
    while remaining is None or remaining > 0:
        page_size = PAGE if remaining is None else min(PAGE, remaining)
        if args.group:
            changes = await source.changes(args.doc, after, page_size)
            for c in changes:
                out.write(
                    f"{c['first_seq']}-{c['last_seq']}\t{_time(c['first_time_s'])}"
                    f"\t{_time(c['last_time_s'])}\t{c['user'] or '-'}"
                    f"\t{c['updates']} updates\t{c['bytes']} bytes"
                    f"{names_in(c['first_seq'], c['last_seq'])}\n"
                )
            count, last = len(changes), changes[-1]["last_seq"] if changes else after
        else:
            records = await source.updates(args.doc, after, page_size)
            for r in records:
                out.write(
                    f"{r.seq}\t{_time(r.time_s)}\t{r.author.user or '-'}"
                    f"\t{r.author.client or '-'}\t{len(r.data)} bytes{names_in(r.seq, r.seq)}\n"
                )
            count, last = len(records), records[-1].seq if records else after
        if count < page_size:
            break
        after = last
        if remaining is not None:
            remaining -= count
    return 0


async def _show(source: Source, args: argparse.Namespace, out: TextIO) -> int:
    seq: int | None = None
    at: str | None = None
    if args.at is not None:
        if args.at.isdigit():
            seq = int(args.at)
        else:
            at = args.at
    body = await source.version(args.doc, seq=seq, at=at)
    if args.format == "json":
        out.write(json.dumps(body, ensure_ascii=False, indent=2) + "\n")
        return 0
    out.write(f"# {args.doc} at seq {body['seq']} ({_time(body.get('time_s'))})\n")
    for name, value in body["content"].items():
        kind = body["types"].get(name)
        out.write(f"\n## {name} ({kind})\n")
        if isinstance(value, str):
            out.write(value + "\n")
        else:
            out.write(json.dumps(value, ensure_ascii=False, indent=2) + "\n")
    return 0


async def _replay(source: Source, args: argparse.Namespace, out: TextIO) -> int:
    info = await source.document(args.doc)
    if args.from_seq > info.head_seq:
        raise SourceError(f"seq {args.from_seq} is past the latest version ({info.head_seq})")
    final = await source.state(args.doc, info.head_seq)
    try:
        kinds = {
            name: kind
            for name, kind in yformat.root_types(final).items()
            if kind in (yformat.TEXT, yformat.XML)
        }
    except yformat.FormatError as exc:
        raise SourceError(f"the document's state cannot be read: {exc}") from None
    doc = pycrdt.Doc()
    _apply(doc, await source.state(args.doc, args.from_seq), args.from_seq)
    roots = render.roots(doc, kinds)

    def show(seq: int, header: str) -> None:
        out.write(f"--- seq {seq} {header}\n")
        for name, root in roots.items():
            if len(roots) > 1:
                out.write(f"[{name}] ")
            out.write(str(root) + "\n")
        out.flush()

    show(args.from_seq, "(start)")
    after, previous = args.from_seq, None
    while after < info.head_seq:
        records = await source.updates(args.doc, after, PAGE)
        if not records:
            break
        for record in records:
            if args.speed > 0 and previous is not None:
                pause = (record.time_s - previous) / args.speed
                await asyncio.sleep(min(max(pause, 0.0), MAX_PAUSE_S))
            previous = record.time_s
            _apply(doc, record.data, record.seq)
            show(record.seq, f"{_time(record.time_s)} {record.author.user or '-'}")
        after = records[-1].seq
    return 0


def _file_name(doc: str) -> str:
    """A file name for a document's export: its name percent-encoded, shortened
    with a digest where that is too long for a file system."""
    quoted = urllib.parse.quote(doc, safe="")
    if len(quoted) > MAX_FILE_NAME:
        digest = hashlib.sha256(doc.encode()).hexdigest()[:16]
        quoted = f"{quoted[: MAX_FILE_NAME - 17]}-{digest}"
    return quoted + ".collab.jsonl"


def _apply(doc: pycrdt.Doc, update: bytes, seq: int) -> None:
    try:
        crdt.apply_logged(doc, update)
    except CollabError as exc:
        raise SourceError(f"the update at seq {seq} cannot be applied: {exc.message}") from None


async def _export(source: Source, args: argparse.Namespace, out: TextIO) -> int:
    if args.all:
        folder = Path(args.file)
        await asyncio.to_thread(folder.mkdir, parents=True, exist_ok=True)
        names = await source.names()
        failed = 0
        for name in tqdm(names, desc="documents", unit="doc", disable=None, file=sys.stderr):
            try:
                await _export_one(source, name, folder / _file_name(name), quiet=True)
            except (SourceError, archive.ArchiveError, StoreError) as exc:
                failed += 1  # reported, and the others are still exported
                print(f"collab export: {name!r}: {exc}", file=sys.stderr)
        out.write(f"exported {len(names) - failed} documents to {folder}\n")
        if failed:
            out.write(f"{failed} could not be exported (see above)\n")
        return 1 if failed else 0
    if not args.doc:
        raise SourceError("name the document to export, or give --all")
    count = await _export_one(source, args.doc, Path(args.file), quiet=False)
    out.write(f"exported {args.doc}: {count} updates to {args.file}\n")
    return 0


async def _export_one(source: Source, doc: str, file: Path, *, quiet: bool) -> int:
    info = await source.document(doc)
    bar = tqdm(
        total=info.head_seq,
        desc=doc,
        unit="update",
        disable=True if quiet else None,
        file=sys.stderr,
    )

    async def read_page(after: int) -> Any:
        return await source.updates(doc, after, PAGE)

    def progress(seq: int) -> None:
        bar.update(seq - bar.n)

    partial = file.with_name(file.name + ".partial")  # renamed once whole
    output = await asyncio.to_thread(partial.open, "wb")
    try:
        with bar, output:
            pending: list[bytes] = []
            lines = archive.export_lines(
                doc, info.epoch, info.head_seq, read_page, progress=progress
            )
            async for line in lines:
                pending.append(line)
                if len(pending) >= PAGE:
                    await asyncio.to_thread(output.writelines, pending)
                    pending = []
            await asyncio.to_thread(output.writelines, pending)
        await asyncio.to_thread(partial.replace, file)
    finally:
        await asyncio.to_thread(partial.unlink, missing_ok=True)
    return info.head_seq


async def _import(source: Source, args: argparse.Namespace, out: TextIO) -> int:
    lines = (await asyncio.to_thread(Path(args.file).read_bytes)).splitlines()
    bar = tqdm(
        total=max(len(lines) - 2, 0), desc="import", unit="update", disable=None, file=sys.stderr
    )
    with bar:
        name, count = await source.import_file(args.name, lines)
        bar.update(count - bar.n)
    out.write(f"imported {name}: {count} updates\n")
    return 0
