#!/usr/bin/env bash
# Every GPU check in one command, for a GPU host with DALI, PyAV and numba importable (on the
# lent device: ../shared/tools/device-wheels.sh numba llvmlite, then PYTHONPATH=/tmp/site:$PWD;
# numba runs the CPU graphs' colour + blur kernel, pipeline/colour_blur.py). Writes each log to
# $OUT (default /tmp/gpu-checks) and prints it:
#   1. the device;  2. the `gpu`-marked tests (NVDEC / nvJPEG parity with DALI CPU, bf16 +
#   channels_last_3d encoder);  3. the train step, fp32 / bf16 / bf16 + torch.compile, on DALI GPU
#   batches;
#   4. the loader throughput: reference vs DALI CPU vs DALI GPU vs host decode for the GPU vs
#   the split, both payload formats.
set -uo pipefail
out=${OUT:-/tmp/gpu-checks}
mkdir -p "$out"
python=${PYTHON:-python3}
status=0
check() {  # check NAME COMMAND...: run, log to $out/NAME.txt, remember a failure
  local name=$1; shift
  echo "== $(date -u +%T) $name: $*"
  "$@" 2>&1 | tee "$out/$name.txt"
  local rc=${PIPESTATUS[0]}
  [ "$rc" -eq 0 ] || { echo "== $name failed (rc $rc)"; status=1; }
}
check device nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv
check gpu-tests "$python" -m pytest -m gpu -q -p no:cacheprovider -o addopts="" -rs \
  tests/test_pipeline_views.py tests/test_encoder.py tests/test_placement.py
check train-step "$python" benchmarks/train_step_throughput.py --threads 16 \
  --precisions fp32,bf16,bf16+compile
check loader "$python" benchmarks/pipeline_throughput.py --devices cpu,gpu,host-gpu,split \
  --threads 16
exit $status
