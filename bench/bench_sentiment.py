#!/usr/bin/env python3
"""Text sentiment throughput: headlines scored per second, in-process and over REST, for both analysers.

1. In-process: ``score`` of each text analyser on the labelled sample repeated to 20,000 headlines.
   Target: at least 5,000 headlines/s for the default analyser.
2. ``POST /api/v1/sentiment/analyze`` with 1,000 headlines per request (JSON, one client), headlines/s.

    python bench/bench_sentiment.py [--repeat 3]
"""

from __future__ import annotations

import argparse
import csv
import json
import sys
import time
import urllib.request
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _common as C

from ml_processing.plugins.sentiment.actor import SentimentConfig
from ml_processing.plugins.sentiment.text import text_analyzers

SAMPLE = Path(__file__).resolve().parents[1] / "tests" / "data" / "headlines.csv"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    texts = [row["text"] for row in csv.DictReader(SAMPLE.open(encoding="utf-8"))]
    many = (texts * (20_000 // len(texts) + 1))[:20_000]
    body = json.dumps({"texts": many[:1000]}).encode()
    analyzers = text_analyzers()
    runs = []
    with C.Service(start_timeout=120) as svc:
        url = svc.edge_url + "/api/v1/sentiment/analyze"
        for repeat in range(1, args.repeat + 1):
            run = {}
            for analyzer in analyzers:
                t = time.perf_counter()
                analyzer.score(many)
                run[analyzer.name] = len(many) / (time.perf_counter() - t)
            t, sent = time.perf_counter(), 0
            deadline = time.monotonic() + 20
            while sent < 20_000 and time.monotonic() < deadline:
                request = urllib.request.Request(url, data=body, headers={"Content-Type": "application/json"})
                with urllib.request.urlopen(request) as resp:
                    resp.read()
                sent += 1000
            run["rest"] = sent / (time.perf_counter() - t)
            runs.append(run)
            print(f"repeat {repeat}: " + ", ".join(f"{k} {v:,.0f}/s" for k, v in run.items()))
    med = {k: C.median(r[k] for r in runs) for k in runs[0]}
    C.print_table(["analyser", "headlines/s"], [(k, f"{v:,.0f}") for k, v in med.items()])
    default = SentimentConfig().text
    print()
    verdicts = [C.verdict("sentiment: at least 5,000 headlines/s (the default analyser, in-process)",
                          med[default] >= 5000, f"{default} {med[default]:,.0f}/s; over REST {med['rest']:,.0f}/s"),
                *(C.verdict(f"sentiment: {a.name} headlines/s (reported)", None, f"{med[a.name]:,.0f}/s")
                  for a in analyzers if a.name != default)]
    C.write_results("bench_sentiment", {"params": vars(args), "runs": runs, "verdicts": verdicts})
    return 0


if __name__ == "__main__":
    sys.exit(main())
