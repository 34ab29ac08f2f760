"""The documents a token may see, a page at a time, read through the store's index.

A grant pattern's literal prefix (``notes/*``: ``notes/``) bounds the names it can
match, so the list asks the store for the names under each prefix the token's
grants have (:meth:`collab.auth.Identity.name_prefixes`), in name order, instead
of testing every stored name. A pattern without one (``*/public``) is a scan;
what a request reads is bounded all the same, by ``max_rows``: past it the page
ends with what was found and a cursor to go on from.

Such a cursor stands where the scan stopped, which may be a document the token
does not see: its name is sealed (encrypted), so that the cursor tells the token
nothing it could not list.
"""

from __future__ import annotations

import base64
import hashlib
import os
from dataclasses import dataclass
from fnmatch import fnmatchcase

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from collab.auth import Identity, literal_prefix
from collab.store import DocumentInfo, Store

BATCH = 1000  # names read from the store at once
# More prefixes than this are listed under the one they all start with: one
# store query per prefix is the cost of a request with nothing to show (a token
# granting many documents by name has as many).
MAX_PREFIXES = 256
# What a sealed cursor starts with: a character no document name has (it is
# invisible: collab.wire.native.validate_document_name refuses it).
SEALED = "\u2063"
NONCE_BYTES = 12
PAD_BYTES = 256  # a sealed name is padded to a multiple of this


class CursorError(ValueError):
    """A cursor this server did not make (or made under another key)."""


class Cursors:
    """Seals and opens the cursors of pages cut short (AES-GCM): every instance
    that shares ``secret`` opens the others' cursors."""

    def __init__(self, secret: bytes) -> None:
        self._aead = AESGCM(hashlib.sha256(b"collab list cursor\0" + secret).digest())

    def seal(self, name: str) -> str:
        data = name.encode()
        # Padded (names have no NULs), so that its length says little of the name's.
        data += b"\0" * (-len(data) % PAD_BYTES)
        nonce = os.urandom(NONCE_BYTES)
        sealed = nonce + self._aead.encrypt(nonce, data, None)
        return SEALED + base64.urlsafe_b64encode(sealed).decode().rstrip("=")

    def open(self, cursor: str) -> str:
        """The name a cursor stands at: a sealed one opened, any other as it is.
        Raises CursorError."""
        if not cursor.startswith(SEALED):
            return cursor
        text = cursor[len(SEALED) :]
        try:
            sealed = base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
            name = self._aead.decrypt(sealed[:NONCE_BYTES], sealed[NONCE_BYTES:], None)
            return name.rstrip(b"\0").decode()
        except (ValueError, InvalidTag):  # binascii.Error is a ValueError
            raise CursorError(
                "after is not a cursor of this server (another server's, or from before a "
                "restart that changed its key): list again from a name you have seen"
            ) from None


@dataclass(frozen=True, slots=True)
class Page:
    documents: list[DocumentInfo]
    # The ``after`` of the next page; None: the list ends here. A page cut short
    # by ``max_rows`` (``cut``) may have fewer documents than asked, even none,
    # and its next_after is a sealed cursor.
    next_after: str | None
    rows_read: int
    cut: bool = False


async def granted_documents(
    store: Store,
    identity: Identity,
    cursors: Cursors,
    *,
    prefix: str = "",
    after: str | None = None,
    limit: int,
    max_rows: int,
) -> Page:
    """At most ``limit`` documents ``identity`` may read whose names start with
    ``prefix``, after ``after`` (a name, or a cursor of an earlier page), by name.
    Reads at most ``max_rows`` names of the store's list (at least one), each
    counted once for every grant pattern it is tested against: a token of many
    patterns that all could match reads fewer. Raises CursorError, StoreError."""
    cursor = cursors.open(after) if after is not None else None  # the last name read
    prefixes = identity.name_prefixes(prefix)
    if len(prefixes) > MAX_PREFIXES:
        # Sorted: what the first and the last start with, they all do.
        low, high = prefixes[0], prefixes[-1]
        common = next(
            (i for i, (a, b) in enumerate(zip(low, high, strict=False)) if a != b), len(low)
        )
        prefixes = [low[:common]]
    found: list[DocumentInfo] = []
    rows = checks = 0
    for start in prefixes:
        if cursor is not None and cursor > start and not cursor.startswith(start):
            continue  # every name under this prefix comes before the cursor
        # The patterns that can match a name under this prefix.
        patterns = [p for p, _ in identity.grants if _may_match_under(p, start)]
        weight = max(1, len(patterns))
        while True:
            room = (max_rows - checks) // weight
            if room <= 0 and checks:
                # Out of names to read (so the cursor moved): what was found, and
                # where to go on from, sealed: it may be a name the token does
                # not see.
                assert cursor is not None
                return Page(found, cursors.seal(cursor), rows, cut=True)
            want = min(BATCH, max(1, room), limit + 1 - len(found))
            batch = await store.list_documents(prefix=start, after=cursor, limit=want)
            rows += len(batch)
            checks += len(batch) * weight
            for info in batch:
                cursor = info.name
                if any(fnmatchcase(info.name, pattern) for pattern in patterns):
                    found.append(info)
                    if len(found) > limit:
                        return Page(found[:limit], found[limit - 1].name, rows)
            if len(batch) < want:
                break  # nothing more under this prefix
    return Page(found, None, rows)


def _may_match_under(pattern: str, prefix: str) -> bool:
    literal = literal_prefix(pattern)
    return literal.startswith(prefix) or prefix.startswith(literal)
