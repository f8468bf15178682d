// queue_throughput bound for a general (multi-producer, multi-consumer) queue: a raw bounded ring
// of sequence-numbered slots in shared memory (see bench/common/rings.hpp), 4096 slots of 8-byte
// items. Integers one at a time only: the byte and batched cases are n/a.
#include "queue_driver.hpp"
#include "rings.hpp"

int main(int argc, char** argv) {
  const bench::Options opt = bench::parse_options(argc, argv, "queue_throughput", "mpmc_ring");
  bench::Status status;
  for (const bench::ThroughputCase& c : bench::kThroughputCases) {
    bench::MpmcRingChannel ch(4096);
    const std::uint64_t n = bench::scaled(opt.mode, c.consumers > 1 ? 5'000'000 : 10'000'000);
    status.record(bench::run_throughput(opt, c, n, ch));
  }
  return status.exit_code();
}
