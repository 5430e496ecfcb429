"""``ml-processing replay``: CSV and synthetic bars, an end-to-end replay through a real kernel over real
pub/sub, the report files, and the command line."""

from __future__ import annotations

import json
import os
import re
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from ml_processing.core import cli
from ml_processing.core.config import PluginSection
from ml_processing.core.replay import (
    START_MS,
    Flow,
    ReplayInputError,
    read_csv,
    render_html,
    replay,
    synthetic_bars,
    write_report,
)
from tests.conftest import make_config

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")

MODELS = {"ensemble", "xgboost_default", "sklearn_default", "river_default"}
EXTERNAL = re.compile(r"""(?:src|href)\s*=\s*["']?\s*(?:https?:)?//""", re.IGNORECASE)


def _write(tmp_path: Path, name: str, text: str) -> Path:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


def _self_contained(page: str) -> None:
    assert page.count("<svg") >= 2
    assert not EXTERNAL.search(page), EXTERNAL.search(page)
    assert "<script" not in page.lower() and "<link" not in page.lower()


# -- bars ---------------------------------------------------------------------------------------------------


def test_read_csv_with_mixed_header_case_iso_dates_and_a_bad_row(tmp_path: Path) -> None:
    path = _write(tmp_path, "bars.csv", (
        " Date ,OPEN,High,low,Close,VOLUME\n"
        "2025-01-01T00:00:00Z,1,2,0.5,1.5,10\n"
        "2025-01-01T00:01:00+00:00,1.5,2,1,1.8,12\n"
        "2025-01-01T00:02:00Z,1.8,x,1,1.7,9\n"
        "\n"
        "2025-01-01 00:03:00,1.7,1.9,1.6,1.65,11\n"
        "2025-01-01T00:04:00Z,1.65,1.7\n"))
    read = read_csv(path)
    assert [bar["ts"] for bar in read.bars] == [START_MS, START_MS + 60_000, START_MS + 180_000]
    assert [bar["close"] for bar in read.bars] == [1.5, 1.8, 1.65]
    assert read.bars[0] == {"ts": START_MS, "open": 1.0, "high": 2.0, "low": 0.5, "close": 1.5, "volume": 10.0}
    assert read.skipped == ["line 4: high: not a number ('x')", "line 7: 3 cells, the header has at least 6"]
    assert not read.reordered


def test_read_csv_epoch_numbers_out_of_order_and_repeated(tmp_path: Path) -> None:
    seconds = START_MS // 1000
    path = _write(tmp_path, "epoch.csv", (
        "timestamp,open,high,low,close,volume\n"
        f"{seconds + 60},1,1,1,2,1\n"
        f"{START_MS},1,1,1,1,1\n"  # milliseconds
        f"{seconds + 60},1,1,1,3,1\n"
        f"{seconds + 120},1,1,1,4,-5\n"))
    read = read_csv(path)
    assert [(bar["ts"], bar["close"]) for bar in read.bars] == [(START_MS, 1.0), (START_MS + 60_000, 2.0)]
    assert read.reordered
    assert read.skipped == [f"line 4: timestamp {START_MS + 60_000} repeats line 2", "line 5: volume: negative (-5.0)"]
    assert [bar["ts"] for bar in read_csv(path, limit=1).bars] == [START_MS]


def test_read_csv_without_close_is_a_clear_error(tmp_path: Path) -> None:
    path = _write(tmp_path, "no-close.csv", "ts,open,high,low,volume\n1735689600000,1,2,0.5,10\n")
    with pytest.raises(ReplayInputError) as caught:
        read_csv(path)
    message = str(caught.value)
    assert str(path) in message and "missing close" in message and "open, high, low, close, volume" in message


@pytest.mark.parametrize(("text", "expected"), [
    ("open,high,low,close,volume\n1,1,1,1,1\n", "a time column"),
    ("", "empty file"),
    ("ts,open,high,low,close,volume\nyesterday,1,1,1,1,1\n", "no usable bars"),
])
def test_read_csv_refuses_unusable_files(tmp_path: Path, text: str, expected: str) -> None:
    with pytest.raises(ReplayInputError, match=expected):
        read_csv(_write(tmp_path, "bad.csv", text))
    with pytest.raises(ReplayInputError, match="cannot read"):
        read_csv(tmp_path / "missing.csv")


def test_synthetic_bars_are_deterministic_for_a_seed() -> None:
    bars = synthetic_bars(500, seed=42)
    assert bars == synthetic_bars(500, seed=42)
    assert bars != synthetic_bars(500, seed=43)
    assert [bar["ts"] - START_MS for bar in bars[:3]] == [0, 60_000, 120_000]
    assert all(b["low"] <= min(b["open"], b["close"]) <= max(b["open"], b["close"]) <= b["high"] for b in bars)
    assert all(b["volume"] > 0 for b in bars)
    assert [b["open"] for b in bars[1:]] == [b["close"] for b in bars[:-1]]
    hourly = synthetic_bars(3, seed=42, step_ms=3_600_000)
    assert [bar["ts"] % 3_600_000 for bar in hourly] == [0, 0, 0]


# -- end to end ---------------------------------------------------------------------------------------------


async def test_replay_through_the_default_models_and_its_report(tmp_path: Path) -> None:
    config = make_config(tmp_path, modules=(), sections={"models": PluginSection(True, {})})
    bars = synthetic_bars(400, seed=3)
    report = await replay(config, bars, symbol="TST", source="synthetic, seed 3")

    counts = report["counts"]
    assert counts["bars"] == counts["sent"] == counts["feature_rows"] == 400
    assert counts["lookback"] == 20  # the default pipeline's warm-up
    assert counts["predictions"] == 400 - 20 == counts["predictions_by_model"]["ensemble"]
    assert counts["labels"] == counts["predictions"] - 1  # the last bar waits for the next one
    assert counts["signals"] == sum(counts["signals_by_side"].values()) == report["service_counts"]["signals"]
    assert counts["other_timeframes"] == counts["malformed"] == 0
    assert report["flow"] == {"window": 64, "batch": 16, "rate": 0.0, "stalls": 0, "throttled": True,
                              "complete": True}
    assert report["warnings"] == []

    assert set(report["scores"]) >= MODELS
    for model in MODELS:
        score = report["scores"][model]
        assert score["labels"] == counts["labels"] and 0.0 <= score["accuracy"] <= 1.0
    ensemble = report["weights"]["ensemble"]
    assert set(ensemble["members"]) == MODELS - {"ensemble"}
    assert sum(ensemble["weights"]) == pytest.approx(1.0, abs=1e-5)
    assert ensemble["updates"] == counts["labels"]
    accuracy = report["timelines"]["accuracy"]["ensemble"]
    assert [x for x, _ in accuracy] == [50, 100, 150, 200, 250, 300, 350, counts["labels"]]
    assert report["timelines"]["weights"]["ensemble"]["points"][-1][0] == counts["labels"]
    assert report["throughput"]["bars_per_s"] > 0 and report["latency_ms"]["bars"] == counts["predictions"]
    assert report["baseline"]["labels"] == counts["labels"]

    json_path, html_path = write_report(report, tmp_path / "out")
    saved = json.loads(json_path.read_text(encoding="utf-8"))
    assert saved["counts"] == counts and saved["scores"]["ensemble"] == report["scores"]["ensemble"]
    page = html_path.read_text(encoding="utf-8")
    _self_contained(page)
    assert all(model in page for model in MODELS) and "Weights of ensemble" in page
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["report.html", "report.json"]
    assert all(p.stat().st_mode & 0o777 == 0o644 for p in (tmp_path / "out").iterdir())  # for people to open


async def test_replay_never_hangs_when_nothing_comes_back(tmp_path: Path) -> None:
    """No features and no models service: the flow control stops waiting, the report says so."""
    config = make_config(tmp_path, modules=(), sections={"models": PluginSection(False),
                                                         "features": PluginSection(False)})
    flow = Flow(stall_timeout=0.3, idle_timeout=0.2, request_timeout=2.0)
    report = await replay(config, synthetic_bars(200, seed=1), flow=flow)
    assert report["counts"]["sent"] == 200 and report["counts"]["predictions"] == 0
    assert report["flow"]["stalls"] == 1 and report["flow"]["throttled"] is False
    assert report["flow"]["complete"] is False and report["scores"] == {} and report["latency_ms"] is None
    assert any("nothing came back" in w for w in report["warnings"])
    assert any("no live report from the models service" in w for w in report["warnings"])
    page = render_html(report)
    _self_contained(page)
    assert "No scores" in page and "nothing came back" in page


# -- the command line ---------------------------------------------------------------------------------------


@pytest.fixture
def quiet_cli(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """`cli.main` in-process without MLP_ variables and without configuring logging (structlog would keep
    pytest's capture stream)."""
    for var in [v for v in os.environ if v.startswith("MLP_")]:
        monkeypatch.delenv(var)
    monkeypatch.setattr(cli.log, "configure", lambda *args, **kwargs: None)
    yield


def _config_file(tmp_path: Path) -> Path:
    return _write(tmp_path, "plugins.toml", '[service]\nlog_level = "error"\n[plugins]\nautoload = false\n'
                                            "[kernel]\nuvloop = false\n")


def test_cli_replay_writes_the_report_and_leaves_no_data_behind(
        quiet_cli: None, capsys: pytest.CaptureFixture[str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    scratch = tmp_path / "scratch"
    scratch.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(scratch))  # where the temporary data directory goes
    monkeypatch.chdir(tmp_path)
    out = tmp_path / "r"
    code = cli.main(["replay", "--bars", "300", "--seed", "9", "--out", str(out), "--no-progress",
                     "--config", str(_config_file(tmp_path))])
    captured = capsys.readouterr()
    assert code == 0, captured.err
    assert str(out / "report.json") in captured.out and str(out / "report.html") in captured.out
    assert "ensemble" in captured.out and "300 bars, 280 predictions" in captured.out
    assert "starting the service" not in captured.err and "ETA" not in captured.err  # --no-progress
    report: dict[str, Any] = json.loads((out / "report.json").read_text(encoding="utf-8"))
    assert report["counts"]["bars"] == 300 and report["source"] == "synthetic market, seed 9"
    _self_contained((out / "report.html").read_text(encoding="utf-8"))
    assert list(scratch.iterdir()) == []  # the temporary data directory is gone
    assert not (tmp_path / "var").exists()  # the configured data directory was never touched


@pytest.mark.parametrize(("options", "message"), [
    (["--csv", "missing.csv"], "missing.csv: cannot read"),
    (["--symbol", "A.B"], "invalid symbol"),
    (["--timeframe", "1x"], "timeframe '1x'"),
    (["--bars", "0"], "--bars must be"),
    (["--rate", "-1"], "--rate must be"),
])
def test_cli_replay_argument_errors_exit_2(quiet_cli: None, capsys: pytest.CaptureFixture[str], tmp_path: Path,
                                           monkeypatch: pytest.MonkeyPatch, options: list[str], message: str) -> None:
    monkeypatch.chdir(tmp_path)
    assert cli.main(["replay", "--no-progress", "--config", str(_config_file(tmp_path)), *options]) == 2
    err = capsys.readouterr().err
    assert err.startswith("ml-processing replay: ") and message in err
    assert not (tmp_path / "replay-report").exists()


def test_cli_replay_of_a_csv_missing_close_exits_2(quiet_cli: None, capsys: pytest.CaptureFixture[str],
                                                   tmp_path: Path) -> None:
    path = _write(tmp_path, "bars.csv", "date,open,high,low,volume\n2025-01-01,1,1,1,1\n")
    assert cli.main(["replay", "--csv", str(path), "--config", str(_config_file(tmp_path))]) == 2
    assert "missing close" in capsys.readouterr().err
