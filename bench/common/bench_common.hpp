// bench_common.hpp: the small toolkit every C++ competitor program of the benchmark suite uses.
//
// A competitor is one program (bench/<scenario>/<competitor>.cpp). It parses `--mode`, reads
// BENCH_PLACEMENT, runs its cases, checks what its consumers received (count and checksum of every
// item) and prints one JSON object per measured figure on stdout; bench/run_all.py runs it and
// compares. bench/README.md is the protocol; this header is its C++ side: options and placement
// (parse_options, pin), clocks (now_ns), percentile, the integer checksum (Checksum), the stamps
// that byte items carry (stamp_item, read_stamp), the JSON line printer (emit, emit_na), forking
// helpers that never leave orphans (fork_child, wait_children), shared memory (SharedRegion),
// a spin-then-yield wait (Backoff) and the calibrated CPU-bound work of cpu_scaling (cpu_work).
// bench/common/bench_common.py mirrors it for Python competitors. POSIX only, header only.
#pragma once

#include <sched.h>
#include <signal.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cmath>
#include <cstdarg>
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <exception>
#include <span>
#include <stdexcept>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace bench {

// ---- options ------------------------------------------------------------------------------------

// smoke: tiny sizes, well under a second (ctest); quick: `run_all.py --quick`; full: the default.
enum class Mode { kSmoke, kQuick, kFull };
// Where the two sides run. split: producer/parent side on CPU 0, consumer/child side on CPU 1;
// same: every process on CPU 0; unpinned: wherever the scheduler puts them.
enum class Placement { kUnpinned, kSplit, kSame };
enum class Role { kProducer, kConsumer };

struct Options {
  Mode mode = Mode::kQuick;
  Placement placement = Placement::kUnpinned;
  std::string scenario;
  std::string competitor;
};

inline const char* mode_name(Mode m) {
  return m == Mode::kSmoke ? "smoke" : m == Mode::kQuick ? "quick" : "full";
}
inline const char* placement_name(Placement p) {
  return p == Placement::kSplit ? "split" : p == Placement::kSame ? "same" : "unpinned";
}

[[noreturn]] inline void die(const char* fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  std::fputs("bench: ", stderr);
  std::vfprintf(stderr, fmt, ap);
  std::fputc('\n', stderr);
  va_end(ap);
  std::exit(2);
}

// Parses `--mode smoke|quick|full` (default quick) and BENCH_PLACEMENT (default unpinned). A
// program whose workload has no placement (a pool uses every CPU) passes uses_placement = false
// and always reports "unpinned". Bad arguments exit with status 2.
inline Options parse_options(int argc, char** argv, std::string scenario, std::string competitor,
                             bool uses_placement = true) {
  Options o;
  o.scenario = std::move(scenario);
  o.competitor = std::move(competitor);
  for (int i = 1; i < argc; ++i) {
    std::string_view a = argv[i];
    std::string_view v;
    if (a == "--mode" && i + 1 < argc) {
      v = argv[++i];
    } else if (a.starts_with("--mode=")) {
      v = a.substr(7);
    } else {
      die("usage: %s [--mode smoke|quick|full]  (env BENCH_PLACEMENT=split|same|unpinned)",
          argv[0]);
    }
    if (v == "smoke") {
      o.mode = Mode::kSmoke;
    } else if (v == "quick") {
      o.mode = Mode::kQuick;
    } else if (v == "full") {
      o.mode = Mode::kFull;
    } else {
      die("unknown mode '%.*s' (smoke|quick|full)", static_cast<int>(v.size()), v.data());
    }
  }
  const char* env = std::getenv("BENCH_PLACEMENT");
  std::string_view p = env ? env : "";
  if (p == "split") {
    o.placement = Placement::kSplit;
  } else if (p == "same") {
    o.placement = Placement::kSame;
  } else if (p.empty() || p == "unpinned") {
    o.placement = Placement::kUnpinned;
  } else {
    die("unknown BENCH_PLACEMENT '%s' (split|same|unpinned)", env);
  }
  if (!uses_placement) o.placement = Placement::kUnpinned;
  return o;
}

// Sizes: pick(mode, smoke, quick, full), or scaled(mode, quick) for smoke = quick/1000 (at least
// min(quick, 16)) and full = 4 * quick.
inline std::uint64_t pick(Mode m, std::uint64_t smoke, std::uint64_t quick, std::uint64_t full) {
  return m == Mode::kSmoke ? smoke : m == Mode::kQuick ? quick : full;
}
inline std::uint64_t scaled(Mode m, std::uint64_t quick) {
  return pick(m, std::max<std::uint64_t>(std::min<std::uint64_t>(quick, 16), quick / 1000), quick,
              4 * quick);
}

// Pins the calling thread (call it first thing in each process, before starting threads, which
// inherit the mask) according to the placement and the process's role. Exits with status 2 when
// the CPU is not available.
inline void pin(Placement p, Role r) {
  if (p == Placement::kUnpinned) return;
  const int cpu = (p == Placement::kSplit && r == Role::kConsumer) ? 1 : 0;
  cpu_set_t set;
  CPU_ZERO(&set);
  CPU_SET(cpu, &set);
  if (sched_setaffinity(0, sizeof set, &set) != 0) {
    die("cannot pin to CPU %d: %s", cpu, std::strerror(errno));
  }
}

// ---- clocks and statistics ----------------------------------------------------------------------

// CLOCK_MONOTONIC is one clock for the whole machine, so stamps taken in different processes
// compare directly (start in the producer, end in the consumer).
inline std::int64_t now_ns() {
  timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return static_cast<std::int64_t>(ts.tv_sec) * 1000000000 + ts.tv_nsec;
}

// Nearest-rank percentile (p in [0, 100]) of the samples; NaN when there are none.
inline double percentile(std::vector<double> v, double p) {
  if (v.empty()) return std::nan("");
  std::sort(v.begin(), v.end());
  auto rank = static_cast<std::size_t>(std::ceil(p / 100.0 * static_cast<double>(v.size())));
  return v[std::clamp<std::size_t>(rank, 1, v.size()) - 1];
}

// ---- checks -------------------------------------------------------------------------------------

// Order-independent checksum of a multiset of 64-bit values: count, plus
// checksum = (sum(v) + kMul * sum(v * v)) mod 2^64. Consumers add what they receive; the expected
// value for the integers lo..hi-1 comes in closed form. Python computes the same number.
struct Checksum {
  static constexpr std::uint64_t kMul = 0x9E3779B97F4A7C15ull;
  std::uint64_t count = 0;
  std::uint64_t sum = 0;
  std::uint64_t sumsq = 0;

  void add(std::uint64_t v) {
    ++count;
    sum += v;
    sumsq += v * v;
  }
  void merge(const Checksum& o) {
    count += o.count;
    sum += o.sum;
    sumsq += o.sumsq;
  }
  std::uint64_t value() const { return sum + kMul * sumsq; }
  bool operator==(const Checksum& o) const { return count == o.count && value() == o.value(); }
  // "count=N checksum=0123456789abcdef", the text of the JSON "check" field.
  std::string str() const {
    char b[80];
    std::snprintf(b, sizeof b, "count=%llu checksum=%016llx",
                  static_cast<unsigned long long>(count), static_cast<unsigned long long>(value()));
    return b;
  }
  // The checksum of lo, lo+1, ..., hi-1 (hi < 2^40).
  static Checksum of_range(std::uint64_t lo, std::uint64_t hi) {
    auto s1 = [](unsigned __int128 n) { return static_cast<std::uint64_t>(n * (n - 1) / 2); };
    auto s2 = [](unsigned __int128 n) {
      return n == 0 ? 0 : static_cast<std::uint64_t>((n - 1) * n * (2 * n - 1) / 6);
    };
    Checksum c;
    c.count = hi - lo;
    c.sum = s1(hi) - s1(lo);
    c.sumsq = s2(hi) - s2(lo);
    return c;
  }
};

// A byte item of n >= 24 bytes carries its sequence number three times, so that a consumer can
// check every item without reading every byte: seq at offset 0, seq ^ kMidXor at the middle word
// ((n / 2) rounded down to 8), ~seq in the last 8 bytes. Smaller items carry seq at offset 0 only.
inline constexpr std::uint64_t kMidXor = 0xA5A5A5A5A5A5A5A5ull;

inline void stamp_item(std::span<std::byte> item, std::uint64_t seq) {
  std::memcpy(item.data(), &seq, 8);
  if (item.size() < 24) return;
  const std::uint64_t mid = seq ^ kMidXor, last = ~seq;
  std::memcpy(item.data() + ((item.size() / 2) & ~std::size_t{7}), &mid, 8);
  std::memcpy(item.data() + item.size() - 8, &last, 8);
}

// Returns true and the item's sequence number when its stamps agree.
inline bool read_stamp(std::span<const std::byte> item, std::uint64_t* seq) {
  if (item.size() < 8) return false;
  std::uint64_t first, mid, last;
  std::memcpy(&first, item.data(), 8);
  *seq = first;
  if (item.size() < 24) return true;
  std::memcpy(&mid, item.data() + ((item.size() / 2) & ~std::size_t{7}), 8);
  std::memcpy(&last, item.data() + item.size() - 8, 8);
  return mid == (first ^ kMidXor) && last == ~first;
}

// ---- output -------------------------------------------------------------------------------------

// One measured figure. higher_is_better: throughput-like (true) or latency/time-like (false).
// ok: the check passed. check: what was checked ("count=... checksum=..."). note: optional.
struct Line {
  std::string_view case_name = {};
  std::string_view metric = {};
  double value = 0;
  std::string_view unit = {};
  bool higher_is_better = true;
  bool ok = true;
  std::string check = {};
  std::string note = {};
};

inline std::string json_string(std::string_view s) {
  std::string out = "\"";
  for (char ch : s) {
    const auto c = static_cast<unsigned char>(ch);
    if (c == '"' || c == '\\') {
      out += '\\';
      out += ch;
    } else if (c < 0x20) {
      char b[8];
      std::snprintf(b, sizeof b, "\\u%04x", c);
      out += b;
    } else {
      out += ch;
    }
  }
  return out + "\"";
}

namespace detail {
inline void print_line(const Options& o, const Line& l, bool na) {
  char num[64];
  const bool finite = std::isfinite(l.value);
  if (na || !finite) {
    std::snprintf(num, sizeof num, "null");
  } else {
    std::snprintf(num, sizeof num, "%.10g", l.value);
  }
  std::string s = "{\"scenario\": " + json_string(o.scenario) +
                  ", \"case\": " + json_string(l.case_name) +
                  ", \"competitor\": " + json_string(o.competitor) +
                  ", \"placement\": " + json_string(placement_name(o.placement)) +
                  ", \"metric\": " + json_string(l.metric) + ", \"value\": " + num +
                  ", \"unit\": " + json_string(l.unit) +
                  ", \"higher_is_better\": " + (l.higher_is_better ? "true" : "false") +
                  ", \"ok\": " + ((l.ok && (na || finite)) ? "true" : "false") +
                  ", \"check\": " + json_string(na ? "n/a" : l.check);
  if (!l.note.empty()) s += ", \"note\": " + json_string(l.note);
  s += "}\n";
  std::fputs(s.c_str(), stdout);
  std::fflush(stdout);
}
}  // namespace detail

// Prints the figure as one JSON line on stdout (flushed at once, so a later crash loses nothing).
// A non-finite value is printed as null with ok=false.
inline void emit(const Options& o, const Line& l) {
  detail::print_line(o, l, false);
}

// Says that a case does not apply to this competitor: value null, ok true, check "n/a", and the
// reason in note.
inline void emit_na(const Options& o, std::string_view case_name, std::string_view metric,
                    std::string_view unit, bool higher_is_better, std::string note) {
  detail::print_line(o,
                     Line{.case_name = case_name,
                          .metric = metric,
                          .unit = unit,
                          .higher_is_better = higher_is_better,
                          .note = std::move(note)},
                     true);
}

// Collects the outcome of every case: exit_code() is 0 when every check passed, else 1.
class Status {
 public:
  void record(bool ok) { ok_ = ok_ && ok; }
  int exit_code() const { return ok_ ? 0 : 1; }

 private:
  bool ok_ = true;
};

// ---- processes and shared memory ----------------------------------------------------------------

// An anonymous MAP_SHARED mapping, zero-filled: made before fork(), the same pages in every child.
class SharedRegion {
 public:
  explicit SharedRegion(std::size_t bytes) : size_(bytes) {
    data_ = mmap(nullptr, size_, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
    if (data_ == MAP_FAILED) throw std::runtime_error("mmap of shared memory failed");
  }
  ~SharedRegion() { munmap(data_, size_); }
  SharedRegion(const SharedRegion&) = delete;
  SharedRegion& operator=(const SharedRegion&) = delete;
  void* data() const { return data_; }
  std::size_t size() const { return size_; }

 private:
  void* data_;
  std::size_t size_;
};

// Forks a child that runs fn() and _exits with its result (an int; 1 when it throws, after
// printing what() to stderr). The child gets SIGKILL when the parent dies, so a benchmark killed
// by the runner's timeout leaves no orphans behind.
template <class F>
pid_t fork_child(F&& fn) {
  std::fflush(nullptr);
  const pid_t parent = getpid();
  const pid_t pid = fork();
  if (pid < 0) throw std::runtime_error(std::string("fork failed: ") + std::strerror(errno));
  if (pid > 0) return pid;
  prctl(PR_SET_PDEATHSIG, SIGKILL);
  if (getppid() != parent) _exit(1);
  int rc = 1;
  try {
    rc = fn();
  } catch (const std::exception& e) {
    std::fprintf(stderr, "bench child %d: %s\n", static_cast<int>(getpid()), e.what());
  } catch (...) {
    std::fprintf(stderr, "bench child %d: unknown exception\n", static_cast<int>(getpid()));
  }
  std::fflush(nullptr);
  _exit(rc);
}

// "" when a child's wait status means a clean exit (status 0), else what happened to it.
inline std::string describe_exit(pid_t pid, int status) {
  if (WIFEXITED(status) && WEXITSTATUS(status) == 0) return "";
  char b[96];
  if (WIFSIGNALED(status)) {
    std::snprintf(b, sizeof b, "child %d killed by signal %d", static_cast<int>(pid),
                  WTERMSIG(status));
  } else {
    std::snprintf(b, sizeof b, "child %d exited with status %d", static_cast<int>(pid),
                  WEXITSTATUS(status));
  }
  return b;
}

// Waits for every child. When one exits non-zero or by a signal, the others are killed (a peer of
// a dead process would block forever). Returns "" when all exited with status 0, else what failed.
inline std::string wait_children(std::vector<pid_t> pids) {
  std::string failed;
  while (!pids.empty()) {
    int st = 0;
    const pid_t pid = waitpid(-1, &st, 0);
    if (pid < 0) {
      if (errno == EINTR) continue;
      failed += "waitpid failed; ";
      break;
    }
    auto it = std::find(pids.begin(), pids.end(), pid);
    if (it == pids.end()) continue;
    pids.erase(it);
    const std::string what = describe_exit(pid, st);
    if (what.empty()) continue;
    if (failed.empty()) {
      for (pid_t p : pids) kill(p, SIGKILL);
    }
    failed += what + "; ";
  }
  while (!failed.empty() && (failed.back() == ' ' || failed.back() == ';')) failed.pop_back();
  return failed;
}

// ---- waiting and CPU work -----------------------------------------------------------------------

inline void cpu_relax() {
#if defined(__x86_64__) || defined(__i386__)
  __builtin_ia32_pause();
#elif defined(__aarch64__)
  asm volatile("yield" ::: "memory");
#endif
}

// Spin-then-yield wait for the raw rings: kSpins PAUSEs, then sched_yield() on every call. Across
// CPUs it is a busy spin (nothing else wants the CPU); on one CPU the yield lets the peer run.
class Backoff {
 public:
  static constexpr int kSpins = 100;
  void wait() {
    if (n_ < kSpins) {
      ++n_;
      cpu_relax();
    } else {
      sched_yield();
    }
  }
  void reset() { n_ = 0; }

 private:
  int n_ = 0;
};

// cpu_scaling's task: a dependent chain of 64-bit LCG steps, one multiply-add per iteration,
// which no compiler collapses. Python's bench_common.cpu_work computes the same values.
inline std::uint64_t cpu_work(std::uint64_t iters, std::uint64_t seed) {
  std::uint64_t x = seed;
  for (std::uint64_t i = 0; i < iters; ++i) x = x * 6364136223846793005ull + 1442695040888963407ull;
  return x;
}

// How many cpu_work iterations take `seconds` of CPU on this machine (best of a few trials).
inline std::uint64_t calibrate_cpu_work(double seconds) {
  const std::uint64_t probe = 1'000'000;
  double best = 1e30;
  for (int t = 0; t < 5; ++t) {
    const std::int64_t t0 = now_ns();
    volatile std::uint64_t sink = cpu_work(probe, static_cast<std::uint64_t>(t));
    (void)sink;
    best = std::min(best, static_cast<double>(now_ns() - t0) * 1e-9);
  }
  return static_cast<std::uint64_t>(static_cast<double>(probe) * seconds / best);
}

}  // namespace bench
