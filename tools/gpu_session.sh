#!/usr/bin/env bash
# One script for a session on a GPU machine (CUDA Toolkit present, no internet): build the CUDA backend, run the
# CUDA tests, compute-sanitizer on them, and the `llm bench` matrix; every output goes to $OUT (default ./out).
#
#   bash tools/gpu_session.sh all        # everything below, in order (~15 min on an H100 with 16 cores)
#   bash tools/gpu_session.sh build      # configure + build (build-gpu/)
#   bash tools/gpu_session.sh test       # ctest, then the CUDA test cases verbosely (their MESSAGE lines)
#   bash tools/gpu_session.sh sanitize   # compute-sanitizer memcheck + racecheck on the CUDA tests
#   bash tools/gpu_session.sh bench      # llm bench --device cuda at 1K / 8K / 32K (synthetic Llama-3-8B),
#                                        # bench_lowrank_cuda (compressed vs full decode attention) and
#                                        # bench_quant_cuda (mixed 8/4/2-bit KV decode attention vs bf16)
# Stages are separate so that each fits a 10-minute command limit; run `build` first.
# Needs on the machine: cmake >= 3.25, a C++20 compiler, nlohmann-json3-dev and doctest-dev (as on the dev box).
set -u
cd "$(dirname "$0")/.."
OUT=${OUT:-./out}
mkdir -p "$OUT"
B=build-gpu
CONFIG=tests/data/models/llama-3-8b-instruct/config.json
DEMO=models/SmolLM2-135M-Instruct.Q4_1.gguf
status=0

note() { echo "== $(date -u +%H:%M:%S) $*" | tee -a "$OUT/summary.txt"; }
run() {  # run NAME CMD...: log to $OUT/NAME.log, record the exit code
  local name=$1; shift
  local t0=$(date +%s)
  "$@" > "$OUT/$name.log" 2>&1
  local rc=$?
  note "$name: exit $rc in $(( $(date +%s) - t0 )) s  ($*)"
  [ $rc -ne 0 ] && status=1
  return $rc
}

stage_build() {
  nvidia-smi > "$OUT/nvidia-smi.txt" 2>&1
  nvcc --version > "$OUT/nvcc.txt" 2>&1
  git log -1 --format='%H %s' > "$OUT/commit.txt" 2>/dev/null
  local gen="Unix Makefiles"
  command -v ninja > /dev/null && gen=Ninja
  run configure cmake -S . -B $B -G "$gen" -DLLM_CUDA=ON -DLLM_CUDA_ARCHS=90a -DLLM_NATIVE=OFF -DCMAKE_BUILD_TYPE=Release
  run build cmake --build $B -j16
}

stage_test() {
  run ctest ctest --test-dir $B --output-on-failure
  # the CUDA cases again, verbosely: agreement figures, max |diff|, skips
  run cuda_tests $B/tests/llm_tests --source-file='*cuda/test_*' --success=false --duration=true
  grep -h -E "SKIPPED|MESSAGE|agreement|ERROR|FAILED" "$OUT/cuda_tests.log" | head -50 >> "$OUT/summary.txt"
}

stage_sanitize() {
  command -v compute-sanitizer > /dev/null || { note "compute-sanitizer not found (it ships with the CUDA Toolkit: /usr/local/cuda/bin)"; export PATH=$PATH:/usr/local/cuda/bin; }
  run memcheck_kernels compute-sanitizer --tool memcheck --error-exitcode 1 $B/tests/llm_tests --source-file='*test_kernels_cuda.cu'
  run memcheck_forward compute-sanitizer --tool memcheck --error-exitcode 1 $B/tests/llm_tests --source-file='*test_forward_cuda.cu'
  # racecheck is slow on shared-memory-heavy kernels: the attention, norm and sampling cases carry the shared memory
  run racecheck_kernels compute-sanitizer --tool racecheck --error-exitcode 1 $B/tests/llm_tests --source-file='*test_kernels_cuda.cu'
  run synccheck_kernels compute-sanitizer --tool synccheck --error-exitcode 1 $B/tests/llm_tests --source-file='*test_kernels_cuda.cu'
  # the low-rank attention kernels (issue 6): memcheck on every case; racecheck on the prefill and hand cases
  # (their shared-memory phases are the decode's too; the 32K decode case would take racecheck very long)
  run memcheck_lowrank compute-sanitizer --tool memcheck --error-exitcode 1 $B/tests/llm_tests --source-file='*test_lowrank_cuda.cu'
  run racecheck_lowrank compute-sanitizer --tool racecheck --error-exitcode 1 $B/tests/llm_tests --source-file='*test_lowrank_cuda.cu' --test-case='*prefill*,*hand*'
  # the mixed-precision KV kernels (issue 7): packing, packed-cache decode, importance accumulators
  run memcheck_quant compute-sanitizer --tool memcheck --error-exitcode 1 $B/tests/llm_tests --source-file='*test_quant_cuda.cu'
  run racecheck_quant compute-sanitizer --tool racecheck --error-exitcode 1 $B/tests/llm_tests --source-file='*test_quant_cuda.cu'
  for f in memcheck_kernels memcheck_forward racecheck_kernels synccheck_kernels memcheck_lowrank racecheck_lowrank memcheck_quant racecheck_quant; do
    grep -h -E "ERROR SUMMARY|RACECHECK SUMMARY|hazard" "$OUT/$f.log" | head -5 | sed "s/^/$f: /" >> "$OUT/summary.txt"
  done
}

stage_bench() {
  for ctx in 1024 8192 32768; do
    run bench_synthetic_$ctx $B/llm bench --device cuda --synthetic $CONFIG -p 2048 -n 128 -c $ctx
    run bench_synthetic_${ctx}_json $B/llm bench --device cuda --synthetic $CONFIG -p 2048 -n 128 -c $ctx --json
    cp "$OUT/bench_synthetic_${ctx}_json.log" "$OUT/bench_synthetic_$ctx.json"
    grep -E "prefill|decode  |per token|memory" "$OUT/bench_synthetic_$ctx.log" | sed "s/^/ctx $ctx: /" >> "$OUT/summary.txt"
  done
  # issue 6: low-rank vs full-cache decode attention, one layer at Llama-3-8B shapes (tools/bench_lowrank_cuda.cu)
  run bench_lowrank $B/bench_lowrank_cuda --ctx 1024,8192,32768
  run bench_lowrank_json $B/bench_lowrank_cuda --ctx 1024,8192,32768 --json
  cp "$OUT/bench_lowrank_json.log" "$OUT/bench_lowrank.json"
  cat "$OUT/bench_lowrank.log" >> "$OUT/summary.txt"
  # decode attention over the mixed 8/4/2-bit packed KV cache vs the bf16 kernel (Llama-2-7B / Llama-3-8B heads)
  run bench_quant $B/bench_quant_cuda
  run bench_quant_json $B/bench_quant_cuda --json
  cp "$OUT/bench_quant_json.log" "$OUT/bench_quant.json"
  grep -E "ctx +32768" "$OUT/bench_quant.log" | sed "s/^/quant: /" >> "$OUT/summary.txt"
  if [ -f "$DEMO" ]; then
    run bench_demo $B/llm bench --device cuda -m $DEMO -p 512 -n 128 -c 1024
  else
    note "demo model absent ($DEMO): its bench skipped"
  fi
}

case "${1:-all}" in
  build) stage_build ;;
  test) stage_test ;;
  sanitize) stage_sanitize ;;
  bench) stage_bench ;;
  all) stage_build && { stage_test; stage_sanitize; stage_bench; } ;;
  *) echo "usage: $0 [all|build|test|sanitize|bench]"; exit 2 ;;
esac
note "done: status $status (logs in $OUT)"
exit $status
