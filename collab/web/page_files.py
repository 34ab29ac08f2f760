"""The page's files (``static/``), gzip-compressed once, not on every request.

Tornado's output transform compresses a file as it is written, on the event loop:
the 590 KB bundle cost about 25 ms of the loop per page load, a stall every peer's
messages waited behind. :class:`PageFiles` compresses each compressible file on a
thread the first time it is asked for and keeps the result while the file is
unchanged (its size and modification time); every later request for it is served
from memory. Ranges, ``ETag`` and ``If-None-Match`` then refer to the compressed
form, which has an ``ETag`` of its own: a hash of the compressed bytes, made with
them on the thread, so that a changed file has a new one (Tornado's own tag is the
hash of a path's first content for as long as the process runs).

Only a file Tornado would serve is compressed: the path with its symlinks resolved
must lie in the page's directory, as Tornado checks after (a symlink out of it is
refused, and not read). The copies are kept by file, not by the path asked for (a
symlink to a directory above, or a case-insensitive file system, gives one file
endless paths), at most ``MAX_KEPT_BYTES`` of them; the requests that find a file
being compressed wait for that compression, not start their own.
"""

from __future__ import annotations

import asyncio
import functools
import gzip
import hashlib
import mimetypes
import os
import stat
from collections import OrderedDict
from dataclasses import dataclass
from typing import ClassVar

import tornado.web

from collab.web.encoding import GzipAnswers, accepts_gzip, compressible

# Larger files go through the transform as before (a page's files are far smaller).
MAX_KEPT_FILE_BYTES = 16 * 1024 * 1024
# All the compressed copies together (the bundle is about 150 KB compressed); past
# it the least recently asked for are dropped (the files of a page deployed before).
MAX_KEPT_BYTES = 64 * 1024 * 1024

# A file as it is now: device, inode, modification time, size.
_Version = tuple[int, int, int, int]


@dataclass(frozen=True)
class _Compressed:
    version: _Version  # the file's when it was read
    body: bytes
    etag: str  # the hash of body


class PageFiles(tornado.web.StaticFileHandler):
    """Tornado's static file handler, answering gzip from compressed copies."""

    # Compressed files by (device, inode), least recently asked for first.
    _compressed: ClassVar[OrderedDict[tuple[int, int], _Compressed]] = OrderedDict()
    _kept_bytes: ClassVar[int] = 0
    # Compressions under way, shared by the requests that come meanwhile.
    _compressing: ClassVar[dict[_Version, asyncio.Future[_Compressed]]] = {}

    def initialize(  # type: ignore[override]
        self, path: str, default_filename: str | None = None, gzip: bool = False
    ) -> None:
        super().initialize(path, default_filename)
        self._gzip = gzip
        self._copy: _Compressed | None = None  # the compressed file this answer sends

    async def get(self, path: str, include_body: bool = True) -> None:
        if self._gzip and accepts_gzip(self.request):
            self._copy = await self._compressed_copy(path)
            if self._copy is not None:
                # This answer's reads of the file take the copy. (The class method
                # stays Tornado's: static_url hashes files through it.)
                self.get_content = self._compressed_content  # type: ignore[method-assign]
        await super().get(path, include_body)
        if self.get_status() == 416:
            # No content: the range was outside it (Tornado sets the headers first).
            self.clear_header("Content-Encoding")

    def _compressed_content(
        self, abspath: str, start: int | None = None, end: int | None = None
    ) -> bytes:
        assert self._copy is not None
        return self._copy.body[start:end]

    async def _compressed_copy(self, path: str) -> _Compressed | None:
        """The file at ``path`` compressed, or None to answer as Tornado does
        (no such file, outside the directory, not compressible, too small or large)."""
        found = self._compressible_file(path)
        if found is None:
            return None
        absolute, status = found
        version = (status.st_dev, status.st_ino, status.st_mtime_ns, status.st_size)
        kept = self._compressed.get(version[:2])
        if kept is not None and kept.version == version:
            self._compressed.move_to_end(version[:2])
            return kept
        loop = asyncio.get_running_loop()
        compressing = self._compressing.get(version)
        if compressing is None or compressing.get_loop() is not loop:
            compressing = loop.run_in_executor(None, _compressed_file, absolute, version)
            self._compressing[version] = compressing
            compressing.add_done_callback(functools.partial(self._compressed_done, version))
        try:
            return await compressing
        except OSError:
            return None

    @classmethod
    def _compressed_done(cls, version: _Version, compressing: asyncio.Future[_Compressed]) -> None:
        """A compression ended: kept, if it read the file (whether or not the
        requests that waited for it are still there)."""
        copy = None if compressing.cancelled() or compressing.exception() else compressing.result()
        if cls._compressing.get(version) is compressing:
            del cls._compressing[version]
        if copy is not None:
            cls._keep(version[:2], copy)

    @classmethod
    def _keep(cls, key: tuple[int, int], copy: _Compressed) -> None:
        replaced = cls._compressed.pop(key, None)
        if replaced is not None:
            cls._kept_bytes -= len(replaced.body)
        cls._compressed[key] = copy
        cls._kept_bytes += len(copy.body)
        while cls._kept_bytes > MAX_KEPT_BYTES and len(cls._compressed) > 1:
            _, dropped = cls._compressed.popitem(last=False)
            cls._kept_bytes -= len(dropped.body)

    def _compressible_file(self, path: str) -> tuple[str, os.stat_result] | None:
        """The resolved path and status of the file at ``path``, if it is one to
        compress and one Tornado serves: in the page's directory as written and
        with its symlinks resolved, and not a directory asked for without its
        slash (Tornado redirects). Stats, as Tornado's handler makes on the loop."""
        written = os.path.abspath(os.path.join(self.root, self.parse_url_path(path)))
        if not _inside(os.path.abspath(self.root), written):
            return None  # Tornado refuses it
        absolute = os.path.realpath(written)
        if os.path.isdir(absolute) and self.default_filename is not None:
            if not self.request.path.endswith("/"):
                return None  # Tornado redirects to the path with its slash
            absolute = os.path.realpath(os.path.join(absolute, self.default_filename))
        if not _inside(os.path.realpath(self.root), absolute):
            return None  # a symlink out of the directory: Tornado refuses it
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
        return absolute, status

    # Tornado's handler reads sizes, ranges and content through these.

    def get_content_size(self) -> int:
        if self._copy is None:
            return super().get_content_size()
        return len(self._copy.body)

    def set_extra_headers(self, path: str) -> None:
        if self._copy is not None:
            # The transform leaves an answer with an encoding as it is.
            self.set_header("Content-Encoding", "gzip")
        if self._gzip and not any(
            isinstance(transform, tornado.web.GZipContentEncoding)
            for transform in self._transforms or ()
        ):
            # Embedded in an application without collab's transform, which says it
            # otherwise: a cache must not give this answer to another encoding.
            self.set_header("Vary", "Accept-Encoding")

    def compute_etag(self) -> str | None:
        if self._copy is None:
            return super().compute_etag()
        return self._copy.etag  # another representation, another tag


def _inside(directory: str, path: str) -> bool:
    return (path + os.path.sep).startswith(directory.rstrip(os.path.sep) + os.path.sep)


def _compressed_file(path: str, version: _Version) -> _Compressed:
    """The file at ``path`` compressed, and its tag (on a thread: both read it all)."""
    body = _compress(path)
    digest = hashlib.blake2b(body, digest_size=20).hexdigest()
    return _Compressed(version, body, f'"{digest}-gzip"')


def _compress(path: str) -> bytes:
    with open(path, "rb") as file:
        return gzip.compress(file.read(), compresslevel=GzipAnswers.GZIP_LEVEL, mtime=0)
