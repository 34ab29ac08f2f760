"""Where the history commands (``collab history|show|replay|export|import|name``) read
and write documents: a store URL directly, or a running server's HTTP API
(``--server URL``, with ``--token`` when access tokens are on). Both answer the
same questions, so every command works either way.
"""

from __future__ import annotations

import abc
import base64
import json
import time
import urllib.parse
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from tornado.httpclient import AsyncHTTPClient, HTTPClientError, HTTPRequest

from collab.config import Settings
from collab.core import archive, history, version_names
from collab.core.snapshots import Cadence
from collab.store import Author, Store, UpdateRecord, create_store

PAGE = 1000


class SourceError(Exception):
    """What a command tells its user: the document is missing, the server said no..."""


@dataclass(frozen=True, slots=True)
class DocumentSummary:
    name: str
    epoch: str | None
    head_seq: int


class Source(abc.ABC):
    async def open(self) -> None:  # noqa: B027 - optional hook
        pass

    async def close(self) -> None:  # noqa: B027 - optional hook
        pass

    @abc.abstractmethod
    async def document(self, doc: str) -> DocumentSummary:
        """Raises SourceError for an unknown document."""

    @abc.abstractmethod
    async def names(self) -> list[str]:
        """Every document's name."""

    @abc.abstractmethod
    async def updates(self, doc: str, after_seq: int, limit: int = PAGE) -> list[UpdateRecord]:
        """A page of the log after ``after_seq``, with the updates' bytes."""

    @abc.abstractmethod
    async def changes(self, doc: str, after_seq: int, limit: int) -> list[dict[str, Any]]:
        """A page of the timeline (the API's ``group=session`` entries)."""

    @abc.abstractmethod
    async def version(self, doc: str, *, seq: int | None = None, at: str | None = None) -> Any:
        """The content at a seq or ISO 8601 time (default: now), as the API's JSON."""

    @abc.abstractmethod
    async def state(self, doc: str, seq: int) -> bytes:
        """The document's state after ``seq`` as one Yjs update."""

    @abc.abstractmethod
    async def import_file(self, doc: str | None, lines: Iterable[bytes]) -> tuple[str, int]:
        """Import an export as a new document; returns its name and update count."""

    @abc.abstractmethod
    async def version_names(self, doc: str) -> list[dict[str, Any]]:
        """The document's named versions by seq, as the API gives them."""

    @abc.abstractmethod
    async def name_version(self, doc: str, seq: int, name: str) -> dict[str, Any]:
        """Names version ``seq`` (in place of its name); raises SourceError if refused."""

    @abc.abstractmethod
    async def unname_version(self, doc: str, seq: int) -> None:
        """Takes a version's name away; raises SourceError if it had none."""


class StoreSource(Source):
    def __init__(self, url: str, settings: Settings | None = None, *, create: bool = False) -> None:
        # Only an import may make a new store; reading one that is not there is an error.
        self.store: Store = create_store(url, create=create)
        # Imports write snapshots as the server would, by its settings.
        self._settings = settings or Settings()
        self._cadence = Cadence.of(self._settings)

    async def open(self) -> None:
        await self.store.open()

    async def close(self) -> None:
        await self.store.close()

    async def document(self, doc: str) -> DocumentSummary:
        info = await self.store.get_document(doc)
        if info is None:
            raise SourceError(f"no document named {doc!r}")
        return DocumentSummary(info.name, info.epoch, info.head_seq)

    async def names(self) -> list[str]:
        return [info.name for info in await self.store.list_documents()]

    async def updates(self, doc: str, after_seq: int, limit: int = PAGE) -> list[UpdateRecord]:
        return await self.store.read_updates(doc, after_seq=after_seq, limit=limit)

    async def changes(self, doc: str, after_seq: int, limit: int) -> list[dict[str, Any]]:
        found, _ = await history.changes(self.store, doc, after_seq=after_seq, limit=limit)
        return [
            {
                "first_seq": c.first_seq,
                "last_seq": c.last_seq,
                "first_time_s": c.first_time_s,
                "last_time_s": c.last_time_s,
                "user": c.user,
                "updates": c.updates,
                "bytes": c.bytes,
            }
            for c in found
        ]

    async def version(self, doc: str, *, seq: int | None = None, at: str | None = None) -> Any:
        info = await self.document(doc)
        if at is not None:
            seq = await history.seq_at_time(self.store, doc, _timestamp(at), info.head_seq)
        if seq is not None and seq > info.head_seq:
            raise SourceError(f"seq {seq} is past the document's latest version ({info.head_seq})")
        version = await history.version_at(self.store, doc, seq)
        return {
            "doc": doc,
            "seq": version.seq,
            "time_s": version.time_s,
            "types": version.kinds,
            "content": version.content,
        }

    async def state(self, doc: str, seq: int) -> bytes:
        return (await history.state_at(self.store, doc, seq))[1]

    async def import_file(self, doc: str | None, lines: Iterable[bytes]) -> tuple[str, int]:
        try:
            return await archive.import_document(self.store, lines, name=doc, cadence=self._cadence)
        except archive.ArchiveError as exc:
            raise SourceError(str(exc)) from None

    async def version_names(self, doc: str) -> list[dict[str, Any]]:
        await self.document(doc)
        return [version_names.as_dict(n) for n in await self.store.version_names(doc)]

    async def name_version(self, doc: str, seq: int, name: str) -> dict[str, Any]:
        info = await self.document(doc)
        try:
            named = await version_names.name_version(
                self.store,
                doc,
                seq,
                name,
                head_seq=info.head_seq,
                user=None,
                time_s=time.time(),
                max_names=self._settings.max_version_names,
            )
        except version_names.NameRefused as exc:
            raise SourceError(str(exc)) from None
        return version_names.as_dict(named)

    async def unname_version(self, doc: str, seq: int) -> None:
        await self.document(doc)
        if not await self.store.unname_version(doc, seq):
            raise SourceError(f"version {seq} of {doc!r} has no name")


class ServerSource(Source):
    def __init__(self, url: str, token: str | None = None) -> None:
        self.base = url.rstrip("/")
        self.token = token
        self._http = AsyncHTTPClient(force_instance=True)

    async def close(self) -> None:
        self._http.close()

    async def _fetch(self, path: str, **options: Any) -> Any:
        headers = {"Authorization": f"Bearer {self.token}"} if self.token else {}
        headers.update(options.pop("headers", {}))
        request = HTTPRequest(self.base + path, headers=headers, request_timeout=300, **options)
        try:
            response = await self._http.fetch(request)
        except HTTPClientError as exc:
            raise SourceError(f"{self.base}: {exc.code} {_error_of(exc)}") from None
        except OSError as exc:
            raise SourceError(f"{self.base}: {exc}") from None
        if response.headers.get("Content-Type", "").startswith("application/json"):
            return json.loads(response.body)
        return response.body

    @staticmethod
    def _doc(doc: str) -> str:
        return "/api/documents/" + urllib.parse.quote(doc, safe="")

    async def document(self, doc: str) -> DocumentSummary:
        body = await self._fetch(self._doc(doc))
        return DocumentSummary(doc, body.get("epoch"), body["seq"])

    async def names(self) -> list[str]:
        names: list[str] = []
        after: str | None = None
        while True:
            query = f"?limit={PAGE}" + (f"&after={urllib.parse.quote(after)}" if after else "")
            body = await self._fetch("/api/documents" + query)
            names += [d["name"] for d in body["documents"]]
            after = body.get("next_after")
            if after is None:
                return names

    async def updates(self, doc: str, after_seq: int, limit: int = PAGE) -> list[UpdateRecord]:
        body = await self._fetch(
            f"{self._doc(doc)}/history?after={after_seq}&limit={limit}&include=update"
        )
        return [
            UpdateRecord(
                doc,
                u["seq"],
                base64.b64decode(u["update"]),
                u["time_s"],
                Author(u["origin"]["user"], u["origin"]["client"], u["origin"]["instance"]),
            )
            for u in body["updates"]
        ]

    async def changes(self, doc: str, after_seq: int, limit: int) -> list[dict[str, Any]]:
        body = await self._fetch(
            f"{self._doc(doc)}/history?group=session&after={after_seq}&limit={limit}"
        )
        return list(body["changes"])

    async def version(self, doc: str, *, seq: int | None = None, at: str | None = None) -> Any:
        if at is not None:
            return await self._fetch(f"{self._doc(doc)}/versions?at={urllib.parse.quote(at)}")
        if seq is not None:
            return await self._fetch(f"{self._doc(doc)}/versions/{seq}")
        return await self._fetch(self._doc(doc))

    async def state(self, doc: str, seq: int) -> bytes:
        body = await self._fetch(f"{self._doc(doc)}/state?seq={seq}")
        assert isinstance(body, bytes)
        return body

    async def import_file(self, doc: str | None, lines: Iterable[bytes]) -> tuple[str, int]:
        data = b"".join(line if line.endswith(b"\n") else line + b"\n" for line in lines)
        if doc is None:
            try:
                header, _ = archive.read_archive(data.splitlines())
            except archive.ArchiveError as exc:
                raise SourceError(str(exc)) from None
            doc = header.doc
        body = await self._fetch(f"{self._doc(doc)}/import", method="POST", body=data)
        return body["doc"], body["updates"]

    async def version_names(self, doc: str) -> list[dict[str, Any]]:
        return list((await self._fetch(f"{self._doc(doc)}/names"))["names"])

    async def name_version(self, doc: str, seq: int, name: str) -> dict[str, Any]:
        body = json.dumps({"name": name})
        return dict(
            await self._fetch(f"{self._doc(doc)}/versions/{seq}/name", method="PUT", body=body)
        )

    async def unname_version(self, doc: str, seq: int) -> None:
        await self._fetch(f"{self._doc(doc)}/versions/{seq}/name", method="DELETE")


def _error_of(exc: HTTPClientError) -> str:
    if exc.response is not None:
        try:
            return str(json.loads(exc.response.body)["error"])
        except (ValueError, KeyError, TypeError):
            pass
    return exc.message or ""


def _timestamp(at: str) -> float:
    try:
        return history.timestamp_of(at)
    except ValueError:
        raise SourceError(f"{at!r} is not an ISO 8601 time") from None
