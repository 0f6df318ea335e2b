#!/usr/bin/env bash
# The runbook of a GPU session (issue 5): build the CUDA backend, run the CUDA tests, compute-sanitizer on them, the
# demo-model end-to-end checks and the `llm bench` matrix, within a 30-minute device budget and 10-minute calls.
#
# The device machine has nvcc, cmake, ninja and compute-sanitizer but no internet, maybe no nlohmann-json or doctest,
# and receives at most 64 MiB per call (the 98 MB demo model does not fit in one). Building there takes device
# minutes, so the binaries are built HERE (same nvcc 13.0, sm_90a, no -march=native) and carried. ONCE, on the dev
# box, in the checkout that travels (the session's own repository):
#
#   cmake -S . -B build-gpu -G Ninja -DLLM_CUDA=ON -DLLM_CUDA_ARCHS=90a -DLLM_NATIVE=OFF -DLLM_CUDA_EMU=OFF \
#         -DLLM_WERROR=OFF -DCMAKE_BUILD_TYPE=Release && cmake --build build-gpu   # ~7 min on 2 cores
#   bash tools/gpu_session.sh pack      # -> .gpu/deps (json + doctest headers, model manifest), .gpu/part1..3
#   bash tools/gpu_session.sh packbin   # -> .gpu/bin: llm, llm_tests (symbols kept), the kernel benches (~7 MB xz)
#
# then three device calls, back to back (the machine stays warm only ~30 s between calls: the demo model's parts
# only meet on one machine when each call follows the last within that time; issue them without pausing):
#
#   run(command="bash tools/gpu_session.sh test kv_tests bench", carry=[".gpu/deps", ".gpu/bin", ".gpu/part1"])
#   run(command="bash tools/gpu_session.sh sanitize kv_sanitize", carry=[".gpu/deps", ".gpu/bin", ".gpu/part2"])
#   run(command="bash tools/gpu_session.sh demo kv_bench", carry=[".gpu/deps", ".gpu/bin", ".gpu/part3"])
#   (a short session: `bash tools/gpu_session.sh kv_tc` first, with .gpu/deps and .gpu/bin only: the tensor-core
#   low-rank kernels' tests, sanitizers and benches)
#
# (unpack names any library the carried binaries do not find). The first GPU session (2026-11-22, H100) ran these three in 54 s, 112 s and 269 s of command time.
#
# Every call stashes the model part it carries in /tmp/llm-gpu; once all three are there, the demo model is
# assembled (sha256 checked) at models/ and the demo cases run instead of skipping. Each call returns three files
# in $OUT: summary.txt (also printed at the end, so output_tail shows it), logs.tar.gz (every log), and bench.jsonl
# (one `llm bench --json` object per line, when the bench ran). Stages, in any order and combination:
#   env       tool versions (always run first, cheap)
#   build     configure (-DLLM_CUDA=ON -DLLM_CUDA_ARCHS=90a, Release, -DLLM_WERROR=OFF) + build (all targets: the
#             CLI tests also run gen_model and make_longctx_suite)
#   test      the kernel and forward CUDA test files verbosely (LLM_GPU_CTEST_CPU=1: the CPU ctest first, which
#             needs a tree built on the device: the carried one has no ctest files for the other executables)
#   sanitize  compute-sanitizer memcheck, racecheck, synccheck on the kernel tests; memcheck on the forward tests
#   demo      the end-to-end CUDA-vs-CPU checks on the demo model (needs the assembled model) + its bench
#   bench     llm bench --device cuda --synthetic Llama-3-8B, -p 2048 -n 128, at -c 1024 / 8192 / 32768
#   kv        the compressed-cache kernels (issues 6 and 7): their tests verbosely, memcheck + racecheck on them,
#             bench_lowrank_cuda and bench_quant_cuda at 1K / 8K / 32K (JSON lines appended to bench.jsonl),
#             the low-rank forward tests and `llm bench --kv svd:...` end to end at 1K / 8K / 32K; also in three
#             parts: kv_tests, kv_sanitize, kv_bench
#   packbin   (dev box) the carried binaries; a device call unpacks them into build-gpu/ and links the dev box's
#             source path (compiled into the tests) to the checkout there
# Stages other than env/pack build first when build-gpu/ is missing or stale (a cold machine).
#
# stage_bench_extra (run by `kv`) holds the compressed-cache kernel benchmarks, one block per issue.
set -u
cd "$(dirname "$0")/.."
ROOT=$PWD
OUT=${OUT:-$ROOT/out}
mkdir -p "$OUT"
B=$ROOT/build-gpu
WORK=/tmp/llm-gpu
LOGS=$WORK/logs/$(date -u +%H%M%S)-$(echo "$*" | tr ' ' '_')
mkdir -p "$LOGS" "$WORK/parts"
CONFIG=tests/data/models/llama-3-8b-instruct/config.json
DEMO_NAME=SmolLM2-135M-Instruct.Q4_1.gguf
DEMO=$ROOT/models/$DEMO_NAME
DEPS=$ROOT/.gpu/deps
SUMMARY=$LOGS/summary.txt
status=0
export PATH=$PATH:/usr/local/cuda/bin:/usr/local/cuda/compute-sanitizer
export LD_LIBRARY_PATH=${LD_LIBRARY_PATH:+$LD_LIBRARY_PATH:}/usr/local/cuda/lib64:/usr/local/cuda/lib

note() { echo "== $(date -u +%H:%M:%S) $*" | tee -a "$SUMMARY"; }
# Each call must end inside the device's 10-minute command limit with its logs copied to $OUT: every step's
# timeout is clipped to what is left of CALL_BUDGET_S (default 560 s), and a step with < 20 s left is skipped.
T_START=$(date +%s)
CALL_BUDGET_S=${CALL_BUDGET_S:-560}
# run NAME [TIMEOUT_S] CMD...: log to $LOGS/NAME.log, record the exit code and the time (default timeout 300 s)
run() {
  local name=$1 limit=300; shift
  if [[ "$1" =~ ^[0-9]+$ ]]; then limit=$1; shift; fi
  local left=$(( CALL_BUDGET_S - ($(date +%s) - T_START) ))
  if [ "$left" -lt 20 ]; then note "$name: SKIPPED, only $left s left of this call's budget"; status=1; return 1; fi
  [ "$limit" -gt $(( left - 10 )) ] && limit=$(( left - 10 ))
  local t0=$(date +%s)
  timeout "$limit" "$@" > "$LOGS/$name.log" 2>&1
  local rc=$?
  local extra=""
  [ $rc -eq 124 ] && extra=" (TIMED OUT after $limit s)"
  note "$name: exit $rc in $(( $(date +%s) - t0 )) s$extra"
  [ $rc -ne 0 ] && status=1
  return $rc
}
finish() {
  note "done: status $status (logs: $LOGS)"
  tar -czf "$OUT/logs.tar.gz" -C "$WORK/logs" . 2>/dev/null
  cp "$SUMMARY" "$OUT/summary.txt"
  [ -s "$LOGS/bench.jsonl" ] && cp "$LOGS/bench.jsonl" "$OUT/bench.jsonl"
  echo; echo "----- summary -----"; cat "$SUMMARY"
}

# ---- dev box: pack what the device machine lacks ------------------------------------------------------------
stage_pack() {
  local src=${LLM_MODEL:-models/$DEMO_NAME}
  rm -rf .gpu && mkdir -p .gpu/deps/include .gpu/deps/share/cmake
  for d in /usr/include/nlohmann /usr/include/doctest; do
    [ -d "$d" ] || { echo "pack: $d missing (apt-get install nlohmann-json3-dev doctest-dev)"; return 1; }
    cp -r "$d" .gpu/deps/include/
  done
  cp -r /usr/share/cmake/nlohmann_json .gpu/deps/share/cmake/ 2>/dev/null ||
    cp -r /usr/lib/cmake/nlohmann_json .gpu/deps/share/cmake/
  if [ -f "$src" ]; then
    local size=$(stat -L -c %s "$src") part=$(( 32 * 1048576 ))
    local n=$(( (size + part - 1) / part ))
    echo "$(sha256sum < "$src" | cut -d' ' -f1) $n $DEMO_NAME" > .gpu/deps/model.manifest
    for i in $(seq 1 "$n"); do
      mkdir -p ".gpu/part$i"
      dd if="$src" of=".gpu/part$i/model.part$i" bs=1048576 skip=$(( (i - 1) * 32 )) count=32 status=none
    done
    echo "pack: $src -> $n parts of <= 32 MiB"
  else
    echo "pack: no demo model at $src (tools/setup.sh fetches it): the demo stage will skip"
  fi
  du -sh .gpu/* | sed 's/^/pack: /'
  echo "pack: tracked files $(git ls-files -z | xargs -0 stat -c %s | awk '{s+=$1} END {printf "%.1f", s/1048576}') MiB;" \
       "each call carries them + .gpu/deps + one part (limit 64 MiB)"
}

# ---- device: environment, model parts -------------------------------------------------------------------------
stage_env() {
  {
    date -u; git log -1 --format='commit %H %s' 2>/dev/null
    nvidia-smi --query-gpu=name,memory.total,driver_version,clocks.max.sm --format=csv 2>&1
    nvcc --version 2>&1 | tail -2
    for t in cmake ninja g++ c++ compute-sanitizer python3; do echo "$t: $(command -v $t || echo MISSING)"; done
    cmake --version 2>&1 | head -1; g++ --version 2>&1 | head -1
    echo "nlohmann: $(ls -d /usr/include/nlohmann "$DEPS/include/nlohmann" 2>/dev/null | tr '\n' ' ')"
    echo "doctest:  $(ls /usr/include/doctest/doctest.h "$DEPS/include/doctest/doctest.h" 2>/dev/null | tr '\n' ' ')"
    nproc; free -g | head -2
  } > "$LOGS/env.log" 2>&1
  grep -E "^(commit|NVIDIA|name)|MISSING|release" "$LOGS/env.log" | sed 's/^/env: /' >> "$SUMMARY"
  nvidia-smi -L 2>/dev/null | head -1 | sed 's/^/env: /' >> "$SUMMARY"
}

# Stash any carried part in /tmp/llm-gpu/parts; assemble the demo model once every part is there.
stash_model() {
  for f in .gpu/part*/model.part*; do [ -f "$f" ] && cp "$f" "$WORK/parts/"; done
  [ -f "$DEMO" ] && return 0
  [ -f "$DEPS/model.manifest" ] || return 0
  read -r sha n name < "$DEPS/model.manifest"
  local have=$(ls "$WORK/parts" | wc -l)
  if [ "$have" -lt "$n" ]; then
    note "demo model: $have of $n parts here ($(ls "$WORK/parts" | tr '\n' ' ')); demo cases skip until all arrived"
    return 0
  fi
  mkdir -p models
  for i in $(seq 1 "$n"); do cat "$WORK/parts/model.part$i"; done > "$DEMO.tmp"
  if [ "$(sha256sum < "$DEMO.tmp" | cut -d' ' -f1)" = "$sha" ]; then
    mv "$DEMO.tmp" "$DEMO"
    note "demo model assembled at models/$name (sha256 ok)"
  else
    rm -f "$DEMO.tmp"
    note "demo model: sha256 mismatch after joining $n parts: NOT used (re-run pack)"
    status=1
  fi
}

# Binaries built on the dev box (`bash tools/gpu_session.sh packbin` after configuring build-gpu there with the
# flags of stage_build, LLM_NATIVE=OFF): they save the device machine's build minutes. The dev box's source path is
# compiled into the tests (LLM_SOURCE_DIR), so it is linked to this checkout when it does not exist here.
unpack_bin() {
  [ -f .gpu/bin/build-gpu.tar.xz ] || return 0
  tar -xJf .gpu/bin/build-gpu.tar.xz || { note "unpack: build-gpu.tar.xz failed to unpack"; status=1; return 1; }
  local src=$(cat .gpu/bin/source_dir 2>/dev/null)
  if [ -n "$src" ] && [ "$src" != "$ROOT" ] && [ ! -e "$src" ]; then
    mkdir -p "$(dirname "$src")" && ln -s "$ROOT" "$src"
  fi
  ldd "$B/llm" | grep "not found" | sed 's/^/unpack: MISSING /' >> "$SUMMARY"
  note "unpack: dev-box binaries in $B ($(ls "$B" | tr '\n' ' '))"
}
stage_packbin() {
  [ -x build-gpu/llm ] || { echo "packbin: build build-gpu first"; return 1; }
  mkdir -p .gpu/bin && echo "$ROOT" > .gpu/bin/source_dir
  local tools="build-gpu/llm"
  for t in bench_lowrank_cuda bench_quant_cuda; do
    [ -x "build-gpu/$t" ] && tools="$tools build-gpu/$t"
  done
  strip $tools  # llm_tests keeps its symbols (cuda-gdb backtraces)
  tar -cJf .gpu/bin/build-gpu.tar.xz $tools build-gpu/tests/llm_tests && du -sh .gpu/bin/build-gpu.tar.xz
}

# ---- device: build ----------------------------------------------------------------------------------------------
stage_build() {
  local gen="Unix Makefiles"
  command -v ninja > /dev/null && gen=Ninja
  local prefix=""
  [ -d "$DEPS" ] && prefix="-DCMAKE_PREFIX_PATH=$DEPS"
  if [ ! -f "$B/CMakeCache.txt" ]; then
    run configure 300 cmake -S . -B "$B" -G "$gen" -DLLM_CUDA=ON -DLLM_CUDA_ARCHS=90a -DLLM_NATIVE=OFF \
      -DLLM_WERROR=OFF -DCMAKE_BUILD_TYPE=Release $prefix || { tail -20 "$LOGS/configure.log" >> "$SUMMARY"; return 1; }
    grep -E "CUDA backend|WARNING|doctest" "$LOGS/configure.log" | head -5 | sed 's/^/configure: /' >> "$SUMMARY"
  fi
  run build 540 cmake --build "$B" -j"$(nproc)" ||
    { grep -E "error|Error" "$LOGS/build.log" | head -20 >> "$SUMMARY"; return 1; }
}
# A later call on a warm machine reuses the build as it is (the sources do not change between the calls of one
# runbook, and a re-sent tree may carry new mtimes that would make ninja rebuild everything); name `build` to force.
ensure_build() {
  [ -x "$B/llm" ] && [ -x "$B/tests/llm_tests" ] && return 0
  note "no build in $B (a fresh machine): building first"
  stage_build
}

# ---- device: tests ----------------------------------------------------------------------------------------------
cuda_cases() {  # cuda_cases NAME FILE_GLOB [DOCTEST_ARGS...]: one doctest source file's cases, verbosely
  local name=$1 file=$2; shift 2
  run "$name" 240 "$B/tests/llm_tests" --source-file="*$file" --duration=true "$@"
  grep -h -E "SKIPPED|MESSAGE|agreement|max \||ERROR|FAILED|TEST CASE|test cases" "$LOGS/$name.log" | head -40 \
    | sed "s/^/$name: /" >> "$SUMMARY"
}
stage_test() {
  ensure_build || return 1
  # the CPU suite, as CI runs it (the CUDA entries run once below, verbosely; install_example configures a separate
  # project against the installed package and the Debian json package: CI's job, not this machine's)
  [ "${LLM_GPU_CTEST_CPU:-0}" = 1 ] && run ctest_cpu 180 ctest --test-dir "$B" -E "_cuda$|install_example" -j"$(nproc)" --timeout 200 --output-on-failure
  [ -f "$LOGS/ctest_cpu.log" ] && grep -E "tests passed|tests failed|Failed|\(Failed\)" "$LOGS/ctest_cpu.log" | head -10 | sed 's/^/ctest: /' >> "$SUMMARY"
  cuda_cases kernels_cuda test_kernels_cuda.cu
  cuda_cases forward_cuda test_forward_cuda.cu
}

# ---- device: compute-sanitizer ----------------------------------------------------------------------------------
sanitize() {  # sanitize TOOL FILE_GLOB TIMEOUT [DOCTEST_ARGS...]
  local name="${1}_${2%%.cu}" tool=$1 file=$2 limit=$3; shift 3
  run "$name" "$limit" compute-sanitizer --tool "$tool" --error-exitcode 1 "$B/tests/llm_tests" --source-file="*$file" "$@"
  grep -h -E "ERROR SUMMARY|RACECHECK SUMMARY|hazard|Invalid|SKIPPED|test cases" "$LOGS/$name.log" | head -6 \
    | sed "s/^/$name: /" >> "$SUMMARY"
}
stage_sanitize() {
  ensure_build || return 1
  command -v compute-sanitizer > /dev/null || { note "compute-sanitizer not found (CUDA Toolkit bin/)"; status=1; return 1; }
  # racecheck and synccheck look at shared memory and barriers: the norms, attention, argmax/sampling. The GEMV's
  # split rows share memory too, but its test case also runs cuBLASLt, whose own nvjet_sm90 kernels racecheck
  # reports hazards in (8 on the H100 2026-11-22; none in ours): run it by hand with --test-case=*GEMV* to look
  local shared='--test-case=*rmsnorm*,*attention*,*argmax*'
  sanitize memcheck test_kernels_cuda.cu 150
  sanitize racecheck test_kernels_cuda.cu 180 "$shared"
  sanitize synccheck test_kernels_cuda.cu 80 "$shared"
  sanitize memcheck test_forward_cuda.cu 120
}

# ---- device: demo model and benchmarks -----------------------------------------------------------------------------
bench() {  # bench NAME ARGS...: one `llm bench --json` run, its line appended to bench.jsonl, its figures summarised
  local name=$1; shift
  run "bench_$name" 150 "$B/llm" bench --device cuda "$@" --json || { tail -3 "$LOGS/bench_$name.log" >> "$SUMMARY"; return 1; }
  local line=$(grep '^{' "$LOGS/bench_$name.log" | tail -1)
  echo "$line" >> "$LOGS/bench.jsonl"
  echo "$line" | python3 -c 'import json,sys; j=json.loads(sys.stdin.read()); print("%s: prefill %.0f tok/s, decode %.1f tok/s, %.0f GB/s = %.1f%% of copy bw %.0f GB/s, kv %.0f B/token, peak %.0f MiB%s" % (sys.argv[1], j["prefill_tok_s"], j["decode_tok_s"], j["decode_gb_s"], j["pct_of_copy_bw"], j["copy_gb_s"], j["kv_bytes_per_token"], j["peak_device_mib"], (", attention " + j["lowrank_decode_kernel"]) if j.get("lowrank_decode_kernel") else ""))' "$name" >> "$SUMMARY" 2>&1
}
stage_demo() {
  ensure_build || return 1
  if [ ! -f "$DEMO" ]; then note "demo: no demo model at models/$DEMO_NAME (see stash notes above)"; status=1; return 1; fi
  cuda_cases forward_cuda_demo test_forward_cuda.cu '--test-case=*demo model*,*public API*'
  # the CLI end to end: greedy text (stdout only; the stats on stderr differ) must be identical. The prompt's fp32
  # greedy path has no near-ties (see tests/cuda/test_forward_cuda.cu); natural prompts may flip one legitimately.
  for d in cpu cuda; do
    run "demo_run_$d" 120 bash -c "'$B/llm' run -m '$DEMO' --device $d -p '1, 2, 3, 4, 5, 6, 7, 8, 9, 10,' -n 32 \
      --temp 0 > '$LOGS/demo_text_$d.txt'"
  done
  if cmp -s "$LOGS/demo_text_cpu.txt" "$LOGS/demo_text_cuda.txt"; then
    note "demo llm run: cpu and cuda greedy text identical"
  else
    note "demo llm run: cpu and cuda greedy text DIFFER (demo_text_*.txt in the logs)"
    status=1
  fi
  bench demo -m "$DEMO" -p 512 -n 128 -c 1024 -r 3
}
# One layer's low-rank attention against the full cache (bench_lowrank_cuda: decode at 1K / 8K / 32K for the block
# program and the tensor-core kernel, prefill of 2048 tokens): the text table in the summary, one JSON object per
# line in bench.jsonl
kbench_lowrank() {
  run kbench_lowrank 150 "$B/bench_lowrank_cuda" --ctx 1024,8192,32768 --prefill 2048 &&
    sed "s/^/lowrank: /" "$LOGS/kbench_lowrank.log" | tail -16 >> "$SUMMARY"
  run kbench_lowrank_json 150 "$B/bench_lowrank_cuda" --ctx 1024,8192,32768 --prefill 2048 --json &&
    grep '^{' "$LOGS/kbench_lowrank_json.log" >> "$LOGS/bench.jsonl"
}
# Compressed-cache benches: one `bench NAME ARGS...` line each (text + JSON, like the lines above), each issue
# under its own comment so that separate branches merge without touching each other's lines.
stage_bench_extra() {
  # issue 6 (low-rank KV, kernels/attention_lowrank.cu): one layer's decode attention, compressed vs full cache
  kbench_lowrank
  # issue 6 end to end: the low-rank cache through the whole CUDA forward (engine/forward_cuda.cu), decode tok/s
  # at 1K / 8K / 32K; compare with the `bench` stage's full-cache l3_8b_CTX lines (same flags, --kv full)
  cuda_cases forward_lowrank_cuda test_forward_cuda.cu '--test-case=*low-rank*'
  for ctx in 1024 8192 32768; do
    bench "l3_8b_svd_${ctx}" --synthetic $CONFIG -p 2048 -n 128 -c $ctx -r 3 --kv svd:k=1/4,v=d/4/d/2/d,policy=seed
  done
  bench "l3_8b_svd_sinks4_32768" --synthetic $CONFIG -p 2048 -n 128 -c 32768 -r 3 --kv svd:k=1/4,v=d/4/d/2/d,policy=seed,sinks=4
  # the issue's best quality setting (docs/kv-compression.md "Closing the gap"): a recent window of 16, value sink,
  # key ranks by spectrum (a synthetic spectrum on the random bases; c_k packed at the blocks' own ranks)
  bench "l3_8b_svd_window16_32768" --synthetic $CONFIG -p 2048 -n 128 -c 32768 -r 3 --kv svd:k=1/4,v=d/4/d/2/d,policy=seed,window=16,sinks=1,vsinks=1,alloc=spectrum
  grep -h "^kv cache" "$LOGS"/bench_l3_8b_svd_*.log 2> /dev/null | head -1 | sed "s/^/l3_8b_svd: /" >> "$SUMMARY"
  # issue 7 (quantised / importance KV, kernels/attention_quant.cu): mixed 8/4/2-bit decode attention vs bf16
  run kbench_quant 150 "$B/bench_quant_cuda" &&
    grep -E "ctx +32768|speed" "$LOGS/kbench_quant.log" | sed "s/^/quant: /" >> "$SUMMARY"
  run kbench_quant_json 150 "$B/bench_quant_cuda" --json &&
    tr -d '\n' < "$LOGS/kbench_quant_json.log" >> "$LOGS/bench.jsonl" && echo >> "$LOGS/bench.jsonl"
  # issue 7 end to end: the mixed-precision cache through the CUDA forward (importance on the device at prefill,
  # attention_quant in the decode graph); compare with the full-cache l3_8b_CTX lines
  cuda_cases forward_kvq_cuda test_forward_kvq_cuda.cu
  cuda_cases forward_svdimp_cuda test_forward_svdimp_cuda.cu  # svd policy=importance: per-layer ranks on cuda
  for ctx in 1024 8192 32768; do
    bench "l3_8b_quant_${ctx}" --synthetic $CONFIG -p 2048 -n 128 -c $ctx -r 3 --kv quant:8/4/2=0.2/0.5/0.3
  done
  # rotated rows (hadamard_rows_cuda on q, K, V and the output: four small launches a layer): their decode cost
  bench "l3_8b_quant_hadamard_32768" --synthetic $CONFIG -p 2048 -n 128 -c 32768 -r 3 --kv quant:8/4/2=0.2/0.5/0.3,hadamard
  grep -h "^kv cache" "$LOGS"/bench_l3_8b_quant_*.log 2> /dev/null | head -1 | sed "s/^/l3_8b_quant: /" >> "$SUMMARY"
  # issue 7, selective propagation (keep:<1): the prefill speed-up; compare prefill tok/s with the full cache at
  # the same -p (l3_8b_p8k_full: the prefill's attention grows with the prompt, the GEMMs with the tokens kept)
  cuda_cases forward_keep_cuda test_forward_keep_cuda.cu
  bench "l3_8b_keep_8192" --synthetic $CONFIG -p 2048 -n 128 -c 8192 -r 3 --kv keep:0.5
  cuda_cases forward_svdkeep_cuda test_forward_svdkeep_cuda.cu  # svd + keep:<1: the unified cache's prefill
  bench "l3_8b_svdkeep_8192" --synthetic $CONFIG -p 2048 -n 128 -c 8192 -r 3 --kv svd:k=1/4,v=d/4/d/2/d+keep:0.5
  for kv in full keep:0.5 keep:0.25,pyramid quant:8/4/2=0.2/0.5/0.3+keep:0.5; do
    bench "l3_8b_p8k_$(echo "$kv" | tr -c 'a-z0-9\n' '_')" --synthetic $CONFIG -p 8192 -n 64 -c 8320 -r 2 --kv "$kv"
  done
  grep -h "^keep" "$LOGS"/bench_l3_8b_*keep*.log 2> /dev/null | head -2 | sed "s/^/l3_8b_keep: /" >> "$SUMMARY"
}
# The compressed-cache kernels (issues 6 and 7): tests, sanitizers, kernel benchmarks; one call of their own.
stage_kv_tests() {
  ensure_build || return 1
  cuda_cases lowrank_cuda test_lowrank_cuda.cu
  cuda_cases quant_cuda test_quant_cuda.cu
  cuda_cases lowrank_quant_cuda test_lowrank_quant_cuda.cu
  cuda_cases lowrank_sinks_cuda test_attention_lowrank_sinks_cuda.cu  # svd sinks=N: full keys in the tile rebuild
  cuda_cases forward_sinks_cuda test_forward_sinks_cuda.cu
  cuda_cases lowrank_window_cuda test_attention_lowrank_window_cuda.cu  # svd window=/vsinks=/alloc=spectrum kernels
  cuda_cases forward_window_cuda test_forward_window_cuda.cu
  cuda_cases linalg_cuda test_linalg_cuda.cu  # cuSOLVER eigensolver for profiles (llm compress --device cuda)
}
stage_kv_sanitize() {
  ensure_build || return 1
  if command -v compute-sanitizer > /dev/null; then
    sanitize memcheck test_lowrank_cuda.cu 120
    # racecheck: the prefill and hand cases walk the same shared-memory phases as the decode (32K would be slow)
    sanitize racecheck test_lowrank_cuda.cu 90 '--test-case=*prefill*,*hand*'
    sanitize memcheck test_quant_cuda.cu 90
    sanitize racecheck test_quant_cuda.cu 90
    sanitize memcheck test_lowrank_quant_cuda.cu 150
    sanitize racecheck test_lowrank_quant_cuda.cu 90 '--test-case=*several*,*hand*'
  else
    note "compute-sanitizer not found (CUDA Toolkit bin/)"; status=1
  fi
}
stage_kv() { stage_kv_tests; stage_kv_sanitize; stage_bench_extra; }
# The tensor-core low-rank kernels (kernels/attention_lowrank_tc.cu, written without a GPU): the primitives'
# layouts, their tests, the sanitizers on them, one layer's decode kernel bench, and the end-to-end prefill and decode
# at 1K / 8K / 32K with the kernels the engine picks (auto) against the block program (generic). ~5 minutes.
stage_kv_tc() {
  ensure_build || return 1
  cuda_cases mma_cuda test_mma_cuda.cu
  cuda_cases lowrank_tc_cuda test_lowrank_cuda.cu '--test-case=*tensor-core*'
  cuda_cases lowrank_tc_sinks_cuda test_attention_lowrank_sinks_cuda.cu '--test-case=*tensor-core*'
  if command -v compute-sanitizer > /dev/null; then
    sanitize memcheck test_lowrank_cuda.cu 120 '--test-case=*tensor-core*'
    sanitize racecheck test_lowrank_cuda.cu 120 '--test-case=*tensor-core*matches*'
    sanitize synccheck test_lowrank_cuda.cu 120 '--test-case=*tensor-core*matches*'
  fi
  cuda_cases forward_lowrank_cuda test_forward_cuda.cu '--test-case=*low-rank*'
  kbench_lowrank
  for ctx in 1024 8192 32768; do
    bench "l3_8b_${ctx}" --synthetic $CONFIG -p 2048 -n 128 -c $ctx -r 3
    bench "l3_8b_svd_${ctx}" --synthetic $CONFIG -p 2048 -n 128 -c $ctx -r 3 --kv svd:k=1/4,v=d/4/d/2/d,policy=seed
    bench "l3_8b_svd_generic_${ctx}" --synthetic $CONFIG -p 2048 -n 128 -c $ctx -r 3 \
      --kv svd:k=1/4,v=d/4/d/2/d,policy=seed --lowrank-kernel generic
  done
}
stage_bench() {
  ensure_build || return 1
  for ctx in 1024 8192 32768; do
    bench "l3_8b_${ctx}" --synthetic $CONFIG -p 2048 -n 128 -c $ctx -r 3
  done
  # issue 5's fp16 path: the same weight bytes as bf16, so decode should match l3_8b_1024 (cuBLASLt's f16 kernels
  # may pick other algorithms for the prefill)
  bench "l3_8b_f16_1024" --synthetic $CONFIG -p 2048 -n 128 -c 1024 -r 3 --dtype f16
}

[ $# -eq 0 ] && set -- build test sanitize bench kv
if [ "$1" = pack ]; then stage_pack; exit $?; fi
if [ "$1" = packbin ]; then stage_packbin; exit $?; fi
trap finish EXIT
stage_env
stash_model
unpack_bin
for s in "$@"; do
  case "$s" in
    env) ;;
    build) stage_build ;;
    test) stage_test ;;
    sanitize) stage_sanitize ;;
    demo) stage_demo ;;
    bench) stage_bench ;;
    kv) stage_kv ;;
    kv_tests) stage_kv_tests ;;
    kv_sanitize) stage_kv_sanitize ;;
    kv_bench) ensure_build && stage_bench_extra ;;
    kv_tc) stage_kv_tc ;;
    *) note "unknown stage '$s' (pack, env, build, test, sanitize, demo, bench, kv, kv_tests, kv_sanitize, kv_bench, kv_tc)"; status=2 ;;
  esac
done
exit $status
