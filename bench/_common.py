"""Helpers shared by the benchmark scripts in bench/.

Everything here is local: free TCP ports on 127.0.0.1, subprocesses that are always cleaned up (a
`ProcessGroup` sends SIGTERM, then SIGKILL after a bound), percentiles, the machine description, and a JSON
writer to ``bench/results/<name>.json`` (gitignored).

Benchmarks never run inside the test suite; tests assert behaviour, bench/ measures it.

Run ``python bench/_common.py summary`` to print the verdicts stored in bench/results/*.json.
"""

from __future__ import annotations

import contextlib
import datetime as _dt
import importlib.metadata
import json
import math
import os
import platform
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any

BENCH_DIR = Path(__file__).resolve().parent
RESULTS_DIR = BENCH_DIR / "results"
PYTHON = sys.executable
HOST = "127.0.0.1"

# -- ports and processes --------------------------------------------------------------------------------


def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago (the kernel picks it)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((HOST, 0))
        return int(sock.getsockname()[1])


def free_ports(n: int) -> list[int]:
    """`n` distinct free ports (held open together so the kernel cannot hand out one twice)."""
    socks = []
    try:
        for _ in range(n):
            sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            sock.bind((HOST, 0))
            socks.append(sock)
        return [int(s.getsockname()[1]) for s in socks]
    finally:
        for sock in socks:
            sock.close()


def serve_executable() -> str:
    """The ``ml-processing`` console script of the interpreter running the benchmark."""
    candidate = Path(PYTHON).parent / "ml-processing"
    return str(candidate) if candidate.exists() else "ml-processing"


def _die_with_parent() -> None:
    """In the child, before exec: SIGTERM it when the benchmark process dies (Linux), so even a killed
    benchmark leaves nothing running."""
    with contextlib.suppress(Exception):
        import ctypes

        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG


def exit_on_sigterm() -> None:
    """Turn SIGTERM into SystemExit so ``finally`` blocks (and so `ProcessGroup` cleanup) run."""
    signal.signal(signal.SIGTERM, lambda signum, frame: sys.exit(128 + signum))


class ProcessGroup:
    """Subprocesses started by a benchmark; `close` (or leaving the ``with``) ends every one of them.

    Each child gets its own session, so SIGTERM/SIGKILL reach anything it started too. Only the
    processes started here are ever signalled.
    """

    def __init__(self) -> None:
        self.procs: list[subprocess.Popen[Any]] = []

    def start(self, argv: Sequence[str], **kwargs: Any) -> subprocess.Popen[Any]:
        kwargs.setdefault("start_new_session", True)
        kwargs.setdefault("preexec_fn", _die_with_parent)
        proc = subprocess.Popen(list(argv), **kwargs)
        self.procs.append(proc)
        return proc

    @staticmethod
    def stop(proc: subprocess.Popen[Any], *, timeout: float = 10.0) -> int | None:
        """SIGTERM, wait up to `timeout`, then SIGKILL the process group; returns the exit code."""
        if proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGTERM)
            try:
                proc.wait(timeout)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(5)
        return proc.returncode

    def close(self) -> None:
        for proc in reversed(self.procs):
            try:
                self.stop(proc)
            except Exception as exc:  # keep cleaning up the rest
                print(f"warning: could not stop pid {proc.pid}: {exc}", file=sys.stderr)
        self.procs.clear()

    def __enter__(self) -> ProcessGroup:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def emit_json(result: Any) -> None:
    """Write a role's result as one JSON line on stdout, every byte of it.

    A large line written with ``print`` to the parent's pipe was seen cut at 131,072 bytes while the process
    still exited 0 (the write to the pipe came back partial, under the client's event loop and ZeroMQ
    threads); writing the bytes in a loop until all are out never loses any.
    """
    data = memoryview((json.dumps(result) + "\n").encode())
    while data:
        data = data[os.write(1, data):]


def run_json(argv: Sequence[str], *, timeout: float) -> Any:
    """Run a helper process to completion (killed past `timeout`) and parse its last stdout line as JSON."""
    with ProcessGroup() as group:
        proc = group.start(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        try:
            out, err = proc.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            group.stop(proc, timeout=2)
            raise RuntimeError(f"{' '.join(argv[:4])} ... timed out after {timeout}s") from None
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(argv[:4])} ... exited {proc.returncode}: {err.strip()[-2000:]}")
    lines = [line for line in out.splitlines() if line.strip()]
    if not lines:
        raise RuntimeError(f"{' '.join(argv[:4])} ... printed nothing; stderr: {err.strip()[-2000:]}")
    return json.loads(lines[-1])


# -- the service under test -----------------------------------------------------------------------------


def wait_http(url: str, timeout: float = 20.0, proc: subprocess.Popen[Any] | None = None) -> None:
    """Poll `url` until it answers 200; bounded by `timeout`, fails fast if `proc` exits."""
    deadline = time.monotonic() + timeout
    last: object = None
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"process {proc.pid} exited with {proc.returncode} before {url} answered")
        try:
            with urllib.request.urlopen(url, timeout=1.0) as resp:
                if resp.status == 200:
                    return
                last = resp.status
        except (urllib.error.URLError, ConnectionError, OSError) as exc:
            last = exc
        time.sleep(0.1)
    raise RuntimeError(f"{url} did not answer 200 within {timeout}s (last: {last})")


def read_status(pid: int) -> dict[str, str]:
    """/proc/PID/status as a dict (VmRSS, VmHWM, Threads, ...)."""
    out: dict[str, str] = {}
    with open(f"/proc/{pid}/status") as fh:
        for line in fh:
            key, _, value = line.partition(":")
            out[key] = value.strip()
    return out


def rss_kib(pid: int) -> int:
    return int(read_status(pid)["VmRSS"].split()[0])


def uses_uvloop(pid: int) -> bool:
    """Whether uvloop's extension module is mapped into the process (the event loop in use)."""
    try:
        with open(f"/proc/{pid}/maps") as fh:
            return any("uvloop" in line for line in fh)
    except OSError:
        return False


PLUGINS_TOML = """\
# Generated by bench/_common.py for one benchmark run; free ports, the template plugin, quiet logs.
[service]
log_level = "{log_level}"
data_dir = "{data_dir}"

[bus]
broker_bind = ["tcp://{host}:{broker}"]
broker_connect = "tcp://{host}:{broker}"
pub_in = "tcp://{host}:{pub_in}"
pub_out = "tcp://{host}:{pub_out}"

[edge]
host = "{host}"
port = {edge}

[kernel]
uvloop = {uvloop}

[plugins]
modules = ["ml_processing.plugins._template"]
"""


class Service:
    """``ml-processing serve`` in a subprocess on free ports with a generated plugins.toml.

    >>> # with Service() as svc: svc.broker, svc.edge_url, svc.pid
    """

    def __init__(self, *, log_level: str = "warning", uvloop: bool = True, config: bool = True,
                 env: dict[str, str] | None = None, start_timeout: float = 30.0, extra_toml: str = "") -> None:
        self.extra_toml = extra_toml
        self.log_level = log_level
        self.uvloop = uvloop
        self.use_config = config
        self.extra_env = env or {}
        self.start_timeout = start_timeout
        self._tmp = tempfile.TemporaryDirectory(prefix="mlp-bench-")
        self.dir = Path(self._tmp.name)
        self.broker_port, self.pub_in_port, self.pub_out_port, self.edge_port = free_ports(4)
        self.broker = f"tcp://{HOST}:{self.broker_port}"
        self.edge_url = f"http://{HOST}:{self.edge_port}"
        self.proc: subprocess.Popen[Any] | None = None
        self.log_path = self.dir / "serve.log"
        self._group = ProcessGroup()

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def _write_config(self) -> Path:
        path = self.dir / "plugins.toml"
        path.write_text(PLUGINS_TOML.format(
            log_level=self.log_level, data_dir=self.dir / "var", host=HOST, broker=self.broker_port,
            pub_in=self.pub_in_port, pub_out=self.pub_out_port, edge=self.edge_port,
            uvloop="true" if self.uvloop else "false") + self.extra_toml)
        return path

    def port_env(self) -> dict[str, str]:
        """Environment overrides that move every listening port to a free one (nothing else)."""
        return {"MLP_BUS_BROKER_BIND": self.broker, "MLP_BUS_BROKER_CONNECT": self.broker,
                "MLP_BUS_PUB_IN": f"tcp://{HOST}:{self.pub_in_port}",
                "MLP_BUS_PUB_OUT": f"tcp://{HOST}:{self.pub_out_port}",
                "MLP_EDGE_PORT": str(self.edge_port)}

    def start(self) -> Service:
        argv = [serve_executable(), "serve"]
        env = {k: v for k, v in os.environ.items() if not k.startswith("MLP_") and k not in ("LOG_LEVEL", "ENV")}
        if self.use_config:
            argv += ["--config", str(self._write_config())]
        else:  # the embedded defaults, only the ports moved
            env.update(self.port_env())
        env.update(self.extra_env)
        log = open(self.log_path, "wb")
        try:
            self.proc = self._group.start(argv, cwd=self.dir, env=env, stdout=log, stderr=subprocess.STDOUT,
                                          stdin=subprocess.DEVNULL)
        finally:
            log.close()
        try:
            wait_http(self.edge_url + "/health", self.start_timeout, self.proc)
        except Exception:
            tail = self.log_tail()  # read before stop() removes the directory
            self.stop()
            raise RuntimeError(f"ml-processing serve did not become healthy; log:\n{tail}") from None
        return self

    def log_tail(self, n: int = 4000) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-n:]
        except OSError:
            return ""

    def stop(self) -> int | None:
        code = None
        if self.proc is not None:
            code = self._group.stop(self.proc, timeout=15.0)
        self._group.close()
        self._tmp.cleanup()
        return code

    def __enter__(self) -> Service:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


# -- statistics -----------------------------------------------------------------------------------------


def percentile(sorted_values: Sequence[float], q: float) -> float:
    """Nearest-rank percentile of already sorted values (q in 0..100)."""
    if not sorted_values:
        return float("nan")
    k = max(0, min(len(sorted_values) - 1, math.ceil(q / 100.0 * len(sorted_values)) - 1))
    return float(sorted_values[k])


def summarize_ns(samples_ns: Iterable[int]) -> dict[str, float]:
    """p50/p90/p99/max/mean in microseconds of round-trip samples in nanoseconds."""
    values = sorted(samples_ns)
    if not values:
        return {"n": 0}
    us = 1e-3
    return {"n": len(values), "p50_us": percentile(values, 50) * us, "p90_us": percentile(values, 90) * us,
            "p99_us": percentile(values, 99) * us, "max_us": values[-1] * us,
            "mean_us": statistics.fmean(values) * us}


def median(values: Iterable[float]) -> float:
    vals = [v for v in values if v == v]  # drop NaN
    return statistics.median(vals) if vals else float("nan")


# -- the machine and the results ------------------------------------------------------------------------


def _version(dist: str) -> str | None:
    try:
        return importlib.metadata.version(dist)
    except importlib.metadata.PackageNotFoundError:
        return None


def machine_info() -> dict[str, Any]:
    cpu = None
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    info: dict[str, Any] = {
        "date": _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds"),
        "nproc": os.cpu_count(),
        "cpu_model": cpu,
        "kernel": platform.release(),
        "python": platform.python_version(),
        "loadavg_at_start": os.getloadavg(),
    }
    with contextlib.suppress(ImportError):
        import zmq

        info["pyzmq"] = zmq.pyzmq_version()
        info["libzmq"] = zmq.zmq_version()
    for dist in ("aiohttp", "uvloop", "msgpack", "orjson", "structlog", "ml-processing"):
        info[dist] = _version(dist)
    return info


def _no_nan(value: Any) -> Any:
    """NaN (a missing number) becomes null, so the results stay strict JSON."""
    if isinstance(value, float) and value != value:
        return None
    if isinstance(value, dict):
        return {k: _no_nan(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_no_nan(v) for v in value]
    return value


def write_results(name: str, data: dict[str, Any], machine: dict[str, Any] | None = None) -> Path:
    """Write ``bench/results/<name>.json`` and return its path.

    `machine` is `machine_info()` taken when the benchmark started (date, load average at start); the
    load average at the end is added here.
    """
    RESULTS_DIR.mkdir(parents=True, exist_ok=True)
    path = RESULTS_DIR / f"{name}.json"
    machine = dict(machine or machine_info())
    machine["loadavg_at_end"] = os.getloadavg()
    payload = _no_nan({"benchmark": name, "machine": machine, **data})
    path.write_text(json.dumps(payload, indent=2, default=float, allow_nan=False) + "\n")
    return path


def timed(fn: Callable[[], Any], iterations: int, *, warmup: int = 3, seconds: float = 60) -> dict[str, float]:
    """p50/p99 of `fn` over `iterations` calls after `warmup` (bounded to `seconds`)."""
    for _ in range(warmup):
        fn()
    samples = []
    deadline = time.monotonic() + seconds
    for _ in range(iterations):
        t = time.perf_counter_ns()
        fn()
        samples.append(time.perf_counter_ns() - t)
        if time.monotonic() > deadline:
            break
    return summarize_ns(samples)


def wait_until(start_at: float) -> bool:
    """Sleep until the shared (wall-clock) start time of client processes; False if it had already passed."""
    delay = start_at - time.time()
    if delay > 0:
        time.sleep(delay)
        return True
    return False


def collect(procs: list[subprocess.Popen[str]], timeout: float, group: ProcessGroup) -> list[dict[str, Any]]:
    """Each client process's last stdout line as JSON (bounded; every client stopped if one overruns)."""
    results = []
    deadline = time.monotonic() + timeout
    for proc in procs:
        try:
            out, err = proc.communicate(timeout=max(0.1, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            for p in procs:
                group.stop(p, timeout=2)
            raise RuntimeError(f"client pid {proc.pid} did not finish within {timeout}s") from None
        if proc.returncode != 0:
            raise RuntimeError(f"client pid {proc.pid} exited {proc.returncode}: {err.strip()[-2000:]}")
        results.append(json.loads(out.strip().splitlines()[-1]))
    return results


def serve_rep(endpoint: str, lifetime: float, answer: Callable[[bytes], bytes]) -> int:
    """A bare pyzmq REP server (a reference): `answer` each request until `lifetime` seconds have passed
    (the parent normally stops it first), serving back to back without polling while busy."""
    import zmq

    ctx = zmq.Context()
    sock = ctx.socket(zmq.REP)
    sock.setsockopt(zmq.LINGER, 0)
    sock.bind(endpoint)
    deadline = time.monotonic() + lifetime
    poller = zmq.Poller()
    poller.register(sock, zmq.POLLIN)
    try:
        while time.monotonic() < deadline:
            if not poller.poll(200):
                continue
            while True:
                try:
                    msg = sock.recv(zmq.NOBLOCK)
                except zmq.Again:
                    break
                sock.send(answer(msg))
    finally:
        sock.close(0)
        ctx.term()
    return 0


def verdict(requirement: str, passed: bool | None, detail: str) -> dict[str, Any]:
    """One line of a benchmark's verdicts (``passed`` None: information only), printed and stored."""
    print(f"[{ {True: 'PASS', False: 'FAIL', None: 'info'}[passed] }] {requirement}: {detail}")
    return {"requirement": requirement, "pass": passed, "detail": detail}


def fmt(value: Any, digits: int = 1) -> str:
    if isinstance(value, float):
        if value != value:
            return "-"
        return f"{value:,.{digits}f}"
    if value is None:
        return "-"
    return str(value)


def print_table(headers: Sequence[str], rows: Iterable[Sequence[Any]]) -> None:
    cells = [[str(h) for h in headers]] + [[fmt(c) for c in row] for row in rows]
    widths = [max(len(row[i]) for row in cells) for i in range(len(headers))]
    for j, row in enumerate(cells):
        print("  ".join(c.rjust(w) if i else c.ljust(w) for i, (c, w) in enumerate(zip(row, widths, strict=True))))
        if j == 0:
            print("  ".join("-" * w for w in widths))


# -- profiling (py-spy) ---------------------------------------------------------------------------------


def py_spy() -> str | None:
    candidate = Path(PYTHON).parent / "py-spy"
    if candidate.exists():
        return str(candidate)
    from shutil import which

    return which("py-spy")


def start_py_spy(group: ProcessGroup, pid: int, seconds: int, out: Path) -> subprocess.Popen[Any] | None:
    """``py-spy record --native --threads`` of `pid` for `seconds`, collapsed stacks to `out`.

    Native frames show where the C side goes (libzmq, uvloop, syscalls); py-spy pauses the process for
    each sample, so profiles are taken apart from the measured runs. None if py-spy is missing.
    """
    exe = py_spy()
    if exe is None:
        print("py-spy not found (pip install py-spy): skipping the profile", file=sys.stderr)
        return None
    out.parent.mkdir(parents=True, exist_ok=True)
    return group.start([exe, "record", "-p", str(pid), "-d", str(seconds), "-r", "200", "--native", "--threads",
                        "--function", "--format", "raw", "-o", str(out)],
                       stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)


def finish_py_spy(group: ProcessGroup, spy: subprocess.Popen[Any], out: Path, seconds: float,
                  title: str) -> dict[str, Any] | None:
    """Wait for a py-spy recording (bounded), then summarise and print it; None if it failed."""
    try:
        spy.wait(seconds + 30)
    except subprocess.TimeoutExpired:
        group.stop(spy)
    if spy.returncode != 0 or not out.exists():
        err = spy.stderr.read().decode(errors="replace") if spy.stderr else ""
        print(f"py-spy failed ({spy.returncode}): {err[-1000:]}", file=sys.stderr)
        return None
    summary = summarize_collapsed(out)
    summary["collapsed"] = str(out)
    print_profile(title, summary)
    return summary


def summarize_collapsed(path: Path, top: int = 25, thread: str = "MainThread") -> dict[str, Any]:
    """Self and inclusive sample shares per frame in one thread (the event loop) of a py-spy raw profile.

    Also attributes system calls (``getpid``, ``write``, ``read``, ``poll``, ``epoll_pwait``) to the
    nearest Python frame, which is where ZeroMQ's wake-ups of its I/O thread show.
    """
    self_counts: dict[str, int] = {}
    incl_counts: dict[str, int] = {}
    syscalls: dict[str, int] = {}
    total = 0
    for line in path.read_text(errors="replace").splitlines():
        stack, _, count_s = line.rpartition(" ")
        if not stack or not count_s.isdigit():
            continue
        frames = stack.split(";")
        if thread and frames[0].startswith("thread ") and not frames[0].endswith(": " + thread):
            continue
        frames = [f for f in frames if not f.startswith(("process ", "thread "))]
        if not frames:
            continue
        count = int(count_s)
        total += count
        leaf = frames[-1]
        self_counts[leaf] = self_counts.get(leaf, 0) + count
        for frame in set(frames):
            incl_counts[frame] = incl_counts.get(frame, 0) + count
        if "(libc" in leaf and not leaf.startswith("0x"):
            py = [f for f in frames if ".py:" in f]
            key = f"{leaf.split(' ')[0]} <- {py[-1] if py else '?'}"
            syscalls[key] = syscalls.get(key, 0) + count

    def ranked(counts: dict[str, int]) -> list[tuple[str, float]]:
        return [(k, 100.0 * v / total) for k, v in sorted(counts.items(), key=lambda kv: -kv[1])[:top]]

    # inclusive: Python frames below the event loop's own bootstrap (those are ~100% and say nothing)
    incl_counts = {k: v for k, v in incl_counts.items() if ".py:" in k and v < 0.98 * total}
    return {"thread": thread, "samples": total, "self_pct": ranked(self_counts),
            "inclusive_pct": ranked(incl_counts), "syscalls_pct": ranked(syscalls)}


def print_profile(title: str, summary: dict[str, Any], top: int = 15) -> None:
    print(f"\n{title}: {summary['samples']} samples of thread {summary['thread']} (py-spy --native)")
    for key, label in (("self_pct", "self time"), ("inclusive_pct", "inclusive time"),
                       ("syscalls_pct", "C library calls, by nearest Python frame")):
        print(f"  top {label}:")
        for name, pct in summary[key][:top]:
            print(f"    {pct:5.1f}%  {name}")


# -- summary of stored results --------------------------------------------------------------------------


def summary() -> int:
    """Print every stored verdict; exit status 1 if any target failed."""
    failed = False
    found = False
    for path in sorted(RESULTS_DIR.glob("*.json")):
        data = json.loads(path.read_text())
        verdicts = data.get("verdicts")
        if not verdicts:
            continue
        found = True
        machine = data.get("machine", {})
        loads = [machine.get(k) or [] for k in ("loadavg_at_start", "loadavg_at_end")]
        print(f"{data.get('benchmark', path.stem)}  ({machine.get('date')}, {machine.get('nproc')} cpu, "
              f"1-min load {loads[0][0] if loads[0] else float('nan'):.2f} at start, "
              f"{loads[1][0] if loads[1] else float('nan'):.2f} at end)")
        for v in verdicts:
            state = {True: "PASS", False: "FAIL", None: "info"}[v.get("pass")]
            failed |= v.get("pass") is False
            print(f"  [{state}] {v['requirement']}: {v['detail']}")
    if not found:
        print(f"no results in {RESULTS_DIR}")
        return 2
    return 1 if failed else 0


if __name__ == "__main__":
    if sys.argv[1:] == ["summary"]:
        sys.exit(summary())
    print(__doc__)
    sys.exit(2)
