// cpu_scaling with multiproc: 40 CPU-bound tasks of about 20 ms (bench::cpu_work calibrated here
// with calibrate_cpu_work(0.020)) run serially in the parent, then on a started and warmed-up
// mp::Pool(2) with pool.map(task, work, chunksize 1), as python_mp.py does. speedup = serial
// time / pool time (2 at best on two idle CPUs); the pool's results must equal the serial ones.
#include <multiproc/multiproc.hpp>

#include <cmath>
#include <cstdint>
#include <cstdio>
#include <string>
#include <vector>

#include "bench_common.hpp"

namespace mp = multiproc;

namespace {

struct Work {  // plain bytes: crosses as 16 raw bytes
  std::uint64_t iters;
  std::uint64_t seed;
};

std::uint64_t task(Work w) {
  return bench::cpu_work(w.iters, w.seed);
}

}  // namespace

int main(int argc, char** argv) {
  mp::init(argc, argv);
  const bench::Options opt =
      bench::parse_options(argc, argv, "cpu_scaling", "multiproc", /*uses_placement=*/false);
  const std::uint64_t tasks = bench::pick(opt.mode, 4, 40, 40);
  const double seconds = opt.mode == bench::Mode::kSmoke ? 0.002 : 0.020;
  const std::uint64_t iters = bench::calibrate_cpu_work(seconds);
  std::vector<Work> work;
  for (std::uint64_t s = 0; s < tasks; ++s) work.push_back({iters, s});

  std::int64_t t0 = bench::now_ns();
  std::vector<std::uint64_t> expected;
  for (const Work& w : work) expected.push_back(task(w));
  const double serial = static_cast<double>(bench::now_ns() - t0) * 1e-9;

  mp::Pool pool(2);
  (void)pool.map(task, std::vector<Work>{{1, 0}, {1, 1}}, 1);  // both workers up
  t0 = bench::now_ns();
  const std::vector<std::uint64_t> result = pool.map(task, work, 1);
  const double parallel = static_cast<double>(bench::now_ns() - t0) * 1e-9;
  pool.close();
  pool.join();

  const bool ok = result == expected;
  bench::Checksum got;
  for (std::uint64_t v : result) got.add(v);
  char note[200];
  std::snprintf(note, sizeof note, "%sserial %.0f ms, Pool(2) %.0f ms, %llu iterations per task",
                ok ? "" : "pool results differ from the serial ones; ", serial * 1e3,
                parallel * 1e3, static_cast<unsigned long long>(iters));
  const std::string case_name =
      "cpu" + std::to_string(std::lround(seconds * 1000)) + "ms_x" + std::to_string(tasks);
  bench::emit(opt, {.case_name = case_name,
                    .metric = "speedup",
                    .value = ok ? serial / parallel : std::nan(""),
                    .unit = "x",
                    .ok = ok,
                    .check = got.str(),
                    .note = note});
  return ok ? 0 : 1;
}
