#!/usr/bin/env bash
# (1) The CPU unit tests under AddressSanitizer + UndefinedBehaviorSanitizer: build-asan, -DLLM_CUDA=OFF
#     -DLLM_SANITIZE=ON, builds llm_tests (+ gen_model, which tests run), runs ctest. Compiled with clang when it is
#     installed (setup.sh installs it for the fuzzers): with ASan at -O2 -g it compiles this code ~2.5x faster than
#     gcc 12 (measured: 300 s against 680 s on 2 cores), which keeps CI short; ASAN_CXX=g++ picks gcc.
#     Under ASan the two demo-model cases that take minutes there run smaller (tests/test_util.h, llm_test::sanitized).
# (2) Every libFuzzer target (fuzz/fuzz_*.cpp) built with clang into build-fuzz and run for FUZZ_SECONDS
#     (default 20) on a scratch copy of its seed corpus fuzz/corpus/<name>/; prints executions and time per
#     target and fails if any target finds a crash (the reproducer is kept in build-fuzz/crashes/<name>/).
# test_kv_lowrank_quality (perplexity figures over the low-rank cache, ~100 s under ASan) is left to the Release
# run: test_kv_lowrank and test_kv_lowrank_packed take the same code paths under ASan.
# Budget: about 10 minutes on 2 cores with the defaults (build ~5, tests ~3, fuzzers ~2). Env: JOBS (default nproc), FUZZ_SECONDS,
# SKIP_ASAN=1 / SKIP_FUZZ=1 to run one half only. EMU_ASAN=1 also builds the CUDA emulator's tests
# (llm_cuda_emu_tests, emu/) in build-asan and runs their kernel-level entries under ASan+UBSan (~5 more minutes;
# the demo-model forward test is left to the Release run in tools/test.sh).
set -euo pipefail
cd "$(dirname "$0")/.."
JOBS=${JOBS:-$(nproc)}
FUZZ_SECONDS=${FUZZ_SECONDS:-20}
status=0
t0=$(date +%s)

if [ "${SKIP_ASAN:-0}" != "1" ]; then
  echo "== ASan+UBSan build of the CPU tests (build-asan) =="
  # RelWithDebInfo (-O2 -g): gcc 12 at -O1 with ASan reports false -Wstringop-overflow errors under -Werror.
  emu=OFF
  if [ "${EMU_ASAN:-0}" = "1" ]; then emu=ON; fi
  # (EMU_ASAN=1 keeps gcc, with which the emulated kernels were checked under ASan)
  if [ "$emu" = ON ]; then asan_cxx=${ASAN_CXX:-g++}; else asan_cxx=${ASAN_CXX:-$(command -v clang++ || echo g++)}; fi
  asan_cc=gcc
  case "$asan_cxx" in *clang++*) asan_cc=${asan_cxx%++} ;; esac
  echo "compiler: $asan_cxx"
  cmake -S . -B build-asan -G Ninja -DCMAKE_CXX_COMPILER="$asan_cxx" -DCMAKE_C_COMPILER="$asan_cc" \
    -DLLM_CUDA=OFF -DLLM_SANITIZE=ON -DLLM_NATIVE=ON -DLLM_CUDA_EMU=$emu -DCMAKE_BUILD_TYPE=RelWithDebInfo >/dev/null
  cmake --build build-asan -j"$JOBS" --target llm_tests gen_model
  if [ "$emu" = ON ]; then cmake --build build-asan -j"$JOBS" --target llm_cuda_emu_tests; fi
  # Leak checking on; any UBSan report aborts (-fno-sanitize-recover) and fails its test.
  ASAN_OPTIONS=detect_leaks=1:abort_on_error=1 UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1 \
    ctest --test-dir build-asan --output-on-failure -j"$JOBS" -E '^cli_|^cuda_emu_forward$|^test_kv_lowrank_quality$' \
    || status=1
  echo "ASan+UBSan part: $(( $(date +%s) - t0 )) s"
fi

if [ "${SKIP_FUZZ:-0}" != "1" ]; then
  echo "== libFuzzer targets (build-fuzz, clang) =="
  CC=clang CXX=clang++ cmake -S . -B build-fuzz -G Ninja -DLLM_FUZZ=ON -DLLM_BUILD_TESTS=OFF -DLLM_CUDA=OFF \
    -DLLM_NATIVE=ON -DCMAKE_BUILD_TYPE=RelWithDebInfo >/dev/null
  cmake --build build-fuzz -j"$JOBS" --target fuzz_all
  printf '%-24s %12s %8s %8s %s\n' target executions seconds exec/s result
  for src in fuzz/fuzz_*.cpp; do
    name=$(basename "$src" .cpp)
    corpus_name=${name#fuzz_}
    work=build-fuzz/run/$name
    crashes=build-fuzz/crashes/$name
    rm -rf "$work" "$crashes"
    mkdir -p "$work" "$crashes"
    if [ -d "fuzz/corpus/$corpus_name" ]; then cp -r "fuzz/corpus/$corpus_name/." "$work/"; fi
    start=$(date +%s.%N)
    rc=0
    # -rss_limit_mb / -malloc_limit_mb: a header that makes us allocate gigabytes is a finding, not an OOM kill.
    ASAN_OPTIONS=detect_leaks=1 "build-fuzz/$name" -max_total_time="$FUZZ_SECONDS" -timeout=10 \
      -rss_limit_mb=2048 -malloc_limit_mb=1024 -print_final_stats=1 -artifact_prefix="$crashes/" \
      "$work" >"build-fuzz/$name.log" 2>&1 || rc=$?
    end=$(date +%s.%N)
    execs=$(grep -o 'stat::number_of_executed_units: *[0-9]*' "build-fuzz/$name.log" | grep -o '[0-9]*$' || echo 0)
    secs=$(awk -v a="$start" -v b="$end" 'BEGIN { printf "%.1f", b - a }')
    rate=$(awk -v e="$execs" -v s="$secs" 'BEGIN { printf "%d", (s > 0 ? e / s : 0) }')
    if [ "$rc" -ne 0 ] || [ -n "$(ls -A "$crashes")" ]; then
      result="CRASH (see build-fuzz/$name.log, reproducer in $crashes/)"
      status=1
      tail -n 40 "build-fuzz/$name.log"
    else
      result=ok
    fi
    printf '%-24s %12s %8s %8s %s\n' "$name" "$execs" "$secs" "$rate" "$result"
  done
  echo "fuzz part done at $(( $(date +%s) - t0 )) s"
fi

echo "sanitize_and_fuzz: $(( $(date +%s) - t0 )) s in all, $([ $status -eq 0 ] && echo passed || echo FAILED)"
exit $status
