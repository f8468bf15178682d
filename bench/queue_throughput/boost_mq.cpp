// queue_throughput over boost::interprocess::message_queue (see common/boost_mq_channel.hpp), one
// queue per case. Capacity: 1024 messages of 8 bytes, or about 4 MiB (at least 4 messages) of
// byte items. It has no put_many/get_many: int64_1to1_batched is n/a.
#include "boost_mq_channel.hpp"
#include "queue_driver.hpp"

namespace {

constexpr bench::QuickItems kQuickItems{1'000, 20'000, 400'000, 1'000'000, 1'000'000};

}  // namespace

int main(int argc, char** argv) {
  const bench::Options opt = bench::parse_options(argc, argv, "queue_throughput", "boost_mq");
  bench::Status status;
  for (const bench::ThroughputCase& c : bench::kThroughputCases) {
    const std::size_t depth =
        c.item_bytes == 8 ? 1024 : std::max<std::size_t>(4, (4u << 20) / c.item_bytes);
    bench::BoostMqChannel ch(c.item_bytes, depth);
    status.record(bench::run_throughput(
        opt, c, bench::scaled(opt.mode, bench::quick_items(c, kQuickItems)), ch));
  }
  return status.exit_code();
}
