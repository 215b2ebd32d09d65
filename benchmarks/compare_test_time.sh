#!/usr/bin/env bash
# `make test`'s command on two checkouts, alternating, ROUNDS rounds each, in this venv: is one slower?
#     benchmarks/compare_test_time.sh /tmp/before . 3
# Each side runs with its own tree first on PYTHONPATH; run it on a machine with nothing else running.
set -euo pipefail
before=$(cd "$1" && pwd); after=$(cd "$2" && pwd); rounds=${3:-3}
python=$(cd "$(dirname "$0")/.." && pwd)/.venv/bin/python
export NO_ALBUMENTATIONS_UPDATE=1
for round in $(seq "$rounds"); do
  for side in before after; do
    tree=$([ "$side" = before ] && echo "$before" || echo "$after")
    started=$(date +%s.%N)
    summary=$(cd "$tree" && PYTHONPATH="$tree" "$python" -m pytest -q tests -p no:cacheprovider 2>&1 | tail -1)
    echo "$side round $round: $(echo "$(date +%s.%N) - $started" | bc) s  ($summary)"
  done
done
