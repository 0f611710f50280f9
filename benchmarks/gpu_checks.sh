#!/usr/bin/env bash
# The GPU checks in one script, most decision-relevant first: the headline benchmark, the CUDA tests, then
# the whole-sampler experiments (copy-free temporal convolutions, cuDNN autotuning), the micro-benchmarks and
# the variants; torch.compile last. A step starts only if its estimated time fits the budget.
# Usage (from the repo root, on a CUDA machine with the package importable):
#   BUDGET_S=540 bash benchmarks/gpu_checks.sh [OUTDIR]
# Writes OUTDIR/gpu.txt, OUTDIR/pytest.log, OUTDIR/bench.jsonl (one JSON line per sampler configuration),
# OUTDIR/temporal_conv.jsonl, OUTDIR/decode_memory.jsonl and OUTDIR/skipped.txt (steps left for lack of time).
set -u
out=${1:-gpu_checks_out}
budget=${BUDGET_S:-540}
mkdir -p "$out"
export PYTHONUNBUFFERED=1
py=${PYTHON:-python3}
t_start=$(date +%s)
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader | tee "$out/gpu.txt"
$py -c "import torch; print('torch', torch.__version__, torch.version.cuda)" | tee -a "$out/gpu.txt"

fits() {  # fits EST_SECONDS NAME: true if the step is expected to end within the budget
    local left=$((budget - ($(date +%s) - t_start)))
    if [ "$1" -gt "$left" ]; then echo "skipped ($left s left, needs ~$1 s): $2" | tee -a "$out/skipped.txt"; return 1; fi
}

bench() {  # bench EST_SECONDS ARGS...: one sampler configuration; a failure is recorded and the next one runs
    local est=$1; shift
    fits "$est" "bench $*" || return 0
    echo "== bench $*"
    timeout "$((est * 2))" $py benchmarks/bench_sampler.py "$@" | tee -a "$out/bench.jsonl" \
        || echo "{\"failed\": \"$*\"}" >>"$out/bench.jsonl"
}

official="--config official --device cuda --precision bf16"
# 1. the headline: official size (155 x 512^2, 50 steps), bf16, automatic decode chunk, against the official-style fp32 loop
bench 120 $official
# 2. CUDA correctness: golden numbers, bf16/fp16 drift, CPU equality, memory release and the 8 GiB peak, no host syncs
if fits 150 "pytest -m gpu"; then
    timeout 300 $py -m pytest -p no:cacheprovider -q -m gpu tests/test_gpu.py tests/test_ddim.py 2>&1 | tee "$out/pytest.log"
fi
# 3. whole-sampler experiments, ours only (same numbers as the model's formulation: tests/test_benchmarks.py)
bench 60 $official --temporal-conv per_window_baddbmm --skip-reference
bench 60 $official --temporal-conv per_window_1x1 --skip-reference
bench 60 $official --cudnn-benchmark --skip-reference
# 4. micro-benchmarks: one temporal convolution (four formulations), decoder peak memory against slices per call
fits 30 "bench_temporal_conv" && timeout 120 $py benchmarks/bench_temporal_conv.py --device cuda --precision bf16 \
    | tee -a "$out/temporal_conv.jsonl"
fits 30 "bench_decode_memory" && timeout 120 $py benchmarks/bench_decode_memory.py --device cuda --precision bf16 \
    --chunks 1,2,4,8 | tee -a "$out/decode_memory.jsonl"
# 5. variants: the old 16-slice decode chunk (time cost of the smaller automatic one), the tiny configuration
bench 60 $official --decode-chunk 16 --skip-reference
bench 30 --config tiny --device cuda --precision bf16
# 6. last, as it may take minutes to compile: torch.compile of the volume UNet (checked against eager)
bench 300 $official --compile --skip-reference
echo "gpu_checks: $(($(date +%s) - t_start)) s"
