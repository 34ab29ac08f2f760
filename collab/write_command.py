"""``collab write NAME [FILE]``: one write over HTTP to a running server
(``POST /api/documents/NAME/updates``, collab.client.writes): a Yjs update, JSON
edits (``{"edits": [...]}``) or a ProseMirror document, read from FILE or stdin
(``-``). Prints the server's answer (``{"doc": ..., "seq": N}``) on stdout."""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from pathlib import Path
from typing import Any

from collab.client.writes import HttpWriter, WriteError

FORMATS = ("auto", "update", "edits", "prosemirror")


def add_command(commands: Any) -> None:
    write = commands.add_parser(
        "write",
        help="write to a document over HTTP: a Yjs update, JSON edits or ProseMirror JSON",
        description="Send one write to a running server. --format auto (the default): "
        'JSON with "edits" is edits, other JSON is ProseMirror JSON, anything else a '
        "binary Yjs update.",
    )
    write.add_argument("doc", help="the document (created if the token may write it)")
    write.add_argument("file", nargs="?", default="-", help="the write's file (default: stdin)")
    write.add_argument("--server", required=True, metavar="URL", help="e.g. http://host:8080")
    write.add_argument("--token", default=None, help="access token (when the server needs one)")
    write.add_argument(
        "--author", default=None, help="the author's name, on a server without tokens"
    )
    write.add_argument("--format", choices=FORMATS, default="auto")
    write.add_argument(
        "--root", default="default", help="ProseMirror: the XML root (Tiptap's: default)"
    )
    write.add_argument(
        "--from",
        dest="start",
        type=int,
        default=None,
        help="ProseMirror: replace top-level nodes from this index (default: 0)",
    )
    write.add_argument(
        "--to",
        dest="end",
        type=int,
        default=None,
        help="ProseMirror: up to this index, not included (default: the end)",
    )
    write.add_argument(
        "--key",
        default=None,
        help="Idempotency-Key (default: a new one, kept across this command's retries)",
    )


def run(args: argparse.Namespace) -> int:
    try:
        data = sys.stdin.buffer.read() if args.file == "-" else Path(args.file).read_bytes()
        seq = asyncio.run(_write(args, data))
    except (OSError, ValueError, WriteError) as exc:
        print(f"collab write: {exc}", file=sys.stderr)
        return 1
    print(json.dumps({"doc": args.doc, "seq": seq}))
    return 0


def _kind(data: bytes, chosen: str) -> tuple[str, Any]:
    if chosen == "update":
        return chosen, data
    try:
        value = json.loads(data)
    except ValueError:
        if chosen != "auto":
            raise ValueError(f"--format {chosen} needs JSON") from None
        return "update", data
    if chosen == "auto":
        chosen = "edits" if isinstance(value, dict) and "edits" in value else "prosemirror"
    return chosen, value


async def _write(args: argparse.Namespace, data: bytes) -> int:
    kind, value = _kind(data, args.format)
    async with HttpWriter(args.server, args.token, author=args.author) as writer:
        if kind == "update":
            return await writer.write_update(args.doc, value, key=args.key)
        if kind == "edits":
            edits = value.get("edits") if isinstance(value, dict) else value
            return await writer.edit(args.doc, edits, key=args.key)
        return await writer.write_prosemirror(
            args.doc, value, root=args.root, start=args.start, end=args.end, key=args.key
        )
