"""A JSON map that commands change and a running service checks at every request, for a memory read.

The token store and the client allow-list are such maps: ``ml-processing tokens revoke`` (another process)
changes the file, and the service must refuse the revoked token on the very next request. Looking at the
file at each request (a ``stat``) is a system call per request, and a system call is the dearest thing the
check does on a virtual machine. Instead:

* a change replaces the file atomically (`atomic_write`) and **then** writes 8 new random bytes in place
  into a *stamp* file beside it (``tokens.json`` -> ``tokens.stamp``);
* the service maps the stamp into memory (``mmap``, shared, read-only). A write by any process on the host
  lands in the page-cache page that the mapping shows, so the service reads the new bytes at its next check,
  with no system call; it then re-reads the map.

The service reads the stamp before the file, and a command writes the file before the stamp, so every check
that starts after the command returned sees the change. A change made without the stamp (the file edited
by hand, or the stamp file removed and made anew) is noticed by a ``stat`` at most every `BACKSTOP_S`
seconds. Where the stamp cannot be mapped, every check looks at the file (one ``stat``).

The stamp is only ever written in place, never truncated (a mapped file cut shorter than the mapping
faults its reader): to reset it, remove it. The files must live on a local file system: on a network one,
another host's write is not shown to a mapping at once.

>>> import tempfile, pathlib
>>> folder = pathlib.Path(tempfile.mkdtemp())
>>> service = SharedMap(folder / "names.json", lambda records: sorted(records))
>>> command = SharedMap(folder / "names.json", sorted)
>>> service.current()
[]
>>> command.write({"desk": {}})
>>> service.current()
['desk']
"""

from __future__ import annotations

import mmap
import os
import secrets
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, Generic, TypeVar

import orjson

from ..log import get_logger
from ..storage import atomic_write

log = get_logger(__name__)

T = TypeVar("T")

STAMP_BYTES = 8
#: Seconds between two looks at the file itself, for changes made without the stamp (an edit by hand).
BACKSTOP_S = 1.0

Records = dict[str, dict[str, Any]]
_FileId = tuple[int, int, int] | None  # (inode, mtime_ns, size); None: no file


def _file_id(path: Path) -> _FileId:
    try:
        st = os.stat(path)
    except FileNotFoundError:
        return None
    return st.st_ino, st.st_mtime_ns, st.st_size


def _inode(path: Path) -> int | None:
    try:
        return os.stat(path).st_ino
    except FileNotFoundError:
        return None


class SharedMap(Generic[T]):
    """The records of one JSON file, and what `index` makes of them for the checks (re-made on a change)."""

    def __init__(self, path: str | os.PathLike[str], index: Callable[[Records], T]) -> None:
        self.path = Path(path)
        self.stamp_path = self.path.with_suffix(".stamp")
        self._index = index
        self._view: T | None = None
        self._seen: bytes | None = None  # the stamp when the view was made
        self._file: _FileId = None  # the file when the view was made
        self._map: mmap.mmap | None = None
        self._map_inode: int | None = None
        self._mapped = False  # tried to map the stamp (once, and again when the backstop sees it replaced)
        self._next_look = 0.0

    # -- commands -------------------------------------------------------------------------------------

    def read(self) -> Records:
        """The records as they are on disk now."""
        try:
            data = self.path.read_bytes()
        except FileNotFoundError:
            return {}
        records: Records = orjson.loads(data) if data.strip() else {}
        return records

    def write(self, records: Records) -> None:
        """Replace the file (owner-only, atomically), then tell every running service (the stamp)."""
        atomic_write(self.path, orjson.dumps(records, option=orjson.OPT_INDENT_2))
        fd = os.open(self.stamp_path, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            os.pwrite(fd, secrets.token_bytes(STAMP_BYTES), 0)
        finally:
            os.close(fd)
        self._view = None  # this process's own view too

    # -- the checks -----------------------------------------------------------------------------------

    def current(self) -> T:
        """The indexed records, re-made when the stamp changed (or, at most every `BACKSTOP_S` s, the file)."""
        stamp_map, view = self._map, self._view
        if (stamp_map is not None and view is not None and stamp_map[:STAMP_BYTES] == self._seen
                and time.monotonic() < self._next_look):
            return view  # what nearly every check does: one read of the mapped stamp, one clock read
        return self._refresh()

    def _refresh(self) -> T:
        if not self._mapped:
            self._map_stamp()
        stamp_map = self._map
        if stamp_map is None:  # no stamp to read: one stat per check
            if self._view is None or _file_id(self.path) != self._file:
                return self._load(None)
            return self._view
        stamp = stamp_map[:STAMP_BYTES]
        if self._view is None or stamp != self._seen:
            return self._load(stamp)
        self._next_look = time.monotonic() + BACKSTOP_S  # the look at the file itself, now
        if _inode(self.stamp_path) != self._map_inode:  # removed or replaced: map the new one
            self._map_stamp()
            return self._load(self._map[:STAMP_BYTES] if self._map is not None else None)
        if _file_id(self.path) != self._file:
            return self._load(stamp)
        return self._view

    def _load(self, stamp: bytes | None) -> T:
        """Re-read the file (the stamp was read before it: a change after this read changes it again)."""
        self._file = _file_id(self.path)
        self._next_look = time.monotonic() + BACKSTOP_S
        view = self._view = self._index(self.read())
        self._seen = stamp
        return view

    def _map_stamp(self) -> None:
        self._mapped = True
        if self._map is not None:
            self._map.close()
            self._map, self._map_inode = None, None
        try:
            st = os.stat(self.stamp_path) if self.stamp_path.exists() else None
            if st is None or st.st_size < STAMP_BYTES:  # made here (a read-only folder needs it made before)
                self.path.parent.mkdir(parents=True, exist_ok=True)
                fd = os.open(self.stamp_path, os.O_RDWR | os.O_CREAT, 0o600)
                try:
                    os.pwrite(fd, secrets.token_bytes(STAMP_BYTES), 0)
                finally:
                    os.close(fd)
            fd = os.open(self.stamp_path, os.O_RDONLY)
            try:
                self._map = mmap.mmap(fd, STAMP_BYTES, mmap.MAP_SHARED, mmap.PROT_READ)
                self._map_inode = os.fstat(fd).st_ino
            finally:
                os.close(fd)
        except OSError as exc:
            log.warning("stamp_not_mapped", stamp=str(self.stamp_path), error=str(exc),
                        consequence="every check looks at the file (one stat)")
