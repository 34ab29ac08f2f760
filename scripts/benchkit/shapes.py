"""The document shapes of the delivery scenarios: how many documents, peers on each,
and writers among those peers (the others only read)."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Shape:
    name: str
    docs: int
    peers: int  # per document, writers included
    writers: int  # per document

    @property
    def deliveries_per_update(self) -> int:
        """Peers each update reaches: every peer of its document but its writer."""
        return self.peers - 1


SHAPES = {
    s.name: s
    for s in (
        Shape("rooms10x10", docs=10, peers=10, writers=2),
        Shape("rooms100x3", docs=100, peers=3, writers=1),
        Shape("crowd50", docs=1, peers=50, writers=5),
    )
}
