#!/usr/bin/env bash
# The GPU checks in one script: CUDA tests, then the official-size benchmark and its variants.
# Usage (from the repo root, on a CUDA machine with the package importable): bash benchmarks/gpu_checks.sh [OUTDIR]
# About 5 minutes on an H100 before step 5 (compilation adds minutes). Writes OUTDIR/pytest.log, OUTDIR/bench.jsonl (one JSON line per configuration) and OUTDIR/temporal_conv.jsonl.
set -u
out=${1:-gpu_checks_out}
mkdir -p "$out"
export PYTHONUNBUFFERED=1
py=${PYTHON:-python3}
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader | tee "$out/gpu.txt"
$py -c "import torch; print('torch', torch.__version__, torch.version.cuda)" | tee -a "$out/gpu.txt"

bench() {  # one configuration (limit $T seconds); a failure is recorded and the next one runs
    echo "== bench $*"
    timeout "${T:-150}" $py benchmarks/bench_sampler.py "$@" | tee -a "$out/bench.jsonl" || echo "{\"failed\": \"$*\"}" >>"$out/bench.jsonl"
}

# 1. the headline: official size (155 x 512^2, 50 steps), bf16, automatic decode chunk, against the official-style fp32 loop
T=240 bench --config official --device cuda --precision bf16
# 2. CUDA correctness: golden numbers, bf16/fp16 drift, CPU equality, memory release, no host syncs
timeout 300 $py -m pytest -p no:cacheprovider -q -m gpu tests/test_gpu.py tests/test_ddim.py 2>&1 | tee "$out/pytest.log"
# 3. variants, ours only
bench --config official --device cuda --precision bf16 --channels-last --skip-reference
bench --config official --device cuda --precision bf16 --decode-chunk 16 --skip-reference
bench --config official --device cuda --precision fp32 --skip-reference
bench --config tiny --device cuda --precision bf16
# 4. candidate copy-free temporal convolutions against the model's (same numbers, time ratio)
timeout 120 $py benchmarks/bench_temporal_conv.py --device cuda --precision bf16 | tee -a "$out/temporal_conv.jsonl"
# 5. decoder peak memory against slices per call (the automatic decode chunk is sized from this)
timeout 120 $py benchmarks/bench_decode_memory.py --device cuda --precision bf16 --chunks 1,2,4,8 | tee -a "$out/decode_memory.jsonl"
# 6. last, as it may take minutes to compile: torch.compile of the volume UNet (checked against eager)
T=400 bench --config official --device cuda --precision bf16 --compile --skip-reference
