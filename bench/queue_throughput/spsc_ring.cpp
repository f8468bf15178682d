// queue_throughput bound: a raw single-producer single-consumer ring in shared memory (see
// bench/common/rings.hpp). 8-byte items one at a time (index published per item) and in batches
// (index published every 64); byte items are memcpy'd in and out of fixed-size slots. The ring
// holds 64 Ki integers, or 4 MiB of byte items (at least 4 slots): the depth of the byte queues
// it bounds (multiproc's and boost_mq's), since a deeper backlog leaves the caches sooner.
// One producer and one consumer only: int64_2to2 is n/a (see mpmc_ring).
#include "queue_driver.hpp"
#include "rings.hpp"

namespace {

constexpr bench::QuickItems kQuickItems{3'000, 50'000, 2'000'000, 50'000'000, 50'000'000};

}  // namespace

int main(int argc, char** argv) {
  const bench::Options opt = bench::parse_options(argc, argv, "queue_throughput", "spsc_ring");
  bench::Status status;
  for (const bench::ThroughputCase& c : bench::kThroughputCases) {
    if (c.producers != 1 || c.consumers != 1) {
      bench::emit_throughput_na(opt, c, "single producer, single consumer only");
      continue;
    }
    const std::size_t slots =
        c.item_bytes == 8 ? 65536 : std::max<std::size_t>(4, (4u << 20) / c.item_bytes);
    bench::SpscRingChannel ch(c.item_bytes, slots);
    status.record(bench::run_throughput(
        opt, c, bench::scaled(opt.mode, bench::quick_items(c, kQuickItems)), ch));
  }
  return status.exit_code();
}
