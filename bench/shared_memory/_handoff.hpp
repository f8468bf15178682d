// What both shared_memory competitors share: the sizes, the per-worker checksum that crosses back
// (a plain struct: 24 raw bytes) and the timing/emit loop.
#pragma once

#include <cmath>
#include <cstdint>
#include <cstdio>
#include <string>
#include <vector>

#include "bench_common.hpp"

namespace handoff {

inline constexpr const char* kCase = "handoff_256mib_2workers";

struct Sums {
  std::uint64_t count;
  std::uint64_t sum;
  std::uint64_t sumsq;
};

inline void add(Sums& s, const std::int64_t* v, std::size_t n) {
  bench::Checksum c;
  for (std::size_t i = 0; i < n; ++i) c.add(static_cast<std::uint64_t>(v[i]));
  s.count += c.count;
  s.sum += c.sum;
  s.sumsq += c.sumsq;
}

// Values in the hand-off: 32 Mi (256 MiB) quick and full, 1 Mi (8 MiB) smoke.
inline std::size_t values(bench::Mode m) {
  return bench::pick(m, 1u << 20, 32u << 20, 32u << 20);
}
inline int runs(bench::Mode m) {
  return static_cast<int>(bench::pick(m, 1, 3, 5));
}

// Runs `once` (returns the two workers' sums) runs(mode) times, prints the median in ms.
template <class Once>
int measure(const bench::Options& opt, std::size_t n, Once&& once) {
  std::vector<double> ms;
  bool ok = true;
  bench::Checksum got;
  for (int r = 0; r < runs(opt.mode); ++r) {
    const std::int64_t t0 = bench::now_ns();
    std::vector<Sums> parts = once();
    ms.push_back(static_cast<double>(bench::now_ns() - t0) * 1e-6);
    got = bench::Checksum{};
    for (const Sums& s : parts) got.merge(bench::Checksum{s.count, s.sum, s.sumsq});
    ok = ok && got == bench::Checksum::of_range(0, n);
  }
  const double median = bench::percentile(ms, 50);
  char note[160];
  std::snprintf(note, sizeof note, "%s%zu MiB, %.2f GB/s", ok ? "" : "wrong checksum; ",
                n * sizeof(std::int64_t) >> 20,
                static_cast<double>(n * sizeof(std::int64_t)) / (median * 1e6));
  bench::emit(opt, {.case_name = kCase,
                    .metric = "ms",
                    .value = ok ? median : std::nan(""),
                    .unit = "ms",
                    .higher_is_better = false,
                    .ok = ok,
                    .check = got.str(),
                    .note = note});
  return ok ? 0 : 1;
}

}  // namespace handoff
