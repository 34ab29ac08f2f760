"""A document's content as JSON, for people and tools that are not editors.

Each root type by name: a Text as a string, a Map as an object, an Array as a
list, an XmlFragment as XML text, nested shared types the same way, recursively.
The root types are read from the document's own structs
(:func:`collab.wire.yformat.root_types`): a Yjs update names each root but not
its kind, and nobody has to say which roots a document has.
"""

from __future__ import annotations

import base64
import math
from typing import Any

import pycrdt

from collab.wire import yformat
from collab.wire.edits import ROOT_CLASSES

MAX_SAFE_INTEGER = 2**53  # beyond it a JavaScript number is no longer an exact integer


def roots(doc: pycrdt.Doc, kinds: dict[str, str]) -> dict[str, Any]:
    """The root types of ``doc``, by name, as the shared types ``kinds`` names."""
    return {name: doc.get(name, type=ROOT_CLASSES[kind]) for name, kind in sorted(kinds.items())}


def content(state: bytes) -> tuple[dict[str, str], dict[str, Any]]:
    """``(kinds, values)``: each root's kind and its content as JSON values, from
    a document's state as one update. CPU-bound: run it in an executor. Raises
    FormatError."""
    kinds = yformat.root_types(state)
    doc = pycrdt.Doc()
    doc.apply_update(state)
    typed = roots(doc, kinds)
    return dict(sorted(kinds.items())), {name: to_json(value) for name, value in typed.items()}


def to_json(value: Any) -> Any:
    """A shared type or a plain value as JSON: bytes as ``{"base64": ...}``,
    integral numbers as integers (Yjs numbers are JavaScript numbers)."""
    if isinstance(value, pycrdt.Text):
        return str(value)
    if isinstance(value, (pycrdt.XmlFragment, pycrdt.XmlElement, pycrdt.XmlText)):
        return str(value)
    if isinstance(value, pycrdt.Array):
        return [to_json(item) for item in value]
    if isinstance(value, pycrdt.Map):
        return {key: to_json(item) for key, item in value.items()}
    if isinstance(value, pycrdt.Doc):
        return {"subdocument": str(value.guid)}
    if isinstance(value, dict):
        return {str(key): to_json(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [to_json(item) for item in value]
    if isinstance(value, (bytes, bytearray)):
        return {"base64": base64.b64encode(bytes(value)).decode()}
    if isinstance(value, float):
        if not math.isfinite(value):
            return str(value)  # NaN and infinities: JSON has no number for them
        if value.is_integer() and abs(value) <= MAX_SAFE_INTEGER:
            return int(value)
    return value
