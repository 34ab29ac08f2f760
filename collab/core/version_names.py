"""Named versions: a name someone with write access gives a version ("Sent to
legal"), so that it can be found, shown first in the timeline and restored later.

The names live in the store (collab.store.base.VersionNameStore). Naming checks
what the store does not: that the version exists and is still kept, that the name
is short and printable, and that a document has at most ``max_version_names``
of them (each holds its history back from retention, collab.core.manager)."""

from __future__ import annotations

import unicodedata

from collab.core.history import NotRetained, retained_from
from collab.store import Store, VersionName

MAX_NAME_CHARS = 100  # a label, not a description


class NameRefused(ValueError):
    """A name that cannot be given; the message says why."""


def clean_name(raw: object) -> str:
    """The name as kept: a string, without surrounding space and control
    characters, 1 to MAX_NAME_CHARS characters long."""
    if not isinstance(raw, str):
        raise NameRefused("the name must be a string")
    name = " ".join(raw.split())  # line breaks and runs of space: one space
    if any(unicodedata.category(c) in ("Cc", "Cf") for c in name):
        raise NameRefused("the name must not hold control characters")
    if not name:
        raise NameRefused("the name must not be empty")
    if len(name) > MAX_NAME_CHARS:
        raise NameRefused(f"the name must be at most {MAX_NAME_CHARS} characters")
    return name


async def name_version(
    store: Store,
    doc: str,
    seq: int,
    raw_name: object,
    *,
    head_seq: int,
    user: str | None,
    time_s: float,
    max_names: int,
) -> VersionName:
    """Names version ``seq`` of ``doc`` (renames it if it has a name already).
    Raises NameRefused for a bad name or a version past ``head_seq``, NotRetained
    for a version retention dropped."""
    name = clean_name(raw_name)
    if not 0 <= seq <= head_seq:
        raise NameRefused(f"seq {seq} is past the document's latest version ({head_seq})")
    first = await retained_from(store, doc)
    if seq < first:
        raise NotRetained(doc, seq, first)
    existing = await store.version_names(doc)
    if len(existing) >= max_names and all(n.seq != seq for n in existing):
        raise NameRefused(
            f"the document has {len(existing)} named versions, the most it may have: "
            "take a name away first"
        )
    named = VersionName(doc, seq, name, user, time_s)
    await store.name_version(named)
    return named


def as_dict(name: VersionName) -> dict[str, object]:
    """A named version as the HTTP API and the WebSocket history message give it."""
    return {"seq": name.seq, "name": name.name, "user": name.user, "time_s": name.time_s}
