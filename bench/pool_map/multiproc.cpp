// pool_map with multiproc: mp::Pool(2).map(inc, xs) with inc(x) = x + 1 over n std::int64_t.
//
// Same protocol as python_mp.py: the pool is started and warmed up first (a map of 1,000 items
// with chunksize 1, so that both workers are up), then each timed run is one pool.map call over a
// std::vector<std::int64_t> made beforehand (Python times pool.map(inc, range(n)), whose range
// costs nothing), after untimed maps of the same shape (three for auto, one for chunk1). That
// warm-up matters here: a fresh pool's first big maps pay for growing the pool's queues and first
// touching their pages and the buffers' (about 6, 3.5 and 2 ms for 200,000 ints, then 0.9-1.7 ms a
// map, this machine); tasks_per_s = n / the median time. Cases: auto (chunksize 0 = chosen by the
// pool: ceil(n / (4 * workers)), Python's rule) and chunk1 (chunksize 1, one task per item).
// Every run's result is compared in full with [1, ..., n]; the check is its count and checksum.
// Pool creation is not timed.
#include <multiproc/multiproc.hpp>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <string>
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
  const bench::Options opt =
      bench::parse_options(argc, argv, "pool_map", "multiproc", /*uses_placement=*/false);
  struct Case {
    const char* name;
    std::uint64_t n;
    std::size_t chunksize;
    int runs;
  };
  const Case cases[] = {
      {"auto", bench::pick(opt.mode, 2'000, 200'000, 200'000), 0,
       static_cast<int>(bench::pick(opt.mode, 1, 5, 9))},
      {"chunk1", bench::pick(opt.mode, 500, 200'000, 200'000), 1,
       static_cast<int>(bench::pick(opt.mode, 1, 3, 5))},
  };
  bench::Status status;
  mp::Pool pool(2);
  {
    std::vector<std::int64_t> warm(1000);
    for (std::size_t i = 0; i < warm.size(); ++i) warm[i] = static_cast<std::int64_t>(i);
    (void)pool.map(inc, warm, 1);  // both workers up and warm
  }
  for (const Case& c : cases) {
    std::vector<std::int64_t> xs(c.n);
    for (std::uint64_t i = 0; i < c.n; ++i) xs[i] = static_cast<std::int64_t>(i);
    for (int w = 0; w < (c.chunksize == 0 ? 3 : 1); ++w) (void)pool.map(inc, xs, c.chunksize);
    std::vector<double> times;
    bool ok = true;
    std::string note;
    bench::Checksum got;
    for (int r = 0; r < c.runs; ++r) {
      const std::int64_t t0 = bench::now_ns();
      const std::vector<std::int64_t> result = pool.map(inc, xs, c.chunksize);
      const std::int64_t t1 = bench::now_ns();
      times.push_back(static_cast<double>(t1 - t0) * 1e-9);
      got = bench::Checksum{};
      for (std::int64_t v : result) got.add(static_cast<std::uint64_t>(v));
      if (result.size() != c.n) {
        ok = false;
        note = "result has " + std::to_string(result.size()) + " items, not " + std::to_string(c.n);
      } else {
        for (std::uint64_t i = 0; i < c.n; ++i) {
          if (result[i] != static_cast<std::int64_t>(i + 1)) {
            ok = false;
            note = "result[" + std::to_string(i) + "] = " + std::to_string(result[i]);
            break;
          }
        }
      }
    }
    ok = ok && got == bench::Checksum::of_range(1, c.n + 1);
    const double median = bench::percentile(times, 50);
    char extra[160];
    std::snprintf(extra, sizeof extra, "median of %d maps: %.2f ms; best %.2f ms", c.runs,
                  median * 1e3, *std::min_element(times.begin(), times.end()) * 1e3);
    emit(opt, {.case_name = c.name,
               .metric = "tasks_per_s",
               .value = ok ? static_cast<double>(c.n) / median : std::nan(""),
               .unit = "tasks/s",
               .ok = ok,
               .check = got.str(),
               .note = ok ? std::string(extra) : note});
    status.record(ok);
  }
  pool.close();
  pool.join();
  return status.exit_code();
}
