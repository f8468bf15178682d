// queue_throughput bound for byte items: one memcpy per item in one process, source and
// destination hot in cache (the item's size, reused). A queue that copies each item in and out,
// with a core on each side, cannot beat what one core copies. Each copy is checked like a
// queue's item (stamps, order, checksum). The integer cases are n/a.
#include <vector>

#include "queue_driver.hpp"

int main(int argc, char** argv) {
  const bench::Options opt = bench::parse_options(argc, argv, "queue_throughput", "memcpy");
  bench::pin(opt.placement, bench::Role::kProducer);
  bench::Status status;
  for (const bench::ThroughputCase& c : bench::kThroughputCases) {
    if (!bench::is_bytes_case(c)) {
      bench::emit_throughput_na(opt, c, "memcpy bound: byte items only");
      continue;
    }
    const std::uint64_t n = bench::scaled(opt.mode, (4ull << 30) / c.item_bytes);
    std::vector<std::byte> src(c.item_bytes), dst(c.item_bytes);
    for (std::size_t i = 0; i < src.size(); ++i) src[i] = static_cast<std::byte>(i * 31 + 7);
    bench::Checksum sum;
    bool in_order = true;
    const std::int64_t t0 = bench::now_ns();
    for (std::uint64_t i = 0; i < n; ++i) {
      bench::stamp_item(src, i);
      std::memcpy(dst.data(), src.data(), dst.size());
      asm volatile("" : : "r"(dst.data()) : "memory");  // the copy must happen
      std::uint64_t seq = 0;
      in_order = bench::read_stamp(dst, &seq) && seq == i && in_order;
      sum.add(seq);
    }
    const double secs = static_cast<double>(bench::now_ns() - t0) * 1e-9;
    const bool ok = in_order && sum == bench::Checksum::of_range(0, n);
    const double items = static_cast<double>(n) / secs;
    bench::emit(opt, {.case_name = c.name,
                      .metric = "items_per_s",
                      .value = items,
                      .unit = "items/s",
                      .ok = ok,
                      .check = sum.str()});
    bench::emit(opt, {.case_name = c.name,
                      .metric = "bytes_per_s",
                      .value = items * static_cast<double>(c.item_bytes),
                      .unit = "B/s",
                      .ok = ok,
                      .check = sum.str()});
    status.record(ok);
  }
  return status.exit_code();
}
