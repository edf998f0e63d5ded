#!/usr/bin/env bash
# GPU check (issue 12): the CUDA-marked tests, then the loss bench on the GPU (ours, PML, the
# floor and sentence-transformers in one run), B = 1024, 4096, 16384, P x K and random labels.
# Prints the ratio table and, when $OUT is set, writes everything under $OUT.
#
#   bash benchmarks/gpu_check.sh                  # from the repository root
#   PYTHON=/path/to/python bash benchmarks/gpu_check.sh
#
# Needs: torch with CUDA, pytest, pytest-benchmark, hypothesis, pytorch-metric-learning
# (sentence-transformers optional: its cells skip without it). Without a CUDA device it runs
# the same steps on the CPU with B = 256 only (the CUDA tests skip): a check of the script.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
export PYTHONPATH=.${PYTHONPATH:+:$PYTHONPATH}
OUT_DIR=${OUT:-$(mktemp -d)}
mkdir -p "$OUT_DIR"

if "$PY" -c 'import sys, torch; sys.exit(0 if torch.cuda.is_available() else 1)'; then
    export TRIPLETLAB_BENCH_DEVICE=cuda
    export TRIPLETLAB_BENCH_SIZES=${TRIPLETLAB_BENCH_SIZES:-1024,4096,16384}
else
    echo "gpu_check: no CUDA device: CPU run at B=256 (CUDA tests skip)"
    export TRIPLETLAB_BENCH_DEVICE=cpu
    export TRIPLETLAB_BENCH_SIZES=${TRIPLETLAB_BENCH_SIZES:-256}
fi
"$PY" - <<'PY' | tee "$OUT_DIR/device.txt"
import torch
print("torch", torch.__version__, "cuda", torch.version.cuda,
      torch.cuda.get_device_name(0) if torch.cuda.is_available() else "no CUDA device")
PY

echo "== CUDA-marked tests"
# only the files that hold CUDA tests: the others may import packages a GPU image lacks (dask, umap)
cuda_files=$(grep -l "pytest.mark.cuda" tests/test_*.py)
set +e
"$PY" -m pytest -q -m cuda $cuda_files -p no:cacheprovider --continue-on-collection-errors 2>&1 \
    | tee "$OUT_DIR/cuda_tests.txt"
tests_rc=${PIPESTATUS[0]}
set -e

echo "== loss bench on $TRIPLETLAB_BENCH_DEVICE, B = $TRIPLETLAB_BENCH_SIZES"
"$PY" -m pytest benchmarks/test_losses.py -q --benchmark-only -p no:cacheprovider \
    -k "not batch_all_mask" --benchmark-columns=min,median,rounds \
    --benchmark-json="$OUT_DIR/gpu_bench.json" 2>&1 | tail -n 5
"$PY" -m benchmarks.ratios "$OUT_DIR/gpu_bench.json" | tee "$OUT_DIR/gpu_ratios.md"
echo "gpu_check: CUDA tests exit code $tests_rc (5 = none collected); files in $OUT_DIR"
exit "$tests_rc"
