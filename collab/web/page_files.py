"""The page's files (``static/``), gzip-compressed once, not on every request.

Tornado's output transform compresses a file as it is written, on the event loop:
the 590 KB bundle cost about 25 ms of the loop per page load, a stall every peer's
messages waited behind. :class:`PageFiles` compresses each compressible file on a
thread the first time it is asked for and keeps the result while the file is
unchanged (its size and modification time); every later request for it is served
from memory. Ranges, ``ETag`` and ``If-None-Match`` then refer to the compressed
form, which has an ``ETag`` of its own.
"""

from __future__ import annotations

import asyncio
import gzip
import mimetypes
import os
import stat
from dataclasses import dataclass
from typing import ClassVar

import tornado.web

from collab.web.encoding import GzipAnswers, accepts_gzip, compressible

# Larger files go through the transform as before (a page's files are far smaller).
MAX_KEPT_FILE_BYTES = 16 * 1024 * 1024


@dataclass(frozen=True)
class _Compressed:
    mtime_ns: int
    size: int
    body: bytes


class PageFiles(tornado.web.StaticFileHandler):
    """Tornado's static file handler, answering gzip from compressed copies."""

    # Compressed files by absolute path: only files under the page's directory that
    # were asked for, so bounded by that directory.
    _compressed: ClassVar[dict[str, _Compressed]] = {}

    def initialize(  # type: ignore[override]
        self, path: str, default_filename: str | None = None, gzip: bool = False
    ) -> None:
        super().initialize(path, default_filename)
        self._gzip = gzip
        self._body: bytes | None = None  # the compressed file this answer sends

    async def get(self, path: str, include_body: bool = True) -> None:
        if self._gzip and accepts_gzip(self.request):
            self._body = await self._compressed_copy(path)
            if self._body is not None:
                # This answer's reads of the file take the copy. (get_content stays
                # a class method: Tornado hashes the file through it for the ETag.)
                self.get_content = self._compressed_content  # type: ignore[method-assign]
        await super().get(path, include_body)

    def _compressed_content(
        self, abspath: str, start: int | None = None, end: int | None = None
    ) -> bytes:
        assert self._body is not None
        return self._body[start:end]

    async def _compressed_copy(self, path: str) -> bytes | None:
        """The file at ``path`` compressed, or None to answer as Tornado does
        (no such file, outside the directory, not compressible, too small or large)."""
        found = self._compressible_file(path)
        if found is None:
            return None
        absolute, mtime_ns, size = found
        kept = self._compressed.get(absolute)
        if kept is not None and (kept.mtime_ns, kept.size) == (mtime_ns, size):
            return kept.body
        try:
            body = await asyncio.get_running_loop().run_in_executor(None, _compress, absolute)
        except OSError:
            return None
        self._compressed[absolute] = _Compressed(mtime_ns, size, body)
        return body

    def _compressible_file(self, path: str) -> tuple[str, int, int] | None:
        """The absolute path, modification time and size of the file at ``path``,
        if it is one to compress. A stat, as Tornado's handler makes on the loop."""
        root = os.path.abspath(self.root)
        absolute = os.path.abspath(os.path.join(root, self.parse_url_path(path)))
        if os.path.isdir(absolute) and self.default_filename is not None:
            absolute = os.path.join(absolute, self.default_filename)
        if not absolute.startswith(root + os.path.sep):
            return None  # Tornado refuses it
        content_type, encoding = mimetypes.guess_type(absolute)
        if encoding is not None or not compressible(content_type or ""):
            return None  # compressed already (x.tar.gz), or an image
        try:
            status = os.stat(absolute)
        except OSError:
            return None
        if not stat.S_ISREG(status.st_mode):
            return None
        if not GzipAnswers.MIN_LENGTH <= status.st_size <= MAX_KEPT_FILE_BYTES:
            return None  # as the transform, a small file is not worth the header
        return absolute, status.st_mtime_ns, status.st_size

    # Tornado's handler reads sizes, ranges and content through these.

    def get_content_size(self) -> int:
        if self._body is None:
            return super().get_content_size()
        return len(self._body)

    def set_extra_headers(self, path: str) -> None:
        if self._body is not None:
            # The transform leaves an answer with an encoding as it is.
            self.set_header("Content-Encoding", "gzip")

    def compute_etag(self) -> str | None:
        etag = super().compute_etag()
        if etag is None or self._body is None:
            return etag
        return etag[:-1] + '-gzip"'  # another representation, another tag


def _compress(path: str) -> bytes:
    with open(path, "rb") as file:
        return gzip.compress(file.read(), compresslevel=GzipAnswers.GZIP_LEVEL, mtime=0)
