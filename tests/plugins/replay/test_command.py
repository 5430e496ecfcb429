"""``ml-processing replay`` as a user runs it: the plugin's command on the command line, its report, its
argument errors (exit code 2), and the command gone when the plugin is disabled."""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

import pytest

from ml_processing.core import cli
from ml_processing.core.config import load_config
from ml_processing.plugins.replay.command import Job, add_arguments, prepare
from ml_processing.plugins.replay.sources import ReplayInputError
from tests.plugins.replay.helpers import assert_self_contained, write

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")

ROOT = Path(__file__).resolve().parents[3]


def _config_file(tmp_path: Path) -> Path:
    return write(tmp_path, "plugins.toml", '[service]\nlog_level = "error"\n[plugins]\nautoload = false\n'
                                            "[kernel]\nuvloop = false\n")


def test_cli_replay_writes_the_report_and_leaves_no_data_behind(
        quiet_cli: None, capsys: pytest.CaptureFixture[str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    scratch = tmp_path / "scratch"
    scratch.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(scratch))  # where the temporary data directory goes
    monkeypatch.chdir(tmp_path)
    out = tmp_path / "r"
    code = cli.main(["replay", "--bars", "300", "--seed", "9", "--out", str(out), "--no-progress",
                     "--cost-bps", "5", "--config", str(_config_file(tmp_path))])
    captured = capsys.readouterr()
    assert code == 0, captured.err
    assert str(out / "report.json") in captured.out and str(out / "report.html") in captured.out
    assert "ensemble" in captured.out and "300 bars, 280 predictions" in captured.out
    assert "starting the service" not in captured.err and "ETA" not in captured.err  # --no-progress
    report: dict[str, Any] = json.loads((out / "report.json").read_text(encoding="utf-8"))
    assert report["counts"]["bars"] == 300 and report["source"] == "synthetic market, seed 9"
    assert report["trading"]["cost_bps"] == 5.0 and report["trading"]["signals_from"] == "ensemble"
    assert "trading on the signals of ensemble, 5 bp per unit traded" in captured.out
    assert_self_contained((out / "report.html").read_text(encoding="utf-8"))
    assert list(scratch.iterdir()) == []  # the temporary data directory is gone
    assert not (tmp_path / "var").exists()  # the configured data directory was never touched


@pytest.mark.parametrize(("options", "message"), [
    (["--csv", "missing.csv"], "missing.csv: cannot read"),
    (["--symbol", "A.B"], "invalid symbol"),
    (["--timeframe", "1x"], "timeframe '1x'"),
    (["--bars", "0"], "--bars must be"),
    (["--rate", "-1"], "--rate must be"),
    (["--cost-bps", "-1"], "--cost-bps must be 0 to 10,000"),
    (["--cost-bps", "nan"], "--cost-bps must be"),
    (["--periods-per-year", "-252"], "--periods-per-year must be"),
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
    path = write(tmp_path, "bars.csv", "date,open,high,low,volume\n2025-01-01,1,1,1,1\n")
    assert cli.main(["replay", "--csv", str(path), "--config", str(_config_file(tmp_path))]) == 2
    assert "missing close" in capsys.readouterr().err


def _job(tmp_path: Path, section: str, *options: str) -> Job:
    parser = argparse.ArgumentParser()
    add_arguments(parser)
    config = load_config(write(tmp_path, "replay.toml", f"[plugins.replay]\n{section}"), environ={})
    return prepare(parser.parse_args(["--bars", "10", "--out", str(tmp_path / "out"), *options]), config)


def test_trading_defaults_come_from_the_config_and_the_options_override_them(tmp_path: Path) -> None:
    assert (_job(tmp_path, "").cost_bps, _job(tmp_path, "").periods_per_year) == (1.0, None)  # documented
    configured = _job(tmp_path, "cost_bps = 2.5\nperiods_per_year = 252\n")
    assert (configured.cost_bps, configured.periods_per_year) == (2.5, 252.0)
    given = _job(tmp_path, "cost_bps = 2.5\nperiods_per_year = 252\n", "--cost-bps", "0", "--periods-per-year", "0")
    assert (given.cost_bps, given.periods_per_year) == (0.0, None)  # 0: from the timeframe
    with pytest.raises(ReplayInputError, match=r"\[plugins.replay\] cost_bps: must be 0 to 10,000"):
        _job(tmp_path, "cost_bps = -1\n")


def test_a_wrong_replay_section_stops_the_command_naming_the_key(
        quiet_cli: None, capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    path = write(tmp_path, "bad.toml", "[plugins]\nautoload = false\n[plugins.replay]\ncost_bps = -3\n")
    assert cli.main(["replay", "--config", str(path)]) == 2
    err = capsys.readouterr().err
    assert "[plugins.replay]" in err and "cost_bps: must be 0 to 10,000" in err


def test_replay_is_a_command_of_the_replay_plugin(tmp_path: Path) -> None:
    """`ml-processing --help` lists it among the commands plugins add; `replay --help` has its options."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("MLP_")}
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT), env.get("PYTHONPATH", "")]).rstrip(os.pathsep)
    config = str(_config_file(tmp_path))
    done = subprocess.run([sys.executable, "-m", "ml_processing.core.cli", "--help"], capture_output=True,
                          text=True, timeout=120, env={**env, "MLP_CONFIG": config})
    assert done.returncode == 0, done.stderr
    listed = [line for line in done.stdout.splitlines() if line.strip().startswith("replay ")]
    assert listed and "(plugin replay)" in done.stdout and "report.html" in done.stdout
    done = subprocess.run([sys.executable, "-m", "ml_processing.core.cli", "replay", "--help"],
                          capture_output=True, text=True, timeout=120, env={**env, "MLP_CONFIG": config})
    assert done.returncode == 0, done.stderr
    assert all(option in done.stdout for option in ("--csv", "--bars", "--seed", "--rate", "--config", "--cost-bps",
                                                    "--periods-per-year"))


def test_replay_is_gone_when_its_plugin_is_disabled(quiet_cli: None, capsys: pytest.CaptureFixture[str],
                                                    tmp_path: Path) -> None:
    path = write(tmp_path, "off.toml", "[plugins]\nautoload = false\n[plugins.replay]\nenabled = false\n")
    with pytest.raises(SystemExit) as exited:
        cli.main(["replay", "--config", str(path)])
    assert exited.value.code == 2
    assert "invalid choice: 'replay'" in capsys.readouterr().err
