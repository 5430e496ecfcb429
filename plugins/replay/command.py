"""``ml-processing replay``: its options, the checks of a command line, the run, and the report files.

The command replays bars (a CSV file, or the seeded synthetic market) through the live path of an
in-process service (`ml_processing.plugins.replay.driver.replay`) kept apart from any running one: its own
loopback ports and, unless ``--data-dir`` names one, a fresh temporary data directory deleted afterwards,
so the real registry is never touched (on the empty one the default models are trained first, a few
seconds). It writes ``report.json`` and ``report.html`` into ``--out`` and prints a summary. Exit codes:
0 done, 1 the replay failed, 2 bad arguments or CSV, 130 interrupted (SIGINT or SIGTERM).

``[plugins.replay]`` (`ReplayConfig`) holds the defaults of the trading figures, which ``--cost-bps`` and
``--periods-per-year`` override.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import dataclasses
import json
import math
import shutil
import signal
import sys
import tempfile
from collections.abc import Coroutine, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TextIO, TypeVar

import numpy as np

from ml_processing.sdk import BadRequest, Command, Config, atomic_write, topics

from .driver import DEFAULT_SYMBOL, DEFAULT_TIMEFRAME, ReplayError, isolated, replay
from .page import render_html
from .progress import Progress
from .report import json_ready, summary
from .sources import DEFAULT_SEED, Bar, CsvBars, ReplayInputError, read_csv, step_ms, synthetic_bars
from .trading import DEFAULT_COST_BPS

DEFAULT_BARS = 20_000
DEFAULT_OUT = "replay-report"
MAX_BARS = 10_000_000
MAX_COST_BPS = 10_000.0  # the whole size changed

T = TypeVar("T")


@dataclass(frozen=True)
class ReplayConfig:
    """``[plugins.replay]``: the defaults of the report's trading figures (the command's options override)."""

    cost_bps: float = DEFAULT_COST_BPS  # each position change costs this many basis points of the size changed
    periods_per_year: float = 0.0  # annualisation: bars in a year; 0 for 365.25 days over the bars' timeframe

    def __post_init__(self) -> None:
        if not (math.isfinite(self.cost_bps) and 0 <= self.cost_bps <= MAX_COST_BPS):
            raise ValueError(f"cost_bps: must be 0 to {MAX_COST_BPS:,.0f} basis points, got {self.cost_bps}")
        if not (math.isfinite(self.periods_per_year) and self.periods_per_year >= 0):
            raise ValueError(f"periods_per_year: must be 0 (from the timeframe) or a positive number, got "
                             f"{self.periods_per_year}")

    @classmethod
    def of(cls, config: Config) -> ReplayConfig:
        """The ``[plugins.replay]`` section of `config` (checked again: a configuration built in code skips
        the plugin host's check); `ReplayInputError` naming the key when it is wrong."""
        section = config.plugins.sections.get("replay")
        try:
            return cls(**dict(section.options if section else {}))
        except TypeError as exc:
            raise ReplayInputError(f"[plugins.replay]: {exc}") from None
        except ValueError as exc:
            raise ReplayInputError(f"[plugins.replay] {exc}") from None


class Interrupted(Exception):
    """SIGINT or SIGTERM stopped the replay (exit code 130)."""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The options of ``ml-processing replay`` (``--config`` is added by the caller)."""
    parser.add_argument("--csv", metavar="FILE", help="bars to replay: a CSV with ts (or timestamp/date), open, "
                        "high, low, close, volume (default: a seeded synthetic market)")
    parser.add_argument("--bars", type=int, metavar="N", help=f"bars to replay (default: {DEFAULT_BARS:,} "
                        "synthetic ones; with --csv every row, or the first N)")
    parser.add_argument("--seed", type=int, default=DEFAULT_SEED, metavar="S",
                        help=f"seed of the synthetic market (default: {DEFAULT_SEED})")
    parser.add_argument("--symbol", default=DEFAULT_SYMBOL, metavar="SYM",
                        help=f"symbol of the replayed series (default: {DEFAULT_SYMBOL})")
    parser.add_argument("--timeframe", default=DEFAULT_TIMEFRAME, metavar="TF",
                        help=f"timeframe of the bars (default: {DEFAULT_TIMEFRAME})")
    parser.add_argument("--out", default=DEFAULT_OUT, metavar="DIR",
                        help=f"where report.json and report.html go (default: ./{DEFAULT_OUT})")
    parser.add_argument("--rate", type=float, default=0.0, metavar="BARS_PER_S",
                        help="bars per second (default 0: as fast as the service keeps up)")
    parser.add_argument("--data-dir", metavar="DIR",
                        help="data directory of the replayed service (default: a fresh temporary one, deleted "
                             "afterwards)")
    parser.add_argument("--no-progress", action="store_true", help="no progress line on stderr")
    parser.add_argument("--auth", action="store_true",
                        help="run the replayed service with authentication on ([security] auth): CURVE on its "
                             "ZeroMQ sockets, the replay's feed and subscriber using a key it allows for the run")
    parser.add_argument("--cost-bps", type=float, metavar="BPS",
                        help="cost of each position change in the trading figures, basis points of the size "
                             f"changed (default: [plugins.replay] cost_bps, else {DEFAULT_COST_BPS:g})")
    parser.add_argument("--periods-per-year", type=float, metavar="N",
                        help="bars in a year, to annualise the trading figures (default: [plugins.replay] "
                             "periods_per_year, else 365.25 days over the timeframe)")




@dataclass(frozen=True)
class Job:
    """A checked replay command line."""

    config: Config
    bars: list[Bar]
    source: str
    symbol: str
    timeframe: str
    rate: float
    out: Path
    data_dir: Path | None
    progress: bool
    cost_bps: float = DEFAULT_COST_BPS
    periods_per_year: float | None = None  # None: from the timeframe


def prepare(args: argparse.Namespace, config: Config, *, stderr: TextIO | None = None) -> Job:
    """Check the arguments and read or make the bars; `ReplayInputError` for anything unusable."""
    stderr = stderr or sys.stderr
    try:
        topics.bar(args.symbol, args.timeframe)
    except BadRequest as exc:
        raise ReplayInputError(exc.message) from None
    step = step_ms(args.timeframe)
    if args.bars is not None and not 1 <= args.bars <= MAX_BARS:
        raise ReplayInputError(f"--bars must be 1 to {MAX_BARS:,}, got {args.bars}")
    if not (math.isfinite(args.rate) and args.rate >= 0):
        raise ReplayInputError(f"--rate must be 0 (as fast as possible) or a positive number, got {args.rate}")
    trading = _trading_options(args, ReplayConfig.of(config))
    out = Path(args.out)
    if out.exists() and not out.is_dir():
        raise ReplayInputError(f"--out {out} exists and is not a directory")
    if args.csv is None:
        bars = synthetic_bars(args.bars or DEFAULT_BARS, args.seed, step_ms=step)
        source = f"synthetic market, seed {args.seed}"
    else:
        read = read_csv(args.csv, limit=args.bars)
        _tell_skipped(read, stderr)
        bars, source = read.bars, f"CSV {args.csv}"
        _check_spacing(bars, args.timeframe, step, stderr)
    data_dir = Path(args.data_dir) if args.data_dir else None
    if getattr(args, "auth", False):
        config = with_auth(config)
    return Job(config, bars, source, args.symbol, args.timeframe, args.rate, out, data_dir,
               not args.no_progress, trading.cost_bps, trading.periods_per_year or None)


def _trading_options(args: argparse.Namespace, defaults: ReplayConfig) -> ReplayConfig:
    """`defaults` with ``--cost-bps`` and ``--periods-per-year`` where given; `ReplayInputError` for bad ones."""
    cost = defaults.cost_bps if args.cost_bps is None else args.cost_bps
    per_year = defaults.periods_per_year if args.periods_per_year is None else args.periods_per_year
    if not (math.isfinite(cost) and 0 <= cost <= MAX_COST_BPS):
        raise ReplayInputError(f"--cost-bps must be 0 to {MAX_COST_BPS:,.0f}, got {cost}")
    if not (math.isfinite(per_year) and per_year >= 0):
        raise ReplayInputError(f"--periods-per-year must be a positive number (0: from the timeframe), "
                               f"got {per_year}")
    return ReplayConfig(float(cost), float(per_year))


def with_auth(config: Config) -> Config:
    """`config` with ``[security] auth`` on for the replayed service (no admin token printed: the replay
    needs none, and its data directory is usually thrown away)."""
    security = dataclasses.replace(config.security, auth=True, bootstrap_admin=False)
    return dataclasses.replace(config, security=security)


def _tell_skipped(read: CsvBars, stderr: TextIO) -> None:
    for text in read.skipped[:20]:
        print(f"ml-processing replay: skipped {text}", file=stderr)
    if len(read.skipped) > 20:
        print(f"ml-processing replay: ... and {len(read.skipped) - 20} more skipped rows", file=stderr)
    if read.reordered:
        print("ml-processing replay: the rows were not in time order; replayed sorted by time", file=stderr)


def _check_spacing(bars: Sequence[Bar], timeframe: str, step: int, stderr: TextIO) -> None:
    """Warn when the bars' usual spacing is not the timeframe."""
    if len(bars) < 3:
        return
    spacing = int(np.median(np.diff([bar["ts"] for bar in bars])))
    if spacing != step:
        print(f"ml-processing replay: the bars are usually {spacing / 1000:g} s apart, but --timeframe "
              f"{timeframe} is {step / 1000:g} s", file=stderr)


async def _interruptible(coro: Coroutine[Any, Any, T]) -> T:
    """Await `coro`; SIGINT or SIGTERM cancels it (its cleanup runs) and raises `Interrupted`."""
    loop = asyncio.get_running_loop()
    task = asyncio.ensure_future(coro)
    handled = []
    for sig in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError, RuntimeError, ValueError):
            loop.add_signal_handler(sig, task.cancel)
            handled.append(sig)
    try:
        return await task
    except asyncio.CancelledError:
        current = asyncio.current_task()
        if current is not None and current.cancelling():
            raise  # this task itself is being cancelled, not by a signal
        raise Interrupted from None
    finally:
        for sig in handled:
            loop.remove_signal_handler(sig)


async def execute(job: Job, *, stdout: TextIO | None = None, stderr: TextIO | None = None) -> int:
    """Run a prepared replay, write the report, print its paths and a summary; the exit code (130 when
    interrupted by SIGINT or SIGTERM: the service is stopped, the temporary data removed, no report)."""
    stdout, stderr = stdout or sys.stdout, stderr or sys.stderr
    data_dir = job.data_dir or Path(tempfile.mkdtemp(prefix="mlp-replay-"))
    progress = Progress(len(job.bars), stderr) if job.progress else None
    try:
        report = await _interruptible(replay(
            isolated(job.config, data_dir), job.bars, symbol=job.symbol, timeframe=job.timeframe, rate=job.rate,
            source=job.source, progress=progress, cost_bps=job.cost_bps, periods_per_year=job.periods_per_year))
    except ReplayError as exc:
        print(f"ml-processing replay: {exc}", file=stderr)
        return 1
    except Interrupted:
        print("\nml-processing replay: interrupted; no report written", file=stderr)
        return 130
    finally:
        if job.data_dir is None:
            shutil.rmtree(data_dir, ignore_errors=True)
    try:
        paths = write_report(report, job.out)
    except OSError as exc:
        print(f"ml-processing replay: cannot write the report into {job.out}: {exc}", file=stderr)
        return 1
    print(summary(report), file=stdout)
    print(f"report: {paths[0]}\n        {paths[1]}", file=stdout)
    return 0


def write_report(report: Mapping[str, Any], out: str | Path) -> tuple[Path, Path]:
    """Write ``report.json`` and ``report.html`` into `out` (created), each atomically and readable by
    everyone (people open them); their paths."""
    folder = Path(out)
    paths = folder / "report.json", folder / "report.html"
    atomic_write(paths[0], json.dumps(json_ready(report), indent=2, allow_nan=False).encode(), 0o644)
    atomic_write(paths[1], render_html(report).encode(), 0o644)
    return paths


def run(args: argparse.Namespace, config: Config) -> int | Coroutine[Any, Any, int]:
    """The command: 2 for unusable arguments, else the replay to run (its exit code)."""
    try:
        job = prepare(args, config)
    except ReplayInputError as exc:
        print(f"ml-processing replay: {exc}", file=sys.stderr)
        return 2
    return execute(job)


COMMAND = Command(
    name="replay",
    help="replay bars (a CSV file or a seeded synthetic market) through an in-process service; writes "
         "report.json and report.html",
    description="Publish bars (a CSV file, or a seeded synthetic market) through the live path of an "
                "in-process service (its own loopback ports and temporary data directory) and report "
                "predictions, signals, prequential accuracy, ensemble weights, throughput and what the "
                "signals would have earned beside buy-and-hold (after --cost-bps) into --out "
                "(report.json and a self-contained report.html). Exit codes: 0 done, 1 the replay failed, "
                "2 bad arguments or CSV, 130 interrupted.",
    add_arguments=add_arguments,
    run=run,
    log_level="warning",  # the progress line stays readable: the service's warnings and errors only
)
