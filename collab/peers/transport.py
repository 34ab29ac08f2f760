"""What a peer connection needs from its socket, and small helpers shared by both protocols."""

from __future__ import annotations

import secrets
from typing import Protocol


class Transport(Protocol):
    """The socket, as a connection sees it."""

    def send(self, frame: bytes) -> None: ...

    def send_many(self, frames: list[bytes]) -> None:
        """Send messages in order; the same list object given to many transports in
        one pass of the event loop (a broadcast) is framed once."""
        ...

    def close(self, code: int, reason: str) -> None: ...

    async def drained(self, below: int) -> None:
        """Return once fewer than ``below`` bytes wait to be written (at once if the
        socket is closed)."""
        ...


def close_reason(message: str) -> str:
    """A close frame's reason holds at most 123 bytes of UTF-8."""
    return message.encode()[:123].decode("utf-8", "ignore")


def new_connection_id() -> str:
    return secrets.token_hex(4)
