#!/bin/sh
# Run one atheris target: fuzz/run.sh TARGET [SECONDS]  (targets: sse eventstream router request
# response). The corpus grows in fuzz/corpus/TARGET, crashes land in fuzz/crashes/TARGET, the
# log in fuzz/logs/TARGET.log. Needs atheris in the venv: .venv/bin/pip install atheris
set -eu
target=$1
seconds=${2:-600}
cd "$(dirname "$0")/.."
mkdir -p "fuzz/corpus/$target" "fuzz/crashes/$target" fuzz/logs
exec .venv/bin/python "fuzz/fuzz_$target.py" "fuzz/corpus/$target" \
  -max_total_time="$seconds" -timeout=10 -rss_limit_mb=2048 -print_final_stats=1 \
  -artifact_prefix="fuzz/crashes/$target/" >"fuzz/logs/$target.log" 2>&1
