"""HTTP API of named versions (collab.core.version_names):
``GET /api/documents/DOC/names`` lists them; ``PUT`` (or ``POST``)
``/api/documents/DOC/versions/SEQ/name`` with ``{"name": "..."}`` names a version
(or renames it), ``GET`` reads its name and ``DELETE`` takes it away. Reading
needs read access, naming write access. docs/API.md has examples."""

from __future__ import annotations

import json
import time
from typing import Any

import tornado.web

from collab.config import Settings
from collab.core import version_names
from collab.errors import StoreError
from collab.store import VersionName
from collab.web.api import SMALL_JSON_BYTES, seq_value
from collab.web.documents import DocumentApiHandler, _iso


def name_body(name: VersionName) -> dict[str, Any]:
    return {**version_names.as_dict(name), "time": _iso(name.time_s)}


class NamesHandler(DocumentApiHandler):
    """``GET /api/documents/DOC/names``: the document's named versions, by seq."""

    async def get(self, doc: str) -> None:
        try:
            await self.require_document(doc)
            found = await self.server.store.version_names(doc)
        except StoreError as exc:
            self.on_store_error(exc)
        self.write_json({"doc": doc, "names": [name_body(n) for n in found]})


class VersionNameHandler(DocumentApiHandler):
    """``/api/documents/DOC/versions/SEQ/name``: a version's name (GET), given
    (PUT or POST, ``{"name": "Sent to legal"}``) or taken away (DELETE)."""

    @classmethod
    def max_body_bytes(cls, settings: Settings) -> int:
        return SMALL_JSON_BYTES

    async def get(self, doc: str, raw_seq: str) -> None:
        seq = seq_value(raw_seq, "the version (a seq)")
        try:
            await self.require_document(doc)
            found = [n for n in await self.server.store.version_names(doc) if n.seq == seq]
        except StoreError as exc:
            self.on_store_error(exc)
        if not found:
            raise tornado.web.HTTPError(404, f"version {seq} of {doc!r} has no name")
        self.write_json({"doc": doc, **name_body(found[0])})

    async def put(self, doc: str, raw_seq: str) -> None:
        identity = self.require_write(doc)
        seq = seq_value(raw_seq, "the version (a seq)")
        try:
            body = json.loads(self.body or b"null")
        except ValueError:
            body = None
        if not isinstance(body, dict) or "name" not in body:
            raise tornado.web.HTTPError(400, 'the body must be JSON: {"name": "..."}')
        try:
            info = await self.require_document(doc)
            named = await version_names.name_version(
                self.server.store,
                doc,
                seq,
                body["name"],
                head_seq=info.head_seq,
                user=identity.user,
                time_s=time.time(),
                max_names=self.server.settings.max_version_names,
            )
        except version_names.NameRefused as exc:
            raise tornado.web.HTTPError(400, str(exc)) from None
        except StoreError as exc:
            self.on_store_error(exc)
        self.write_json({"doc": doc, **name_body(named)})

    post = put

    async def delete(self, doc: str, raw_seq: str) -> None:
        self.require_write(doc)
        seq = seq_value(raw_seq, "the version (a seq)")
        try:
            await self.require_document(doc)
            removed = await self.server.store.unname_version(doc, seq)
        except StoreError as exc:
            self.on_store_error(exc)
        if not removed:
            raise tornado.web.HTTPError(404, f"version {seq} of {doc!r} has no name")
        self.write_json({"doc": doc, "seq": seq, "deleted": True})
