"""ProseMirror JSON <-> a Y.XmlFragment, mapped exactly as y-prosemirror maps
them (src/plugins/sync-plugin.js), so that Tiptap and every y-prosemirror
editor shows what is written here and what they write reads back here.

- The fragment's children are the ProseMirror document's content (the ``doc``
  node itself is not stored).
- A node is an XmlElement named by its type, with its attrs as attributes (a
  null attr is left out); its content goes in as children, each run of
  consecutive text nodes as one XmlText.
- A text node is a run of that XmlText, formatted with one attribute per mark:
  the mark's name, valued with the mark's attrs (``{}`` for a mark without
  attrs). Reading, a name with y-prosemirror's hash suffix (``comment--AbCd1234``,
  an overlapping mark) is the mark's name without it, and an attribute valued
  ``true`` is a mark without attrs (as Yjs text formatted by hand has).

Marks on non-text nodes are not kept (y-prosemirror keeps none). Numbers come
back as Yjs holds them: whole numbers as ints.
"""

from __future__ import annotations

import re
from typing import Any

import pycrdt

from collab.wire import yformat

MAX_DEPTH = 100  # nodes nested in nodes, at most
MAX_NODES = 100_000  # nodes and text runs in one document written, at most
_HASHED_MARK = re.compile(r"(.*)(--[a-zA-Z0-9+/=]{8})$")  # y-prosemirror's hashedMarkNameRegex


class ProseMirrorError(ValueError):
    """The JSON is not a ProseMirror document or node list this can write."""


def content_of(value: Any) -> list[dict[str, Any]]:
    """The nodes to write, from a ProseMirror document (``{"type": "doc",
    "content": [...]}``), one node, or a list of nodes; checked through (types,
    texts, marks, attrs, depth, count). Raises ProseMirrorError."""
    if isinstance(value, dict) and value.get("type") == "doc":
        nodes = value.get("content", [])
    elif isinstance(value, dict):
        nodes = [value]
    else:
        nodes = value
    if not isinstance(nodes, list):
        raise ProseMirrorError("give a ProseMirror document, a node, or a list of nodes")
    count = 0
    stack: list[tuple[Any, str, int]] = [(node, f"content[{i}]", 1) for i, node in enumerate(nodes)]
    while stack:
        node, where, depth = stack.pop()
        count += 1
        if count > MAX_NODES:
            raise ProseMirrorError(f"more than {MAX_NODES} nodes")
        if depth > MAX_DEPTH:
            raise ProseMirrorError(f"{where}: nodes nest deeper than {MAX_DEPTH}")
        _check_node(node, where)
        for i, child in enumerate(node.get("content", [])):
            stack.append((child, f"{where}.content[{i}]", depth + 1))
    return nodes


def _check_node(node: Any, where: str) -> None:
    if not isinstance(node, dict):
        raise ProseMirrorError(f"{where}: a node is an object")
    kind = node.get("type")
    if not isinstance(kind, str) or not kind:
        raise ProseMirrorError(f"{where}: a node needs a type (a non-empty string)")
    if kind == "text":
        text = node.get("text")
        if not isinstance(text, str) or not text:
            raise ProseMirrorError(f"{where}: a text node needs a non-empty text")
        marks = node.get("marks", [])
        if not isinstance(marks, list):
            raise ProseMirrorError(f"{where}: marks are a list")
        for j, mark in enumerate(marks):
            if not isinstance(mark, dict) or not isinstance(mark.get("type"), str):
                raise ProseMirrorError(f"{where}.marks[{j}]: a mark is an object with a type")
            if not isinstance(mark.get("attrs", {}), dict):
                raise ProseMirrorError(f"{where}.marks[{j}]: attrs are an object")
        return
    if kind == "doc":
        raise ProseMirrorError(f"{where}: a doc node holds the document; it cannot be inside it")
    if not isinstance(node.get("attrs", {}), dict):
        raise ProseMirrorError(f"{where}: attrs are an object")
    if not isinstance(node.get("content", []), list):
        raise ProseMirrorError(f"{where}: content is a list")


def replace(
    fragment: pycrdt.XmlFragment | pycrdt.XmlElement,
    nodes: list[dict[str, Any]],
    start: int = 0,
    end: int | None = None,
) -> None:
    """Replace the fragment's top-level children ``[start, end)`` (default: all of
    them) with ``nodes`` (checked by :func:`content_of`), in the document's
    current transaction."""
    count = len(fragment.children)
    end = count if end is None else end
    if not 0 <= start <= end <= count:
        raise ProseMirrorError(
            f"the range [{start}, {end}) is not within the document's {count} top-level nodes"
        )
    if end > start:
        del fragment.children[start:end]
    _insert(fragment, start, nodes)


def _insert(parent: pycrdt.XmlFragment | pycrdt.XmlElement, at: int, nodes: list[Any]) -> None:
    """Insert ``nodes`` as children of ``parent`` from index ``at``: y-prosemirror's
    createTypeFromElementNode and createTypeFromTextNodes (normalizePNodeContent)."""
    i = 0
    while i < len(nodes):
        node = nodes[i]
        if node["type"] == "text":
            run = []
            while i < len(nodes) and nodes[i]["type"] == "text":
                run.append(nodes[i])
                i += 1
            text = parent.children.insert(at, pycrdt.XmlText())
            offset = 0
            for piece in run:
                text.insert(offset, piece["text"], _attributes(piece.get("marks", [])))
                offset += len(piece["text"].encode("utf-8"))
        else:
            element = parent.children.insert(at, pycrdt.XmlElement(node["type"]))
            for key, value in node.get("attrs", {}).items():
                if value is not None and key != "ychange":
                    element.attributes[key] = value
            _insert(element, 0, node.get("content", []))
            i += 1
        at += 1


def _attributes(marks: list[dict[str, Any]]) -> dict[str, Any] | None:
    # y-prosemirror's marksToAttributes: each mark's attrs, {} for none.
    return {mark["type"]: dict(mark.get("attrs") or {}) for mark in marks} or None


def read(fragment: pycrdt.XmlFragment) -> dict[str, Any]:
    """The ProseMirror document the fragment holds, as an editor shows it."""
    return {"type": "doc", "content": _children(fragment)}


def _children(parent: pycrdt.XmlFragment | pycrdt.XmlElement) -> list[dict[str, Any]]:
    nodes: list[dict[str, Any]] = []
    for child in parent.children:
        if isinstance(child, pycrdt.XmlText):
            for content, attrs in child.diff():
                if not isinstance(content, str):
                    continue  # an embed: y-prosemirror would make no text node of it
                node: dict[str, Any] = {"type": "text", "text": content}
                marks = [_mark(key, value) for key, value in (attrs or {}).items()]
                if marks:
                    node["marks"] = marks
                nodes.append(node)
        elif isinstance(child, pycrdt.XmlElement):
            node = {"type": child.tag}
            attrs = {key: _number(value) for key, value in child.attributes}
            if attrs:
                node["attrs"] = attrs
            content = _children(child)
            if content:
                node["content"] = content
            nodes.append(node)
    return nodes


def _mark(key: str, value: Any) -> dict[str, Any]:
    hashed = _HASHED_MARK.match(key)
    mark: dict[str, Any] = {"type": hashed.group(1) if hashed else key}
    if isinstance(value, dict) and value:
        mark["attrs"] = _number(value)
    return mark


def _number(value: Any) -> Any:
    """Whole floats as ints, through lists and objects (Yjs numbers are doubles)."""
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(value, dict):
        return {k: _number(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_number(v) for v in value]
    return value


def from_state(state: bytes, root: str) -> dict[str, Any]:
    """The ProseMirror document of root ``root`` of a document's state (one Yjs
    update); an empty document when the root holds nothing. Raises
    ProseMirrorError when the root is not an XML fragment, FormatError."""
    kind = yformat.root_types(state, unknown_as=None).get(root, yformat.XML)
    if kind != yformat.XML:
        raise ProseMirrorError(f"root {root!r} is a {kind}, not an XML fragment (rich text)")
    doc = pycrdt.Doc()
    doc.apply_update(state)
    return read(doc.get(root, type=pycrdt.XmlFragment))
