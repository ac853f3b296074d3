# Shared by the experiment scripts: run one resumable job per results folder.
#   run_resumable MODULE NAME ARGS...
# skips NAME when $OUT/NAME/summary.json exists (finished), and passes
# --resume when $OUT/NAME/checkpoints exists (killed earlier).
PY=${PY:-.venv/bin/python}
run_resumable() {
  local module=$1 name=$2; shift 2
  if [ -f "$OUT/$name/summary.json" ]; then echo "skip $name (done)"; return; fi
  local resume=""
  [ -d "$OUT/$name/checkpoints" ] && resume="--resume"
  "$PY" -m "$module" "$@" --out_dir="$OUT/$name" $resume
}
