#!/usr/bin/env bash
# The GPU check (issue 15), one script for a GPU session; everything it needs is in the checkout.
#
#   bash benchmarks/gpu_check.sh [--out DIR] [--dry-run]
#
# Steps (each under its own time limit; their output in DIR/logs.txt; DIR gets 7 files at most, so
# `--out $OUT` of a device session brings them all back; the exported weights go to $EXPORT_DIR,
# default /tmp/gpu_check_export, never into DIR):
#   cuda_tests  the CUDA tests: tests/attribution/test_cuda.py, tests/multi_device (2+ GPUs),
#               tests/transcoders/training/test_training_cuda.py (training on CUDA, fp32 and bf16)
#   gemma       the Gemma-2-2B-shaped preset (26 layers, d 2304, 16k features per layer, 64 tokens,
#               transcoders reading hook_resid_mid), ours; exported for circuit-tracer when one is there
#   reference   circuit-tracer 0.5.0 on the same weights and token ids (benchmarks/ct_reference.py),
#               then compare.py: edge agreement and speed ratio. Needs a circuit-tracer Python:
#               $CT_PYTHON, or .venv-ct/bin/python when it runs on this machine, or wheels carried in
#               .whl-ct/ (see benchmarks/README.md); skipped, saying so, otherwise
#   profile     a 512-token prompt (L12 shapes) under torch.profiler: DIR/profile.txt, its top ops
#   long        a 4,096-token prompt (L12 shapes, 7,500-feature cap): attribute + prune
#   summary     DIR/gpu_check.json: GPU, date, every figure and the goals, to paste into RESULTS.md
#
# --dry-run runs the same steps on the CPU at tiny sizes (CI runs it): the CUDA tests are only
# collected, the presets shrink to 8 layers, d 128, 8-16 tokens, 100 features, and circuit-tracer
# runs only when CT_PYTHON names it. TOTAL_LIMIT (seconds, default none) caps the whole script: each
# step gets at most what is left of it less 20 s for the summary, and a step with under 20 s left is
# skipped, so one device call always ends with gpu_check.json. Exit status: 0 when every step that
# ran succeeded, 1 otherwise.
set -uo pipefail
cd "$(dirname "$0")/.."

DRY=0
OUT=benchmarks/out/gpu_check
while [ $# -gt 0 ]; do
    case "$1" in
        --dry-run) DRY=1 ;;
        --out) OUT=${2:?--out needs a directory}; shift ;;
        -h|--help) sed -n '2,26p' "$0"; exit 0 ;;
        *) echo "gpu_check.sh: unknown option $1 (use --dry-run, --out DIR)" >&2; exit 2 ;;
    esac
    shift
done

PY=${PYTHON:-python3}
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
mkdir -p "$OUT"
: > "$OUT/steps.jsonl"
: > "$OUT/logs.txt"
EXPORT_DIR=${EXPORT_DIR:-/tmp/gpu_check_export}
FAILED=0

CUDA_TESTS=(tests/attribution/test_cuda.py tests/multi_device tests/transcoders/training/test_training_cuda.py)
START=$(date +%s)
if [ "$DRY" = 1 ]; then
    DEV=cpu
    TESTS=(-m pytest -q -p no:cacheprovider --collect-only "${CUDA_TESTS[@]}")
    GEMMA=(--preset l8-d128-f1024-t32-plt --family gemma2 --n-pos 8 --target-l0 16 --max-feature-nodes 100 --runs 1 --warmup 0 --threads 1)
    LONG=(--preset l8-d128-f1024-t32-plt --n-pos 16 --max-feature-nodes 100 --runs 1 --warmup 0 --threads 1)
    PROFILE=(--preset l8-d128-f1024-t32-plt --n-pos 16 --max-feature-nodes 100 --runs 1 --warmup 0 --no-flops --threads 1)
    LIMIT=${STEP_LIMIT:-120}
else
    DEV=cuda
    TESTS=(-m pytest -q -p no:cacheprovider -rs "${CUDA_TESTS[@]}")
    GEMMA=(--preset gemma2-2b-resid-mid --runs 3 --warmup 1)
    # one cold run, no FLOP-counting run: on 2026-11-30 (H200) warm-up + run + count, three attributions, gave
    # no figure within 240 s; the bar (in logs.txt) shows how far it gets if time runs out again
    LONG=(--preset long-4096 --runs 1 --warmup 0 --no-flops --progress)
    PROFILE=(--preset long-512 --runs 1 --warmup 1 --no-flops)  # where a long prompt's time goes, op by op
    LIMIT=${STEP_LIMIT:-240}  # seconds per step; a device call allows 600 s in all
fi

# step NAME COMMAND...: run under `timeout`, append its output to $OUT/logs.txt, record rc and seconds.
step() {
    local name=$1 start rc log limit=$LIMIT left
    shift
    if [ -n "${TOTAL_LIMIT:-}" ]; then
        left=$(( TOTAL_LIMIT - ($(date +%s) - START) - 20 ))
        if [ "$left" -lt 20 ]; then
            skip "$name" "TOTAL_LIMIT=$TOTAL_LIMIT s reached"
            LAST_RC=124 FAILED=1
            return
        fi
        [ "$left" -lt "$limit" ] && limit=$left
    fi
    echo "== $name: $*" | tee -a "$OUT/logs.txt"
    log=$(mktemp)
    start=$(date +%s)
    timeout "$limit" "$@" > "$log" 2>&1
    rc=$?
    printf '{"step": "%s", "rc": %d, "seconds": %d}\n' "$name" "$rc" "$(( $(date +%s) - start ))" >> "$OUT/steps.jsonl"
    cat "$log" >> "$OUT/logs.txt"
    tail -n 4 "$log"
    rm -f "$log"
    echo "-- $name: exit $rc" | tee -a "$OUT/logs.txt"
    LAST_RC=$rc
    [ "$rc" = 0 ] || FAILED=1
}

skip() {
    printf '{"step": "%s", "rc": null, "skipped": "%s"}\n' "$1" "$2" >> "$OUT/steps.jsonl"
    echo "== $1: skipped ($2)"
}

ct_python() {
    if [ -n "${CT_PYTHON:-}" ]; then echo "$CT_PYTHON"; return; fi
    [ "$DRY" = 1 ] && return  # the dry run uses circuit-tracer only when CT_PYTHON names it
    if [ -x .venv-ct/bin/python ] && .venv-ct/bin/python -c "import circuit_tracer" 2>/dev/null; then
        echo .venv-ct/bin/python; return
    fi
    if ls .whl-ct/*.whl >/dev/null 2>&1; then
        "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --target /tmp/site-ct .whl-ct/*.whl \
            >/dev/null 2>&1 && echo "env PYTHONPATH=/tmp/site-ct $PY"
    fi
}

step cuda_tests "$PY" "${TESTS[@]}"

CT=$(ct_python)
EXPORT=()
[ -n "$CT" ] && rm -rf "$EXPORT_DIR" && EXPORT=(--export "$EXPORT_DIR")
step gemma "$PY" benchmarks/bench_attribution.py "${GEMMA[@]}" --input-hook hook_resid_mid --device "$DEV" \
    --json "$OUT/gemma.json" "${EXPORT[@]}"
if [ -z "$CT" ]; then
    skip reference "no circuit-tracer Python (CT_PYTHON, a working .venv-ct, or .whl-ct wheels)"
elif [ "$LAST_RC" = 0 ] && [ -d "$EXPORT_DIR" ]; then
    # shellcheck disable=SC2086  # $CT may be "env PYTHONPATH=... python3"
    step reference $CT benchmarks/ct_reference.py "$EXPORT_DIR" --device "$DEV" --runs 1 --warmup 1
    step compare "$PY" benchmarks/compare.py "$EXPORT_DIR" --json "$OUT/compare.json"
else
    skip reference "the gemma step did not finish its export"
fi

step profile "$PY" benchmarks/bench_attribution.py "${PROFILE[@]}" --device "$DEV" --profile "$OUT/profile.txt"
step long "$PY" benchmarks/bench_attribution.py "${LONG[@]}" --device "$DEV" --json "$OUT/long.json"

DRY_FLAG=()
[ "$DRY" = 1 ] && DRY_FLAG=(--dry-run)
echo "== summary"
"$PY" benchmarks/gpu_check_summary.py "$OUT" "${DRY_FLAG[@]}" || FAILED=1
exit "$FAILED"
