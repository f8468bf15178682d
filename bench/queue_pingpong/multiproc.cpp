// queue_pingpong with two multiproc::Queue<std::int64_t> (one each way, unbounded, made in the
// parent before the driver forks the two sides): the ping side puts i and waits for i + 1 (see
// queue_driver.hpp's run_pingpong; placements per BENCH_PLACEMENT). A blocked get() spins briefly,
// yields, then sleeps on a futex (multiproc/detail/futex.hpp).
#include <multiproc/multiproc.hpp>

#include <cstdint>

#include "queue_driver.hpp"

namespace mp = multiproc;

namespace {

struct IntChannel {
  mp::Queue<std::int64_t> q;
  void put(std::uint64_t v) { q.put(static_cast<std::int64_t>(v)); }
  std::uint64_t get() { return static_cast<std::uint64_t>(q.get()); }
};

}  // namespace

int main(int argc, char** argv) {
  mp::init(argc, argv);
  const bench::Options opt = bench::parse_options(argc, argv, "queue_pingpong", "multiproc");
  IntChannel to_child, to_parent;
  const bool ok = bench::run_pingpong(opt, "int64", bench::scaled(opt.mode, 5'000),
                                      bench::scaled(opt.mode, 50'000), to_child, to_parent);
  return ok ? 0 : 1;
}
