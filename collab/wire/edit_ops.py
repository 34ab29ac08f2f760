"""Edits described as JSON on a document's root types, for writers that do not
speak Yjs (``POST /api/documents/DOC/updates`` with a JSON body; docs/API.md):

    {"edits": [{"op": "text.insert", "root": "title", "index": 0, "text": "Hi"}, ...]}

:func:`parse` checks a body and returns its edits; :func:`apply` makes them on a
pycrdt document, each change a transaction of its own. Text positions are code
points (Python string positions; an embed counts one), converted to pycrdt's
UTF-8 positions.
A root must be of the kind the edit names, or not exist yet.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

import pycrdt

from collab.wire import prosemirror, yformat

MAX_EDITS = 1000  # edits in one request, at most
MAX_BODY_DEPTH = 2 * prosemirror.MAX_DEPTH + 10  # JSON nesting of a body (ProseMirror's)

KINDS = {  # an op's family: the root type it edits
    "text": yformat.TEXT,
    "map": yformat.MAP,
    "array": yformat.ARRAY,
    "prosemirror": yformat.XML,
}
FIELDS: dict[str, tuple[set[str], set[str]]] = {  # op: (required fields, optional fields)
    "text.insert": ({"text"}, {"index", "attributes"}),
    "text.delete": ({"index", "length"}, set()),
    "text.replace": ({"text"}, {"index", "length", "attributes"}),
    "text.format": ({"index", "length", "attributes"}, set()),
    "map.set": ({"key", "value"}, set()),
    "map.delete": ({"key"}, set()),
    "array.insert": ({"values"}, {"index"}),
    "array.delete": ({"index", "length"}, set()),
    "prosemirror.replace": ({"doc"}, {"from", "to"}),
}
ROOT_CLASSES = {
    yformat.TEXT: pycrdt.Text,
    yformat.MAP: pycrdt.Map,
    yformat.ARRAY: pycrdt.Array,
    yformat.XML: pycrdt.XmlFragment,
}


INT64_MIN, INT64_MAX = -(2**63), 2**63 - 1


class EditError(ValueError):
    """An edit that cannot be made: what is wrong, and which edit (by index)."""


@dataclass(frozen=True, slots=True)
class Edit:
    op: str
    root: str
    args: dict[str, Any]

    @property
    def kind(self) -> str:
        return KINDS[self.op.partition(".")[0]]


def _int64(text: str) -> int:
    # A Yjs document holds integers of 64 bits: a larger one makes pycrdt panic.
    value = int(text)
    if not INT64_MIN <= value <= INT64_MAX:
        raise ValueError(f"the integer {text[:24]}... does not fit in 64 bits")
    return value


def decode(body: bytes) -> Any:
    """A request body's JSON, nested within MAX_BODY_DEPTH, its integers within 64
    bits. Raises EditError."""
    try:
        value = json.loads(body, parse_constant=_refuse_constant, parse_int=_int64)
    except (ValueError, RecursionError) as exc:
        raise EditError(f"the body is not JSON: {exc}") from None
    if yformat.json_depth(value) > MAX_BODY_DEPTH:
        raise EditError(f"the body nests deeper than {MAX_BODY_DEPTH} levels")
    return value


def parse(body: bytes) -> list[Edit]:
    """The edits of a request body. Raises EditError."""
    return edits_of(decode(body))


def edits_of(value: Any) -> list[Edit]:
    """The edits of a decoded body (``{"edits": [...]}``). Raises EditError."""
    if not isinstance(value, dict) or not isinstance(value.get("edits"), list):
        raise EditError('the body is {"edits": [...]}')
    raw = value["edits"]
    if not raw:
        raise EditError("give at least one edit")
    if len(raw) > MAX_EDITS:
        raise EditError(f"at most {MAX_EDITS} edits a request, not {len(raw)}")
    edits = [_edit(item, i) for i, item in enumerate(raw)]
    kinds: dict[str, str] = {}
    for i, edit in enumerate(edits):
        if kinds.setdefault(edit.root, edit.kind) != edit.kind:
            raise EditError(f"edits[{i}]: root {edit.root!r} is edited as two kinds of type")
    return edits


def _refuse_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


def _edit(item: Any, i: int) -> Edit:
    where = f"edits[{i}]"
    if not isinstance(item, dict):
        raise EditError(f"{where}: an edit is an object")
    op = item.get("op")
    if op not in FIELDS:
        raise EditError(f"{where}: op must be one of {', '.join(FIELDS)}, not {op!r}")
    required, optional = FIELDS[op]
    default_root = "default" if op.startswith("prosemirror.") else None
    root = item.get("root", default_root)
    if not isinstance(root, str) or not root:
        raise EditError(f"{where}: give the root type's name (root)")
    args = {k: v for k, v in item.items() if k not in ("op", "root")}
    missing = required - args.keys()
    if missing:
        raise EditError(f"{where}: {op} needs {', '.join(sorted(missing))}")
    unknown = args.keys() - required - optional
    if unknown:
        raise EditError(f"{where}: {op} takes no {', '.join(sorted(unknown))}")
    for name in ("index", "length", "from", "to"):
        if name in args and (
            isinstance(args[name], bool) or not isinstance(args[name], int) or args[name] < 0
        ):
            raise EditError(f"{where}: {name} must be a whole number, 0 or more")
    if "text" in args and not isinstance(args["text"], str):
        raise EditError(f"{where}: text must be a string")
    if "attributes" in args and not isinstance(args["attributes"], dict):
        raise EditError(f"{where}: attributes must be an object")
    if "key" in args and (not isinstance(args["key"], str) or not args["key"]):
        raise EditError(f"{where}: key must be a non-empty string")
    if "values" in args and not isinstance(args["values"], list):
        raise EditError(f"{where}: values must be a list")
    if op == "prosemirror.replace":
        try:
            args["doc"] = prosemirror.content_of(args["doc"])
        except prosemirror.ProseMirrorError as exc:
            raise EditError(f"{where}: {exc}") from None
    return Edit(op, root, args)


def apply(doc: pycrdt.Doc, edits: list[Edit], kinds: dict[str, str]) -> None:
    """Make ``edits`` on ``doc``, each change (a value of an array's) a transaction
    of its own: pycrdt merges the items one transaction appends at a cost that
    grows with the square of their number (5,000 values inserted in one: 0.4 s
    and 600 MiB). ``kinds``: the document's root types
    (collab.wire.yformat.root_types of its state). Raises EditError, possibly
    after some edits were made: make them on a copy, and merge what its
    transactions make into one update."""
    for i, edit in enumerate(edits):
        if kinds.get(edit.root, edit.kind) != edit.kind:
            raise EditError(
                f"edits[{i}]: root {edit.root!r} is a {kinds[edit.root]}, not a {edit.kind}"
            )
    for i, edit in enumerate(edits):
        target = doc.get(edit.root, type=ROOT_CLASSES[edit.kind])
        try:
            _APPLY[edit.op](target, edit.args)
        except EditError as exc:
            raise EditError(f"edits[{i}] ({edit.op}): {exc}") from None
        except (ValueError, TypeError, IndexError, OverflowError) as exc:
            raise EditError(f"edits[{i}] ({edit.op}): {exc}") from None
        except BaseException as exc:
            # pycrdt turns a Rust panic into pyo3's PanicException, a BaseException
            # that nothing above would catch: refused as what it is, a bad value.
            if type(exc).__name__ != "PanicException":
                raise
            raise EditError(f"edits[{i}] ({edit.op}): a value pycrdt cannot hold") from None


def _offset(text: pycrdt.Text, index: int) -> int:
    """pycrdt's position of code point ``index`` of ``text`` (an embed: one)."""
    left, at = index, 0
    for content, _ in text.diff():
        if isinstance(content, str):
            if left <= len(content):
                return at + len(content[:left].encode("utf-8"))
            left -= len(content)
            at += len(content.encode("utf-8"))
        else:
            if left == 0:
                return at
            left -= 1
            at += 1
    if left == 0:
        return at
    raise EditError(f"index {index} is past the end of the text ({index - left} long)")


def _length(text: pycrdt.Text) -> int:
    return sum(len(c) if isinstance(c, str) else 1 for c, _ in text.diff())


def _range(text: pycrdt.Text, args: dict[str, Any], whole: bool = False) -> tuple[int, int]:
    index = args.get("index", 0)
    length = args.get("length", _length(text) - index if whole else 0)
    start = _offset(text, index)
    return start, _offset(text, index + length) - start


def _text_insert(text: pycrdt.Text, args: dict[str, Any]) -> None:
    at = _offset(text, args.get("index", _length(text)))
    text.insert(at, args["text"], args.get("attributes") or None)


def _text_delete(text: pycrdt.Text, args: dict[str, Any]) -> None:
    start, length = _range(text, args)
    if length:
        del text[start : start + length]


def _text_replace(text: pycrdt.Text, args: dict[str, Any]) -> None:
    start, length = _range(text, args, whole=True)
    if length:
        del text[start : start + length]
    if args["text"]:
        text.insert(start, args["text"], args.get("attributes") or None)


def _text_format(text: pycrdt.Text, args: dict[str, Any]) -> None:
    start, length = _range(text, args)
    if length:
        text.format(start, start + length, args["attributes"])


def _map_set(target: pycrdt.Map, args: dict[str, Any]) -> None:
    target[args["key"]] = args["value"]


def _map_delete(target: pycrdt.Map, args: dict[str, Any]) -> None:
    if args["key"] in target:
        del target[args["key"]]


def _array_insert(target: pycrdt.Array, args: dict[str, Any]) -> None:
    index = args.get("index", len(target))
    if index > len(target):
        raise EditError(f"index {index} is past the end of the array ({len(target)} long)")
    for offset, value in enumerate(args["values"]):
        target.insert(index + offset, value)


def _array_delete(target: pycrdt.Array, args: dict[str, Any]) -> None:
    index, length = args["index"], args["length"]
    if index + length > len(target):
        raise EditError(f"[{index}, {index + length}) is past the end of the array")
    if length:
        del target[index : index + length]


def _prosemirror_replace(target: pycrdt.XmlFragment, args: dict[str, Any]) -> None:
    try:
        prosemirror.replace(target, args["doc"], args.get("from", 0), args.get("to"))
    except prosemirror.ProseMirrorError as exc:
        raise EditError(str(exc)) from None


_APPLY: dict[str, Any] = {
    "text.insert": _text_insert,
    "text.delete": _text_delete,
    "text.replace": _text_replace,
    "text.format": _text_format,
    "map.set": _map_set,
    "map.delete": _map_delete,
    "array.insert": _array_insert,
    "array.delete": _array_delete,
    "prosemirror.replace": _prosemirror_replace,
}
