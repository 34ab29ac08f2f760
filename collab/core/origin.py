"""Where a change to a document came from. The origin decides who hears of it
(a peer's own edit is not sent back to it), what is stored (only changes from
this instance's peers and API calls are appended; the feed's are stored already)
and what history records (the author)."""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

from collab.store import Author


class OriginKind(StrEnum):
    PEER = "peer"  # a WebSocket peer of this instance
    FEED = "feed"  # another instance's commit, from the store's feed
    API = "api"  # an HTTP API call on this instance (a restore, say)


@dataclass(frozen=True, slots=True)
class Origin:
    kind: OriginKind
    user: str | None = None
    client: str | None = None
    instance: str | None = None

    @property
    def author(self) -> Author:
        """What the log records of who made the change."""
        return Author(self.user, self.client, self.instance)

    @classmethod
    def peer(cls, user: str | None, client: str, instance: str) -> Origin:
        return cls(OriginKind.PEER, user, client, instance)
