#!/usr/bin/env python3
"""Idle memory of ``ml-processing serve`` (requirement 4).

Starts ``ml-processing serve`` on the *embedded defaults* (no plugins.toml; only the five listening ports
are moved to free ones through ``MLP_BUS_*``/``MLP_EDGE_PORT`` so the run cannot collide with anything else
on the machine), waits for ``GET /health`` to answer 200, lets it sit idle for ``--settle`` seconds, and
reads VmRSS (and VmHWM, threads, and PSS/USS from smaps_rollup) from /proc. Each repeat is a fresh process;
the table quotes medians. For comparison it does the same with the benchmark configuration (template plugin,
log level warning) used by bench_bus.py and bench_rest.py.

There is no numeric target in the issue; the seed README quotes "<512MB per service instance (target:
<1GB)", so the verdict line is informational.

    python bench/bench_rss.py [--repeat 3] [--settle 2]
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _common as C


def smaps_rollup(pid: int) -> dict[str, int]:
    out: dict[str, int] = {}
    try:
        with open(f"/proc/{pid}/smaps_rollup") as fh:
            for line in fh:
                parts = line.split()
                if len(parts) >= 3 and parts[-1] == "kB":
                    out[parts[0].rstrip(":")] = int(parts[1])
    except OSError:
        pass
    return out


def measure(*, embedded: bool, settle: float) -> dict[str, Any]:
    t0 = time.monotonic()
    with C.Service(config=not embedded, log_level="info" if embedded else "warning") as svc:
        ready_s = time.monotonic() - t0
        time.sleep(settle)
        status = C.read_status(svc.pid)
        roll = smaps_rollup(svc.pid)
        out = {
            "config": "embedded defaults (ports via env)" if embedded else "bench plugins.toml (template plugin)",
            "pid": svc.pid,
            "ready_s": ready_s,
            "rss_kib": int(status["VmRSS"].split()[0]),
            "hwm_kib": int(status["VmHWM"].split()[0]),
            "threads": int(status["Threads"]),
            "pss_kib": roll.get("Pss"),
            "uss_kib": (roll["Private_Clean"] + roll["Private_Dirty"]) if "Private_Clean" in roll else None,
            "uvloop": C.uses_uvloop(svc.pid),
        }
        code = svc.stop()
    out["exit_code"] = code
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--settle", type=float, default=2.0, help="idle seconds after /health answers (default 2)")
    args = parser.parse_args()
    C.exit_on_sigterm()
    machine = C.machine_info()
    runs: list[dict[str, Any]] = []
    for i in range(args.repeat):
        for embedded in (True, False):
            run = measure(embedded=embedded, settle=args.settle)
            run["repeat"] = i + 1
            runs.append(run)
            print(f"repeat {i + 1}: {run['config']}: VmRSS {run['rss_kib'] / 1024:.1f} MiB, "
                  f"ready in {run['ready_s']:.2f} s, exit {run['exit_code']}", flush=True)

    rows = []
    for embedded_label in ("embedded defaults (ports via env)", "bench plugins.toml (template plugin)"):
        sel = [r for r in runs if r["config"] == embedded_label]
        rows.append([embedded_label, C.median(r["rss_kib"] / 1024 for r in sel),
                     C.median(r["hwm_kib"] / 1024 for r in sel),
                     C.median((r["pss_kib"] or float("nan")) / 1024 for r in sel),
                     C.median((r["uss_kib"] or float("nan")) / 1024 for r in sel),
                     int(C.median(r["threads"] for r in sel)), C.median(r["ready_s"] for r in sel)])
    print(f"\nml-processing serve, idle {args.settle:.0f} s after /health; medians of {args.repeat} fresh processes (MiB)")
    C.print_table(["configuration", "VmRSS", "VmHWM", "PSS", "USS", "threads", "ready s"], rows)
    rss = rows[0][1]
    verdicts = [{"requirement": "4. idle RSS of `ml-processing serve`, embedded defaults", "pass": None,
                 "detail": f"VmRSS {rss:.1f} MiB (no target in the issue; the seed quotes < 512 MB per instance)"}]
    bad = [r for r in runs if r["exit_code"] != 0]
    if bad:
        verdicts.append({"requirement": "4. clean exit on SIGTERM", "pass": False,
                         "detail": f"{len(bad)} runs exited non-zero: {[r['exit_code'] for r in bad]}"})
    print()
    for v in verdicts:
        print(f"[{ {True: 'PASS', False: 'FAIL', None: 'info'}[v['pass']] }] {v['requirement']}: {v['detail']}")
    path = C.write_results("bench_rss", {"params": vars(args), "runs": runs, "verdicts": verdicts,
                                         "medians": {"rows": rows}}, machine)
    print(f"\nresults: {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
