#!/usr/bin/env bash
# Run every benchmark in order (RSS, ZeroMQ, REST, indicators, live path, features) and print the verdicts.
#
#   bench/run_all.sh                    # 3 repeats each, medians quoted
#   REPEAT=5 bench/run_all.sh --profile # 5 repeats, plus py-spy profiles of the serve process
#   PYTHON=/path/to/venv/bin/python bench/run_all.sh
#
# Exit status: 0 every target met, 1 a target missed, 2 a benchmark could not run.
# Results: bench/results/<name>.json (gitignored). Needs wrk (apt-get install -y wrk); py-spy for --profile.
set -u
cd "$(dirname "$0")/.."

PY="${PYTHON:-python3}"
if [ -z "${PYTHON:-}" ] && [ -x "${VIRTUAL_ENV:-}/bin/python" ]; then PY="$VIRTUAL_ENV/bin/python"; fi
if ! "$PY" -c "import ml_processing.core" 2>/dev/null; then
    echo "run_all.sh: $PY cannot import ml_processing; set PYTHON to the project's venv python" >&2
    exit 2
fi
export PATH="$(dirname "$("$PY" -c 'import sys; print(sys.executable)')"):$PATH"  # ml-processing, py-spy
REPEAT="${REPEAT:-3}"
PROFILE=""
for arg in "$@"; do
    case "$arg" in
        --profile) PROFILE="--profile" ;;
        *) echo "run_all.sh: unknown argument $arg" >&2; exit 2 ;;
    esac
done

mkdir -p bench/results
rm -f bench/results/bench_*.json
status=0
run() {
    echo
    echo "=== $* ($(date -u +%H:%M:%S), load $(cut -d' ' -f1-3 /proc/loadavg)) ==="
    if ! "$PY" "$@"; then
        echo "run_all.sh: $1 failed" >&2
        status=2
    fi
}
run bench/bench_rss.py --repeat "$REPEAT"
run bench/bench_bus.py --repeat "$REPEAT" $PROFILE
run bench/bench_rest.py --repeat "$REPEAT" $PROFILE
run bench/bench_indicators.py --repeat "$REPEAT"
run bench/bench_live.py --repeat "$REPEAT"
run bench/bench_features.py --repeat "$REPEAT"
run bench/bench_models.py --repeat "$REPEAT"
run bench/bench_online.py --repeat "$REPEAT"
run bench/bench_patterns.py --repeat "$REPEAT"
run bench/bench_sentiment.py --repeat "$REPEAT"
run bench/bench_stall.py --repeat "$REPEAT"
run bench/bench_security.py --repeat "$REPEAT"
run bench/bench_scaling.py --repeat "$REPEAT"
run bench/bench_cpp_client.py --repeat "$REPEAT"

echo
echo "=== summary ==="
"$PY" bench/_common.py summary
verdict=$?
if [ "$status" -ne 0 ]; then exit "$status"; fi
exit "$verdict"
