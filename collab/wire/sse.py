"""Server-Sent Events read without I/O, as the WHATWG spec parses them: feed the
bytes of a stream as they come, get the events they complete.

    parser = SSEParser()
    for event in parser.feed(chunk):
        print(event.id, event.event, event.data)

A line longer than ``max_line_bytes`` raises SSEError (a stream that never ends a
line must not take unbounded memory).
"""

from __future__ import annotations

from dataclasses import dataclass

MAX_LINE_BYTES = 16 * 1024 * 1024


class SSEError(ValueError):
    """The stream is not Server-Sent Events this reader can take."""


@dataclass(frozen=True, slots=True)
class SSEEvent:
    event: str  # "message" unless named
    data: str
    id: str | None  # the last event id in force after this event


class SSEParser:
    def __init__(self, max_line_bytes: int = MAX_LINE_BYTES) -> None:
        self._max = max_line_bytes
        self._buffer = b""
        self._event = ""
        self._data: list[str] = []
        self.last_id: str | None = None
        self.retry_ms: int | None = None

    def feed(self, chunk: bytes) -> list[SSEEvent]:
        self._buffer += chunk
        events: list[SSEEvent] = []
        while True:
            cut = self._buffer.find(b"\n")
            if cut < 0:
                if len(self._buffer) > self._max:
                    raise SSEError(f"a line longer than {self._max} bytes")
                return events
            raw, self._buffer = self._buffer[:cut], self._buffer[cut + 1 :]
            line = raw.rstrip(b"\r").decode("utf-8", errors="replace")
            event = self._line(line)
            if event is not None:
                events.append(event)

    def _line(self, line: str) -> SSEEvent | None:
        if not line:  # a blank line dispatches the event
            if not self._data:
                self._event = ""
                return None
            event = SSEEvent(self._event or "message", "\n".join(self._data), self.last_id)
            self._event, self._data = "", []
            return event
        if line.startswith(":"):
            return None  # a comment: a keep-alive
        name, _, value = line.partition(":")
        value = value.removeprefix(" ")
        if name == "event":
            self._event = value
        elif name == "data":
            self._data.append(value)
        elif name == "id" and "\0" not in value:
            self.last_id = value
        elif name == "retry" and value.isdigit():
            self.retry_ms = int(value)
        return None
