"""Extensions: how an application takes part in collab, in Python.

An extension is any object with some of the hooks below, each an ``async def``;
every hook is optional (subclass :class:`Extension` for the documentation and
type hints, or pass any object). Give them to the server in code
(``CollabServer(settings, extensions=[...])``, ``collab.embed.Collab``) or on the
command line (``collab serve --extension myapp.hooks:extension``, repeatable).
Several extensions chain in the order given.

Hooks that decide run on the way of a connection or an edit, each call within
``hook_timeout_s``; one that raises or runs out of time fails closed, with a
clear error to the peer concerned (``hook_failed``) and nothing else changed:

- ``on_authenticate(request) -> Identity | None``: who the request is, from its
  token, cookies and headers. The first extension to return an
  :class:`~collab.auth.Identity` decides; ``None`` passes to the next one, and
  after the last to the JWT modes (``auth_secret``, public key, JWKS; open access
  when none is set). Raise :class:`Refuse` to refuse (4401; 4403 with
  ``forbidden=True``). On ``/ws`` it runs at the handshake (the hello's token is
  then ``request.token`` only if sent as ``?token=``; a connection the hook
  accepted does not need a hello token), on ``/yjs/{doc}`` likewise.
- ``on_load_document(doc) -> bytes | None``: the first content of a document
  that does not exist yet, as a Yjs update, asked when a peer that may write it
  opens it (a reader finds no document, as ever; the creation counts against the
  writer's ``max_documents_created_per_minute``). It is stored as the document's
  first update (seq 1, author client ``extension``), once: peers opening it at
  the same moment share one seeding here, and on another instance the store
  refuses the second seed and its load takes what is stored.
- ``before_update(update: IncomingUpdate) -> None``: raise :class:`Refuse` to
  refuse a peer's update before it is applied. The document stays exactly as it
  was; the peer gets an ``error`` message (``update_refused`` with the reason, on
  ``/ws``) or y-websocket's permission-denied message (``/yjs``).

Hooks that observe run off the path of every edit, one at a time in order, in a
task the server owns, fed by a queue bounded by ``hook_queue_events`` (past it
events are dropped with a warning, never buffered without bound); a raising or
hanging one is logged and skipped (each call has ``hook_timeout_s`` too):

- ``on_connect(connection: Connection)`` / ``on_disconnect(connection)``.
- ``on_change(change: Change)``: a document changed; debounced per document
  (``hook_change_debounce_s`` of quiet, ``hook_change_max_wait_s`` at most), with
  the range of seqs, the records read from the log by position, their authors
  and ``await change.document()``, the document as it was at the range's end.
- ``on_store(stored: Stored)``: after each durable commit of this instance, with
  the records it stored.
- ``on_delete(doc)``: a document was deleted through this instance.

What observers are told comes from this instance's commits while it runs; for
delivery that survives restarts and covers every instance, use webhooks or the
change feed, which read the log from a stored position.
"""

from __future__ import annotations

import importlib
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import pycrdt

from collab.auth import Identity
from collab.store import Author, UpdateRecord

HOOKS = (
    "on_authenticate",
    "on_connect",
    "on_disconnect",
    "on_load_document",
    "on_change",
    "on_store",
    "on_delete",
    "before_update",
)


class Refuse(Exception):
    """Raised by a deciding hook to refuse, with a reason the peer sees."""

    def __init__(self, reason: str, *, forbidden: bool = False) -> None:
        super().__init__(reason)
        self.reason = reason
        self.forbidden = forbidden  # authenticate: 4403 (known, not granted) instead of 4401


@dataclass(frozen=True, slots=True)
class Request:
    """What ``on_authenticate`` is given of a connection's opening request."""

    path: str
    # Secrets: left out of repr(), so that logging a request does not log them.
    token: str | None = field(repr=False)  # ``?token=``, or ``Authorization: Bearer``
    cookies: Mapping[str, str] = field(repr=False)
    headers: Mapping[str, str] = field(repr=False)
    remote: str = ""

    @classmethod
    def of(cls, request: Any, token: str | None = None) -> Request:
        """From a Tornado request."""
        headers = {name: value for name, value in request.headers.get_all()}
        if token is None:
            bearer = request.headers.get("Authorization", "")
            if bearer.lower().startswith("bearer "):
                token = bearer[7:].strip() or None
        cookies = {name: morsel.value for name, morsel in request.cookies.items()}
        return cls(request.path, token, cookies, headers, request.remote_ip or "")


@dataclass(frozen=True, slots=True)
class Connection:
    """A peer's connection, as ``on_connect`` / ``on_disconnect`` see it."""

    id: str
    endpoint: str  # "ws" or "yjs"
    user: str | None
    remote: str
    doc: str | None = None  # /yjs: its one document


@dataclass(frozen=True, slots=True)
class IncomingUpdate:
    """A peer's update, as ``before_update`` sees it before it is applied."""

    doc: str
    update: bytes = field(repr=False)
    user: str | None
    client: str | None


@dataclass(frozen=True, slots=True)
class Stored:
    """One durable commit of this instance: its records, in seq order per document."""

    records: tuple[UpdateRecord, ...]


@dataclass(frozen=True, slots=True)
class Change:
    """A document changed: seqs ``first_seq`` to ``last_seq`` (inclusive)."""

    doc: str
    first_seq: int
    last_seq: int
    records: tuple[UpdateRecord, ...]  # read from the log (fewer if retention dropped some)
    _read_state: Callable[[str, int], Awaitable[bytes]] = field(repr=False, compare=False)

    @property
    def authors(self) -> tuple[Author, ...]:
        """Who wrote the range, each once, in order of first appearance."""
        return tuple(dict.fromkeys(record.author for record in self.records))

    async def state(self) -> bytes:
        """The document after ``last_seq``, as one Yjs update (read from the store)."""
        return await self._read_state(self.doc, self.last_seq)

    async def document(self) -> pycrdt.Doc:
        """The document after ``last_seq``, as a pycrdt Doc (a copy: changing it
        changes nothing stored)."""
        doc: pycrdt.Doc = pycrdt.Doc()
        doc.apply_update(await self.state())
        return doc


class Extension:
    """Base class of an extension: override the hooks you need (module docstring).
    Only the hooks a subclass defines are called."""

    async def on_authenticate(self, request: Request) -> Identity | None:  # pragma: no cover
        return None

    async def on_connect(self, connection: Connection) -> None:  # pragma: no cover
        return None

    async def on_disconnect(self, connection: Connection) -> None:  # pragma: no cover
        return None

    async def on_load_document(self, doc: str) -> bytes | None:  # pragma: no cover
        return None

    async def on_change(self, change: Change) -> None:  # pragma: no cover
        return None

    async def on_store(self, stored: Stored) -> None:  # pragma: no cover
        return None

    async def on_delete(self, doc: str) -> None:  # pragma: no cover
        return None

    async def before_update(self, update: IncomingUpdate) -> None:  # pragma: no cover
        return None


def hook_of(extension: object, name: str) -> Callable[..., Awaitable[Any]] | None:
    """The extension's hook ``name``, or None when it has none (an
    :class:`Extension` subclass that does not override it has none)."""
    method = getattr(extension, name, None)
    if method is None:
        return None
    if isinstance(extension, Extension) and getattr(type(extension), name) is getattr(
        Extension, name
    ):
        return None
    return method  # type: ignore[no-any-return]


def load_extension(spec: str) -> object:
    """``module:attribute`` (``--extension``): the attribute, called first if it is
    a class or a function of no arguments that makes the extension."""
    module_name, _, attribute = spec.partition(":")
    if not module_name or not attribute:
        raise ValueError(f"--extension {spec!r}: expected module:attribute")
    module = importlib.import_module(module_name)
    try:
        value = getattr(module, attribute)
    except AttributeError:
        raise ValueError(f"--extension {spec!r}: {module_name} has no {attribute!r}") from None
    if isinstance(value, type):
        return value()
    if callable(value) and not any(hook_of(value, name) for name in HOOKS):
        return value()
    return value
