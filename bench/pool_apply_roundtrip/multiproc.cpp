// pool_apply_roundtrip with multiproc: pool.apply_async(inc, x).get() on a started mp::Pool(2),
// one call at a time, inc(x) = x + 1. Warm-up calls first (both workers up), then the timed round
// trips; nearest-rank p50/p99 in microseconds; every result is checked (count and checksum of
// the replies, as python_mp.py does).
#include <multiproc/multiproc.hpp>

#include <cmath>
#include <cstdint>
#include <string>
#include <utility>
#include <vector>

#include "bench_common.hpp"

namespace mp = multiproc;

namespace {

std::int64_t inc(std::int64_t x) {
  return x + 1;
}

}  // namespace

int main(int argc, char** argv) {
  mp::init(argc, argv);
  const bench::Options opt = bench::parse_options(argc, argv, "pool_apply_roundtrip", "multiproc",
                                                  /*uses_placement=*/false);
  const std::uint64_t warmup = bench::scaled(opt.mode, 2'000);
  const std::uint64_t samples = bench::scaled(opt.mode, 20'000);
  std::vector<double> rtt;
  rtt.reserve(samples);
  bench::Checksum got;
  std::string error;
  {
    mp::Pool pool(2);
    for (std::uint64_t i = 0; i < warmup + samples; ++i) {
      const std::int64_t t0 = bench::now_ns();
      const std::int64_t r = pool.apply_async(inc, static_cast<std::int64_t>(i)).get();
      const std::int64_t t1 = bench::now_ns();
      if (i >= warmup) rtt.push_back(static_cast<double>(t1 - t0) * 1e-3);
      if (r != static_cast<std::int64_t>(i + 1) && error.empty()) {
        error = "f(" + std::to_string(i) + ") returned " + std::to_string(r);
      }
      got.add(static_cast<std::uint64_t>(r));
    }
    pool.close();
    pool.join();
  }
  const bench::Checksum want = bench::Checksum::of_range(1, warmup + samples + 1);
  const bool ok = error.empty() && got == want;
  const std::string note = !error.empty() ? error : ok ? "" : "expected " + want.str();
  for (auto [metric, p] : {std::pair{"p50_us", 50.0}, std::pair{"p99_us", 99.0}}) {
    bench::emit(opt, {.case_name = "apply_async_get",
                      .metric = metric,
                      .value = ok ? bench::percentile(rtt, p) : std::nan(""),
                      .unit = "us",
                      .higher_is_better = false,
                      .ok = ok,
                      .check = got.str(),
                      .note = note});
  }
  return ok ? 0 : 1;
}
