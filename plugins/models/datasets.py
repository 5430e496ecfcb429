"""Datasets: the feature rows a backfill computed, stored where training jobs read them.

Layout under ``<data_dir>/datasets`` (``[plugins.models] datasets_directory``)::

    NAME/VERSION/manifest.json  name, version, pipeline (NAME@VERSION), features, created, series: one entry
                                per series {symbol, timeframe, bars, rows, first_ts, last_ts, file, sha256}
    NAME/VERSION/0.npz ...      one file per series, in the manifest's order: ts (int64) and close (float64)
                                of every bar, index (int64: the bars that have a row) and values (float64,
                                rows x features: the pipeline's transformed rows)

Versions, never overwritten: each backfill writes the next version of its dataset into a temporary directory,
fsyncs every file and renames the directory into place, so a version is complete or absent; then only the
newest ``keep_datasets`` versions are kept (older ones are removed). A training request names ``NAME`` (its
newest version) or ``NAME@VERSION``. Reading checks every file against its sha256 (a truncated or altered
file is refused, naming it) and loads arrays without pickles.

>>> import tempfile, pathlib
>>> store = DatasetStore(pathlib.Path(tempfile.mkdtemp()), keep=2)
>>> series = {"symbol": "EURUSD", "timeframe": "1h", "ts": np.arange(3), "close": np.ones(3),
...           "index": np.array([1, 2]), "values": np.zeros((2, 1))}
>>> [store.write("fx", {"pipeline": "p@1", "features": ["a"]}, [series])["version"] for _ in range(3)]
[1, 2, 3]
>>> store.versions("fx"), store.resolve("fx"), store.resolve("fx@2")
([2, 3], ('fx', 3), ('fx', 2))
>>> manifest, arrays = store.read("fx", None, None)
>>> manifest["series"][0]["rows"], arrays[0]["values"].shape
(2, (2, 1))
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import re
import shutil
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ml_processing.sdk import BadRequest, NotFound

MANIFEST = "manifest.json"
ARRAYS = ("ts", "close", "index", "values")
_NAME = re.compile(r"^[A-Za-z0-9_\-]{1,64}$")
_REF = re.compile(r"^([A-Za-z0-9_\-]{1,64})(?:@([0-9]{1,9}))?$")


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _npz(arrays: Mapping[str, np.ndarray]) -> bytes:
    buffer = io.BytesIO()
    np.savez(buffer, **{name: np.ascontiguousarray(arrays[name]) for name in ARRAYS})
    return buffer.getvalue()


class DatasetStore:
    """The datasets on disk: versions written atomically, read with their hashes checked."""

    def __init__(self, root: Path, keep: int) -> None:
        self.root = root
        self.keep = keep
        root.mkdir(parents=True, exist_ok=True)

    # -- reading ------------------------------------------------------------------------------------------

    def names(self) -> list[str]:
        return sorted(p.name for p in self.root.iterdir() if p.is_dir() and _NAME.fullmatch(p.name))

    def versions(self, name: str) -> list[int]:
        folder = self.root / name
        if not _NAME.fullmatch(name) or not folder.is_dir():
            return []
        return sorted(int(p.name) for p in folder.iterdir() if p.is_dir() and p.name.isdigit())

    def resolve(self, ref: str, field: str = "dataset") -> tuple[str, int]:
        """``NAME`` (its newest version) or ``NAME@VERSION`` -> (name, version); `NotFound` otherwise."""
        match = _REF.fullmatch(ref)
        if match is None:
            raise BadRequest(f"a dataset is NAME or NAME@VERSION, got {ref!r:.80}", field=field)
        name, number = match.group(1), match.group(2)
        versions = self.versions(name)
        if not versions:
            raise NotFound(f"no dataset {name!r} (a backfill writes one: POST /api/v1/datasets/{name}/backfill)",
                           field=field)
        version = versions[-1] if number is None else int(number)
        if version not in versions:
            raise NotFound(f"dataset {name!r} has no version {version} (versions: "
                           f"{', '.join(map(str, versions))})", field=field)
        return name, version

    def manifest(self, name: str, version: int) -> dict[str, Any]:
        data: dict[str, Any] = json.loads((self.root / name / str(version) / MANIFEST).read_bytes())
        return data

    def read(self, ref: str, symbols: Sequence[str] | None, timeframe: str | None
             ) -> tuple[dict[str, Any], list[dict[str, np.ndarray]]]:
        """The manifest and the arrays of each series of `ref` (only `symbols` and `timeframe` when given);
        `BadRequest` when a file does not match its hash, or when nothing is left to read."""
        name, version = self.resolve(ref)
        folder = self.root / name / str(version)
        manifest = self.manifest(name, version)
        chosen = [s for s in manifest["series"] if (symbols is None or s["symbol"] in symbols)
                  and (timeframe is None or s["timeframe"] == timeframe)]
        if not chosen:
            raise BadRequest(f"dataset {name}@{version} has no series of the symbols and timeframe asked for",
                             field="symbols")
        arrays = []
        for entry in chosen:
            data = (folder / entry["file"]).read_bytes()
            if hashlib.sha256(data).hexdigest() != entry["sha256"]:
                raise BadRequest(f"dataset {name}@{version}: {entry['file']} does not match its sha256 (truncated or "
                                 "altered): run the backfill again", field="dataset")
            with np.load(io.BytesIO(data), allow_pickle=False) as npz:
                arrays.append({key: npz[key] for key in ARRAYS})
        return {**manifest, "series": chosen}, arrays

    def describe(self) -> list[dict[str, Any]]:
        """Every dataset: its versions and the newest one's pipeline, features, series and rows."""
        out = []
        for name in self.names():
            versions = self.versions(name)
            if not versions:
                continue
            latest = self.manifest(name, versions[-1])
            out.append({"name": name, "versions": versions, "latest": versions[-1], "pipeline": latest["pipeline"],
                        "features": latest["features"], "created": latest["created"],
                        "rows": sum(s["rows"] for s in latest["series"]),
                        "series": [{k: s[k] for k in ("symbol", "timeframe", "bars", "rows", "first_ts", "last_ts")}
                                   for s in latest["series"]]})
        return out

    # -- writing ------------------------------------------------------------------------------------------

    def writer(self, name: str) -> DatasetWriter:
        """A new version of `name`, written series by series into a temporary directory (`DatasetWriter`)."""
        if not _NAME.fullmatch(name):
            raise BadRequest(f"a dataset name is 1-64 letters, digits, '_' or '-', got {name!r:.80}", field="dataset")
        return DatasetWriter(self, name)

    def write(self, name: str, manifest: Mapping[str, Any], series: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
        """A new version of `name` from every item of `series` at once (`DatasetWriter`); its manifest."""
        writer = self.writer(name)
        try:
            entries = [writer.add(i, item) for i, item in enumerate(series)]
            return writer.commit(manifest, entries)
        finally:
            writer.abort()

    def rename(self, folder: Path, tmp: Path, body: dict[str, Any]) -> int:
        """Move `tmp` into place as the next version (another process may take a number first: then the one
        after it)."""
        for _ in range(100):
            version = max(self.versions(folder.name), default=0) + 1
            (tmp / MANIFEST).write_bytes(json.dumps({**body, "version": version}, indent=1).encode())
            with open(tmp / MANIFEST, "rb") as fh:
                os.fsync(fh.fileno())
            _fsync_dir(tmp)
            try:
                os.rename(tmp, folder / str(version))
            except OSError:  # that number was taken meanwhile
                continue
            _fsync_dir(folder)
            return version
        raise RuntimeError(f"could not write a new version of dataset {folder.name!r}")

    def prune(self, name: str) -> None:
        for version in self.versions(name)[:-self.keep]:
            folder = self.root / name / str(version)
            trash = folder.with_name(f".deleted-{version}-{time.monotonic_ns()}")
            os.rename(folder, trash)  # atomic: the version is gone at once, the files after
            shutil.rmtree(trash, ignore_errors=True)

    def sweep(self) -> None:
        """Remove what an interrupted write or prune left behind: trash, and temporary versions of processes
        that no longer run (another process of the service may be writing one right now)."""
        for path in self.root.glob("*/.deleted-*"):
            shutil.rmtree(path, ignore_errors=True)
        for path in self.root.glob("*/.tmp-*"):
            pid = path.name.split("-")[1]
            if not (pid.isdigit() and _running(int(pid))):
                shutil.rmtree(path, ignore_errors=True)


class DatasetWriter:
    """One version being written: `add` each series as it is ready (its file is written at once, so only one
    series is held in memory), then `commit` moves the whole version into place; `abort` (harmless after a
    commit) removes what was written."""

    def __init__(self, store: DatasetStore, name: str) -> None:
        self.store = store
        self.folder = store.root / name
        self.folder.mkdir(parents=True, exist_ok=True)
        self.tmp = self.folder / f".tmp-{os.getpid()}-{time.monotonic_ns()}"
        self.tmp.mkdir()
        self.committed = False

    def add(self, i: int, item: Mapping[str, Any]) -> dict[str, Any]:
        """Write series `i` (``symbol``, ``timeframe`` and the `ARRAYS`); its manifest entry."""
        data = _npz(item)
        path = self.tmp / f"{i}.npz"
        with open(path, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        ts = item["ts"]
        return {"symbol": item["symbol"], "timeframe": item["timeframe"], "bars": len(ts), "rows": len(item["index"]),
                "first_ts": int(ts[0]) if len(ts) else None, "last_ts": int(ts[-1]) if len(ts) else None,
                "file": path.name, "sha256": hashlib.sha256(data).hexdigest()}

    def commit(self, manifest: Mapping[str, Any], entries: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
        """Move the version into place under the next number, prune the old ones; the manifest written."""
        body = {**manifest, "name": self.folder.name,
                "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "series": list(entries)}
        version = self.store.rename(self.folder, self.tmp, body)
        self.committed = True
        self.store.prune(self.folder.name)
        return {**body, "version": version}

    def abort(self) -> None:
        if not self.committed:
            shutil.rmtree(self.tmp, ignore_errors=True)


def _running(pid: int) -> bool:
    """Is process `pid` alive on this host?"""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
