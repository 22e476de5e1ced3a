#!/bin/sh
# Run one atheris target: fuzz/run.sh TARGET [SECONDS]  (targets: sse eventstream router request
# response largejson responses anthropic_stream). The corpus grows in fuzz/corpus/TARGET, crashes
# land in fuzz/crashes/TARGET, the log in fuzz/logs/TARGET.log. Needs atheris in the venv:
# .venv/bin/pip install atheris
#
# fuzz/run.sh TARGET merge  shrinks fuzz/corpus/TARGET to the inputs that add coverage.
set -eu
target=$1
cd "$(dirname "$0")/.."
mkdir -p "fuzz/corpus/$target" "fuzz/crashes/$target" fuzz/logs
if [ "${2:-}" = merge ]; then
  # libFuzzer's merge re-runs argv[0] in child processes: give it an executable wrapper.
  wrapper=$(mktemp)
  merged=$(mktemp -d)
  printf '#!/bin/sh\nexec "%s/.venv/bin/python" "%s/fuzz/fuzz_%s.py" "$@"\n' \
    "$PWD" "$PWD" "$target" >"$wrapper"
  chmod +x "$wrapper"
  FUZZ_ARGV0=$wrapper .venv/bin/python "fuzz/fuzz_$target.py" -merge=1 "$merged" \
    "fuzz/corpus/$target" >"fuzz/logs/$target-merge.log" 2>&1
  rm -rf "fuzz/corpus/$target"
  mv "$merged" "fuzz/corpus/$target"
  rm -f "$wrapper"
  echo "$target: $(ls "fuzz/corpus/$target" | wc -l) inputs kept"
  exit 0
fi
seconds=${2:-600}
exec .venv/bin/python "fuzz/fuzz_$target.py" "fuzz/corpus/$target" \
  -max_total_time="$seconds" -timeout=10 -rss_limit_mb=2048 -print_final_stats=1 \
  -artifact_prefix="fuzz/crashes/$target/" >"fuzz/logs/$target.log" 2>&1
