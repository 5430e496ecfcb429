"""The token store and the allow-list as a running service sees them: changes made by another process are
seen at the next check, edits by hand within the backstop, and a store that cannot be watched cheaply is
looked at on every check."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import pytest

from ml_processing.core.security import shared
from ml_processing.core.security.keys import KeyRing
from ml_processing.core.security.shared import SharedMap
from ml_processing.core.security.tokens import TokenStore
from ml_processing.core.storage import atomic_write


def names(records: shared.Records) -> list[str]:
    return sorted(records)


def in_another_process(code: str) -> None:
    subprocess.run([sys.executable, "-c", code], check=True, timeout=60)


@pytest.fixture
def no_backstop(monkeypatch: pytest.MonkeyPatch) -> None:
    """Only the stamp can tell a change: the look at the file itself is an hour away."""
    monkeypatch.setattr(shared, "BACKSTOP_S", 3600.0)


def test_a_change_by_another_process_is_seen_at_the_next_check(tmp_path: Path, no_backstop: None) -> None:
    path = tmp_path / "names.json"
    service = SharedMap(path, names)
    assert service.current() == []
    for k in range(3):
        in_another_process("from ml_processing.core.security.shared import SharedMap; "
                           f"m = SharedMap({str(path)!r}, dict); m.write({{**m.read(), 'n{k}': {{}}}})")
        assert service.current() == [f"n{i}" for i in range(k + 1)]  # no wait, no retry
    assert (tmp_path / "names.stamp").stat().st_mode & 0o777 == 0o600


def test_a_token_revoked_in_another_process_is_refused_at_once(tmp_path: Path, no_backstop: None) -> None:
    store = TokenStore(tmp_path / "tokens.json")
    token = store.add("desk", ["compute"])
    assert store.verify(token) is not None
    in_another_process("from ml_processing.core.security.tokens import TokenStore; "
                       f"TokenStore({str(store.path)!r}).revoke('desk')")
    assert store.verify(token) is None
    stored = (tmp_path / "tokens.json").read_text()
    assert token.split("_")[2] not in stored  # the secret is never on disk, only its salted hash


def test_a_key_removed_in_another_process_is_refused_at_once(tmp_path: Path, no_backstop: None) -> None:
    ring = KeyRing(tmp_path)
    public, _ = ring.add_client("engine", ["compute"])
    assert ring.principal(public.encode()) is not None
    in_another_process(f"from ml_processing.core.security.keys import KeyRing; KeyRing({str(tmp_path)!r})"
                       ".remove('engine')")
    assert ring.principal(public.encode()) is None


def test_an_edit_by_hand_is_seen_within_the_backstop(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(shared, "BACKSTOP_S", 0.05)
    path = tmp_path / "names.json"
    service = SharedMap(path, names)
    assert service.current() == []
    atomic_write(path, json.dumps({"by-hand": {}}).encode())  # no stamp written
    assert _seen_within(service, ["by-hand"], 2.0)


def test_a_removed_stamp_is_mapped_anew(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(shared, "BACKSTOP_S", 0.05)
    path = tmp_path / "names.json"
    service = SharedMap(path, names)
    assert service.current() == []
    (tmp_path / "names.stamp").unlink()
    SharedMap(path, names).write({"after": {}})  # a new stamp file: the service's mapping shows the old one
    assert _seen_within(service, ["after"], 2.0)
    monkeypatch.setattr(shared, "BACKSTOP_S", 3600.0)
    SharedMap(path, names).write({"again": {}})  # the new stamp is the mapped one now: seen at once
    assert service.current() == ["again"]


def test_a_stamp_that_cannot_be_mapped_means_a_look_at_the_file_at_each_check(tmp_path: Path) -> None:
    (tmp_path / "names.stamp").mkdir()  # not a file: mapping it fails
    path = tmp_path / "names.json"
    service = SharedMap(path, names)
    assert service.current() == []
    atomic_write(path, json.dumps({"x": {}}).encode())
    assert service.current() == ["x"]


def test_an_unreadable_token_record_refuses_that_token_only(tmp_path: Path) -> None:
    store = TokenStore(tmp_path / "tokens.json")
    good, bad = store.add("good", ["read"]), store.add("bad", ["read"])
    records = json.loads(store.path.read_text())
    records[bad.split("_")[1]]["salt"] = "not hex"
    SharedMap(store.path, names).write(records)
    assert store.verify(good) is not None and store.verify(good).name == "good"  # type: ignore[union-attr]
    assert store.verify(bad) is None


def _seen_within(service: SharedMap[list[str]], expected: list[str], seconds: float) -> bool:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if service.current() == expected:
            return True
        time.sleep(0.01)
    return False
