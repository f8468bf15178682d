// pool_startup with multiproc: mp::Pool(PoolOptions{.processes = N, .context =
// mp::get_context(method)}); close(); join() - timed together, as python_mp.py times
// ctx.Pool(n); close(); join().
//
// Same protocol as python_mp.py: for each start method (fork, spawn, forkserver) and N in (2, 10),
// one untimed warm-up (none in smoke mode; the first forkserver warm-up is also what starts the
// fork server, as in a long-running program), then timed runs; the median in milliseconds. The
// first, cold forkserver start (server included) is reported in forkserver_n2's note.
// The check: every worker of every run started (its pid was known) and was gone after join()
// (reaped: kill(pid, 0) fails with ESRCH). The public API does not expose the workers' exit
// statuses; join() would have thrown or hung had one failed to start or stop.
#include <multiproc/multiproc.hpp>

#include <signal.h>

#include <algorithm>
#include <cerrno>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <string>
#include <vector>

#include "bench_common.hpp"

namespace mp = multiproc;

namespace {

struct RunResult {
  double ms;
  unsigned started;  // workers whose pid was known
  unsigned gone;     // of those, no longer existing after join()
};

RunResult start_close_join(mp::StartMethod method, unsigned n) {
  const std::int64_t t0 = bench::now_ns();
  mp::Pool pool(mp::PoolOptions{.processes = n, .context = mp::get_context(method)});
  const std::vector<pid_t> pids = pool.worker_pids();
  pool.close();
  pool.join();
  const std::int64_t t1 = bench::now_ns();
  RunResult r{static_cast<double>(t1 - t0) * 1e-6, static_cast<unsigned>(pids.size()), 0};
  for (pid_t p : pids) {
    if (p > 0 && kill(p, 0) != 0 && errno == ESRCH) ++r.gone;
  }
  return r;
}

}  // namespace

int main(int argc, char** argv) {
  mp::init(argc, argv);
  const bench::Options opt =
      bench::parse_options(argc, argv, "pool_startup", "multiproc", /*uses_placement=*/false);
  const int runs = static_cast<int>(bench::pick(opt.mode, 1, 5, 9));
  bench::Status status;
  double first_forkserver_ms = -1;
  for (mp::StartMethod method :
       {mp::StartMethod::fork, mp::StartMethod::spawn, mp::StartMethod::forkserver}) {
    for (unsigned n : {2u, 10u}) {
      const std::string case_name = std::string(mp::to_string(method)) + "_n" + std::to_string(n);
      std::vector<double> times;
      unsigned started = 0, gone = 0;
      std::string error;
      try {
        if (opt.mode != bench::Mode::kSmoke) {
          const RunResult warm = start_close_join(method, n);  // warm-up, untimed
          if (method == mp::StartMethod::forkserver && first_forkserver_ms < 0)
            first_forkserver_ms = warm.ms;
        }
        for (int r = 0; r < runs; ++r) {
          const RunResult rr = start_close_join(method, n);
          if (method == mp::StartMethod::forkserver && first_forkserver_ms < 0)
            first_forkserver_ms = rr.ms;  // smoke: no warm-up, the timed run is the cold one
          times.push_back(rr.ms);
          started += rr.started;
          gone += rr.gone;
        }
      } catch (const std::exception& e) {
        error = e.what();
      }
      const unsigned want = n * static_cast<unsigned>(runs);
      const bool ok = error.empty() && started == want && gone == want;
      std::string note;
      if (!error.empty()) {
        note = error;
      } else if (!ok) {
        note = std::to_string(started) + " of " + std::to_string(want) + " workers started, " +
               std::to_string(gone) + " gone after join()";
      } else {
        char b[200];
        std::snprintf(b, sizeof b, "median of %d; min %.2f ms, max %.2f ms", runs,
                      *std::min_element(times.begin(), times.end()),
                      *std::max_element(times.begin(), times.end()));
        note = b;
        if (method == mp::StartMethod::forkserver && n == 2 && first_forkserver_ms >= 0) {
          std::snprintf(b, sizeof b,
                        "; first Pool(2) of the program, fork server start "
                        "included (%s): %.2f ms",
                        opt.mode == bench::Mode::kSmoke ? "timed" : "untimed warm-up",
                        first_forkserver_ms);
          note += b;
        }
      }
      bench::emit(opt, {.case_name = case_name,
                        .metric = "ms",
                        .value = ok ? bench::percentile(times, 50) : std::nan(""),
                        .unit = "ms",
                        .higher_is_better = false,
                        .ok = ok,
                        .check = "count=" + std::to_string(want) + " started=" +
                                 std::to_string(started) + " joined=" + std::to_string(gone),
                        .note = note});
      status.record(ok);
    }
  }
  return status.exit_code();
}
