// queue_pingpong bound: two raw SPSC rings in shared memory (one each way, see rings.hpp). Both
// sides spin, then yield: about the cost of moving two cache lines between CPUs when split, and of
// two sched_yield() hand-offs when both share one CPU.
#include "queue_driver.hpp"
#include "rings.hpp"

int main(int argc, char** argv) {
  const bench::Options opt = bench::parse_options(argc, argv, "queue_pingpong", "spsc_ring");
  bench::SpscRingChannel to_child(8, 64), to_parent(8, 64);
  const bool ok = bench::run_pingpong(opt, "int64", bench::scaled(opt.mode, 5'000),
                                      bench::scaled(opt.mode, 50'000), to_child, to_parent);
  return ok ? 0 : 1;
}
