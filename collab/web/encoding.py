"""gzip for HTTP answers, when the client accepts it.

Small answers are compressed by Tornado's output transform as they are written;
large ones (a version's content, a state, a page of history) are compressed on a
thread before they are written (:func:`gzip_off_loop`), so that compressing 10 MiB
never stalls the event loop. Event streams are never compressed: a proxy that
buffers a compressed stream would hold its events back.
"""

from __future__ import annotations

import asyncio
import gzip
import re

import tornado.web
from tornado import httputil

# At least this large, an answer is compressed on a thread rather than on the loop
# (level 6 compresses about 30-60 MiB/s here: 64 KiB is about a millisecond).
OFF_LOOP_BYTES = 64 * 1024

_GZIP_REFUSED = re.compile(r"(?:^|,)\s*gzip\s*;\s*q\s*=\s*0(?:\.0*)?\s*(?:,|$)")


def accepts_gzip(request: httputil.HTTPServerRequest) -> bool:
    header = request.headers.get("Accept-Encoding", "").lower()
    return "gzip" in header and _GZIP_REFUSED.search(header) is None


# Besides text: JSON, the page's scripts, and Yjs states (binary, which compress
# about 2-4x).
COMPRESSED_TYPES = tornado.web.GZipContentEncoding.CONTENT_TYPES | {"application/octet-stream"}


def compressible(content_type: str) -> bool:
    """Whether answers of this type are gzip-compressed; never event streams."""
    if content_type == "text/event-stream":
        return False
    return content_type.startswith("text/") or content_type in COMPRESSED_TYPES


class GzipAnswers(tornado.web.GZipContentEncoding):
    """Tornado's gzip transform, for the types collab answers with."""

    def __init__(self, request: httputil.HTTPServerRequest) -> None:
        super().__init__(request)
        self._gzipping = accepts_gzip(request)

    def _compressible_type(self, ctype: str) -> bool:
        return compressible(ctype)


async def gzip_off_loop(body: bytes) -> bytes:
    """``body`` compressed as the transform would, on a thread."""
    level = GzipAnswers.GZIP_LEVEL
    return await asyncio.get_running_loop().run_in_executor(
        None, lambda: gzip.compress(body, compresslevel=level, mtime=0)
    )
