#!/usr/bin/env bash
# The project's front door: ./run.sh demo | test | bench [--quick] | tsan | lint | fuzz [seconds] | format
# Installs the Debian packages it needs when missing, builds, and runs.
set -euo pipefail
cd "$(dirname "$0")"
ROOT=$(pwd)
JOBS=${JOBS:-$(nproc)}

PACKAGES=(g++ cmake ninja-build pkg-config libcereal-dev libssl-dev libgtest-dev libgmock-dev
          libboost-dev python3 python3-matplotlib clang-format libhiredis-dev redis-server
          clang-tidy cppcheck)

# ensure_packages [extra packages...]: PACKAGES and the extras.
ensure_packages() {
  local missing=()
  for p in "${PACKAGES[@]}" "$@"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
  done
  [ ${#missing[@]} -eq 0 ] && return 0
  echo "run.sh: installing missing Debian packages: ${missing[*]}"
  local sudo=()
  [ "$(id -u)" -ne 0 ] && sudo=(sudo)
  "${sudo[@]}" env DEBIAN_FRONTEND=noninteractive apt-get update -qq
  "${sudo[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}"
}

# build DIR BUILD_TYPE [extra cmake args...]
build() {
  local dir=$1 type=$2; shift 2
  # ccache, where a developer has it, makes rebuilds across worktrees cheap; CI does without.
  local launcher=()
  command -v ccache >/dev/null && launcher=(-DCMAKE_CXX_COMPILER_LAUNCHER=ccache)
  cmake -S "$ROOT" -B "$dir" -G Ninja -DCMAKE_BUILD_TYPE="$type" -DMULTIPROC_WERROR=ON \
    -DCMAKE_EXPORT_COMPILE_COMMANDS=ON "${launcher[@]}" "$@" >/dev/null
  cmake --build "$dir" -j "$JOBS"
}

cmd_demo() {
  ensure_packages
  build build/release Release
  for prog in queue_as_argument inherited_global_fork manager_queue_spawn; do
    local exe=build/release/examples/seed/$prog
    [ -x "$exe" ] || { echo "== $prog: not built yet (see its issue)"; continue; }
    echo "== examples/seed/$prog"
    local start end
    start=$(date +%s.%N)
    "$exe"
    end=$(date +%s.%N)
    printf '== %s: wall time %.2f s\n\n' "$prog" "$(python3 -c "print($end - $start)")"
  done
}

# The whole check, as CI runs it: the build and its tests, static analysis (lint), the suite
# under ASan+UBSan and under TSan (tsan), and nothing left behind in /dev/shm.
cmd_test() {
  ensure_packages
  export MULTIPROC_SHM_PREFIX=${MULTIPROC_SHM_PREFIX:-mpt$$}
  echo "== build (RelWithDebInfo, -Werror) and ctest"
  build build/debug RelWithDebInfo
  (cd build/debug && ctest --output-on-failure -j "$JOBS" --timeout 600)
  run_lint build/debug
  echo "== build with AddressSanitizer + UndefinedBehaviorSanitizer and ctest"
  build build/asan Debug -DMULTIPROC_SANITIZE=address,undefined -DMULTIPROC_BUILD_BENCH=OFF
  (cd build/asan && ASAN_OPTIONS=detect_leaks=1:handle_segv=0:handle_abort=0:handle_sigbus=0 UBSAN_OPTIONS=print_stacktrace=1 \
     ctest --output-on-failure -j "$JOBS" --timeout 600 -LE 'no-sanitizer|example')
  run_tsan
  check_shm_clean
}

# clang-tidy (.clang-tidy) and cppcheck (.cppcheck-suppressions) on src/, with the compile
# database of build DIR. Both must be clean: every finding is fixed or its silencing explained.
run_lint() {
  local dir=$1
  echo "== clang-tidy on src/ ($JOBS at a time)"
  find src -name '*.cpp' | sort | xargs -P "$JOBS" -n 1 clang-tidy -p "$dir" --quiet --extra-arg=-Wno-unknown-warning-option
  echo "== cppcheck on src/"
  mkdir -p "$dir/cppcheck"
  cppcheck --project="$dir/compile_commands.json" --file-filter='src/*' -j "$JOBS" --quiet \
    --enable=warning,performance,portability --std=c++20 --inline-suppr --error-exitcode=1 \
    --suppressions-list=.cppcheck-suppressions --cppcheck-build-dir="$dir/cppcheck"
  echo "== static analysis: clean"
}

cmd_lint() {
  ensure_packages
  build build/debug RelWithDebInfo
  run_lint build/debug
}

# Nothing the suite created may outlive it in /dev/shm (the resource tracker removes what
# SIGKILLed children left behind once the last process of each test is gone).
check_shm_clean() {
  for _ in $(seq 100); do
    ls /dev/shm | grep -q "^${MULTIPROC_SHM_PREFIX}" || { echo "== /dev/shm: nothing left behind"; return 0; }
    sleep 0.1
  done
  echo "== /dev/shm: left behind by the test suite:"; ls /dev/shm | grep "^${MULTIPROC_SHM_PREFIX}" | head
  ls /dev/shm | grep "^${MULTIPROC_SHM_PREFIX}" | while read -r f; do rm -f "/dev/shm/$f"; done
  return 1
}

# ThreadSanitizer on the whole suite: races between the threads of each process (the pool's pump
# and monitor, ThreadPool, futures, the manager's server, Redis senders, user threads). TSan does
# not see synchronisation between processes through shared memory, and cannot follow a fork from
# a threaded process: tests/tsan.cmake leaves those tests out, each with its reason (see
# docs/reliability.md, "Sanitizers and static analysis"). The leak checks (descriptors and
# /dev/shm files, which no sanitizer changes) run in the plain and ASan builds only. Part of
# ./run.sh test.
run_tsan() {
  echo "== build with ThreadSanitizer and ctest"
  build build/tsan Debug -DMULTIPROC_SANITIZE=thread -DMULTIPROC_BUILD_BENCH=OFF -DMULTIPROC_BUILD_EXAMPLES=OFF
  (cd build/tsan && TSAN_OPTIONS="halt_on_error=1 report_signal_unsafe=0 handle_segv=0 handle_abort=0 second_deadlock_stack=1 suppressions=$ROOT/tests/support/tsan.supp" \
     ctest --output-on-failure -j "$JOBS" --timeout 600 -LE 'no-tsan|no-sanitizer|example|compile-fail|leak-check')
}

cmd_tsan() {
  ensure_packages
  export MULTIPROC_SHM_PREFIX=${MULTIPROC_SHM_PREFIX:-mpt$$}
  run_tsan
  check_shm_clean
}

# libFuzzer on every fuzz/fuzz_*.cpp target for [seconds] each (default 60), with ASan and UBSan,
# starting from its corpus in fuzz/corpus/<name>/. New inputs go to build/fuzz/corpus/<name>/ (to
# keep some: fuzz_<name> -merge=1 fuzz/corpus/<name> build/fuzz/corpus/<name>); a finding stops
# the run with its reproducer in build/fuzz/findings/, which belongs in the corpus once fixed.
# clang and libFuzzer are needed here only: ./run.sh test replays the corpora with any compiler.
cmd_fuzz() {
  local seconds=${1:-60}
  ensure_packages clang libclang-rt-14-dev
  build build/fuzz RelWithDebInfo -DCMAKE_CXX_COMPILER=clang++ -DMULTIPROC_BUILD_FUZZ=ON \
    -DMULTIPROC_SANITIZE=address,undefined -DMULTIPROC_BUILD_TESTS=OFF -DMULTIPROC_BUILD_BENCH=OFF \
    -DMULTIPROC_BUILD_EXAMPLES=OFF
  export MULTIPROC_SHM_PREFIX=${MULTIPROC_SHM_PREFIX:-mpf$$}
  export ASAN_OPTIONS=detect_leaks=1:handle_segv=0:handle_abort=0:handle_sigbus=0
  mkdir -p build/fuzz/findings
  for src in fuzz/fuzz_*.cpp; do
    local name; name=$(basename "$src" .cpp)
    local corpus=fuzz/corpus/${name#fuzz_} out=build/fuzz/corpus/${name#fuzz_}
    mkdir -p "$out"
    echo "== $name: ${seconds} s"
    local log=build/fuzz/$name.log rc=0
    build/fuzz/fuzz/"$name" -max_total_time="$seconds" -timeout=10 -rss_limit_mb=2048 \
      -print_final_stats=1 -artifact_prefix=build/fuzz/findings/"$name"- "$out" "$corpus" \
      >"$log" 2>&1 || rc=$?
    grep -E '^#[0-9]+[[:space:]]+DONE|^stat::average_exec_per_sec' "$log" || true
    [ "$rc" -eq 0 ] || { tail -n 40 "$log"; echo "== $name: finding, see build/fuzz/findings/"; return 1; }
  done
  check_shm_clean
}

cmd_bench() {
  # The redis scenario's competitors (bench/redis/): Celery and RQ, with real workers.
  ensure_packages python3-celery python3-rq
  build build/release Release
  /usr/bin/python3 bench/run_all.py --build build/release "$@"
}

cmd_format() {
  ensure_packages
  git ls-files '*.hpp' '*.cpp' | xargs clang-format -i
}

case "${1:-}" in
  demo) shift; cmd_demo "$@" ;;
  test) shift; cmd_test "$@" ;;
  bench) shift; cmd_bench "$@" ;;
  tsan) shift; cmd_tsan "$@" ;;
  lint) shift; cmd_lint "$@" ;;
  fuzz) shift; cmd_fuzz "$@" ;;
  format) shift; cmd_format "$@" ;;
  *) echo "usage: ./run.sh demo | test | bench [--quick] | tsan | lint | fuzz [seconds] | format"; exit 2 ;;
esac
