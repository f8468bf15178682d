// manager with multiproc::Manager, fork start method, the same cases as python_mp.py: a manager
// Queue is a shared-memory queue the server handed out (put/get make no round trip to it); a
// dict/Value/Lock call is one request and reply on this thread's Unix socket to the server.
// split: the proxy calls only, this process on CPU 0 and the server on CPU 1 (socketpair.cpp is
// the bound for those); unpinned: every case.
#include <sched.h>
#include <sys/resource.h>

#include <multiproc/multiproc.hpp>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <filesystem>
#include <functional>
#include <string>
#include <vector>

#include "bench_common.hpp"

namespace mp = multiproc;

namespace {

// CPU time (user + system) of this process and of its reaped children, in ms.
double cpu_ms() {
  double ms = 0;
  for (int who : {RUSAGE_SELF, RUSAGE_CHILDREN}) {
    rusage ru{};
    getrusage(who, &ru);
    for (const timeval& tv : {ru.ru_utime, ru.ru_stime})
      ms += static_cast<double>(tv.tv_sec) * 1e3 + static_cast<double>(tv.tv_usec) / 1e3;
  }
  return ms;
}

void producer(mp::Queue<std::int64_t> q, std::uint64_t n) {
  for (std::uint64_t i = 0; i < n; ++i) q.put(static_cast<std::int64_t>(i));
}

bool latency(const bench::Options& opt, std::string_view name,
             const std::function<bool(std::uint64_t)>& fn, std::uint64_t samples,
             std::uint64_t warmup) {
  std::vector<double> us;
  us.reserve(samples);
  bool good = true;
  for (std::uint64_t i = 0; i < warmup + samples; ++i) {
    const std::int64_t t0 = bench::now_ns();
    good = fn(i) && good;
    const std::int64_t t1 = bench::now_ns();
    if (i >= warmup) us.push_back(static_cast<double>(t1 - t0) / 1000.0);
  }
  const std::string check = "count=" + std::to_string(samples);
  for (auto [metric, p] : {std::pair{"p50_us", 50.0}, std::pair{"p99_us", 99.0}})
    bench::emit(opt, bench::Line{.case_name = name,
                                 .metric = metric,
                                 .value = good ? bench::percentile(us, p) : NAN,
                                 .unit = "us",
                                 .higher_is_better = false,
                                 .ok = good,
                                 .check = check});
  return good;
}

}  // namespace

int main(int argc, char** argv) {
  mp::init(argc, argv);
  const bench::Options opt = bench::parse_options(argc, argv, "manager", "multiproc");
  const mp::Context ctx = mp::get_context(mp::StartMethod::fork);
  const bool split = opt.placement == bench::Placement::kSplit;
  bench::Status status;
  bench::pin(opt.placement, bench::Role::kProducer);
  {
    mp::Manager m(ctx);
    if (split) {
      // Every thread the server has; those it makes at each connection inherit the CPU.
      cpu_set_t set;
      CPU_ZERO(&set);
      CPU_SET(1, &set);
      const std::string tasks = "/proc/" + std::to_string(m.pid()) + "/task";
      for (const auto& t : std::filesystem::directory_iterator(tasks))
        if (sched_setaffinity(std::stoi(t.path().filename()), sizeof set, &set) != 0)
          bench::die("cannot pin the server's threads to CPU 1");
      const char* na = "measured unpinned";
      for (const char* c : {"queue_put_get", "queue_1to1"})
        bench::emit_na(opt, c, "items_per_s", "items/s", true, na);
      for (const char* mt : {"p50_us", "p99_us"})
        bench::emit_na(opt, "queue_roundtrip", mt, "us", false, na);
    }
    if (!split) {  // one process: put n, then get n (all of them queued at once)
      const std::uint64_t n = bench::scaled(opt.mode, 200'000);
      auto q = m.Queue<std::int64_t>();
      const std::int64_t t0 = bench::now_ns();
      for (std::uint64_t i = 0; i < n; ++i) q.put(static_cast<std::int64_t>(i));
      bench::Checksum got;
      for (std::uint64_t i = 0; i < n; ++i) got.add(static_cast<std::uint64_t>(q.get()));
      const double dt = static_cast<double>(bench::now_ns() - t0) / 1e9;
      const bool good = got == bench::Checksum::of_range(0, n);
      status.record(good);
      bench::emit(opt, bench::Line{.case_name = "queue_put_get",
                                   .metric = "items_per_s",
                                   .value = good ? 2.0 * static_cast<double>(n) / dt : NAN,
                                   .unit = "items/s",
                                   .ok = good,
                                   .check = got.str()});
    }
    if (!split) {  // producer -> consumer
      const std::uint64_t n = bench::scaled(opt.mode, 2'000'000);
      auto q = m.Queue<std::int64_t>();
      const std::int64_t t0 = bench::now_ns();
      mp::Process p(ctx, producer, q, n);
      p.start();
      bench::Checksum got;
      for (std::uint64_t i = 0; i < n; ++i)
        got.add(static_cast<std::uint64_t>(q.get(std::chrono::seconds(30))));
      const double dt = static_cast<double>(bench::now_ns() - t0) / 1e9;
      const bool good = p.join(std::chrono::seconds(30)) && p.exitcode() == 0 &&
                        got == bench::Checksum::of_range(0, n);
      status.record(good);
      bench::emit(opt, bench::Line{.case_name = "queue_1to1",
                                   .metric = "items_per_s",
                                   .value = good ? static_cast<double>(n) / dt : NAN,
                                   .unit = "items/s",
                                   .ok = good,
                                   .check = got.str()});
    }
    const std::uint64_t samples = bench::scaled(opt.mode, 20'000);
    const std::uint64_t warmup = bench::scaled(opt.mode, 2'000);
    auto q = m.Queue<std::int64_t>();
    if (!split)
      status.record(latency(
          opt, "queue_roundtrip",
          [&](std::uint64_t i) {
            q.put(static_cast<std::int64_t>(i));
            return q.get() == static_cast<std::int64_t>(i);
          },
          samples, warmup));
    auto d = m.dict<std::string, std::int64_t>();
    d.set("k", 0);
    status.record(latency(
        opt, "dict_set",
        [&](std::uint64_t i) {
          d.set("k", static_cast<std::int64_t>(i));
          return true;
        },
        samples, warmup));
    status.record(latency(
        opt, "dict_get",
        [&](std::uint64_t) {
          return d.get("k") == static_cast<std::int64_t>(warmup + samples - 1);
        },
        samples, warmup));
    auto v = m.Value<int>(7);
    status.record(latency(
        opt, "value_get", [&](std::uint64_t) { return v.get() == 7; }, samples, warmup));
    auto lock = m.Lock();
    status.record(latency(
        opt, "lock_acquire_release",
        [&](std::uint64_t) {
          const bool got = lock.acquire();
          lock.release();
          return got;
        },
        samples, warmup));
  }
  if (split) {
    for (const char* m : {"ms", "min_ms", "cpu_ms"})
      bench::emit_na(opt, "start_shutdown", m, "ms", false, "measured unpinned");
    return status.exit_code();
  }
  // Wall time is mostly waiting for the other process to get a CPU (about ten hand-offs: fork,
  // connect-back, the two-way handshake, "ok", "stop", exit): on a loaded machine each can wait a
  // scheduler tick. min_ms is the cost with a CPU at hand; cpu_ms what both processes spend.
  const std::uint64_t runs = bench::pick(opt.mode, 2, 50, 200);
  std::vector<double> ms;
  bool good = true;
  double cpu0 = 0;
  for (std::uint64_t r = 0; r <= runs; ++r) {
    if (r == 1) cpu0 = cpu_ms();
    const std::int64_t t0 = bench::now_ns();
    mp::Manager m(ctx);
    good = good && m.pid() > 0;
    m.shutdown();
    good = good && m.pid() == -1;
    if (r > 0) ms.push_back(static_cast<double>(bench::now_ns() - t0) / 1e6);  // first: warm-up
  }
  const double cpu = (cpu_ms() - cpu0) / static_cast<double>(runs);
  std::sort(ms.begin(), ms.end());
  status.record(good);
  for (auto [metric, value] : {std::pair{"ms", ms[ms.size() / 2]}, std::pair{"min_ms", ms.front()},
                               std::pair{"cpu_ms", cpu}})
    bench::emit(opt, bench::Line{.case_name = "start_shutdown",
                                 .metric = metric,
                                 .value = good ? value : NAN,
                                 .unit = "ms",
                                 .higher_is_better = false,
                                 .ok = good,
                                 .check = "count=" + std::to_string(runs)});
  return status.exit_code();
}
