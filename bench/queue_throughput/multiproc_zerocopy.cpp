// queue_throughput with multiproc::Queue's zero-copy path, beside multiproc.cpp's copying one: the
// same queue type (mp::Queue<Bytes<N>>, bounded to about 4 MiB of items), the same drivers, items
// and checks; only the calls differ.
//
//   producer: q.put_with(N, writer), the writer copying the driver's stamped buffer straight into
//             the ring (the one copy an item must cost: it has to be made somewhere);
//   consumer: q.get_view(), the driver's checks reading the item in place, no copy at all; the
//             view's end consumes it.
// So an item costs one copy here against two with put()/get(). The integer cases are n/a: an
// 8-byte item is one move either way.
#include <multiproc/multiproc.hpp>

#include <algorithm>
#include <array>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <span>
#include <stdexcept>
#include <string>

#include "queue_driver.hpp"

namespace mp = multiproc;

namespace {

template <std::size_t N>
struct Bytes {
  std::array<char, N> b;
};

template <std::size_t N>
struct ZeroCopyChannel {
  mp::Queue<Bytes<N>> q;

  explicit ZeroCopyChannel(std::size_t maxsize) : q(maxsize) {}
  void put(std::uint64_t) { throw std::logic_error("byte channel: no integers"); }
  std::uint64_t get() { throw std::logic_error("byte channel: no integers"); }
  void put_bytes(std::span<const std::byte> item) {
    if (item.size() != N) throw std::invalid_argument("item size != N");
    q.put_with(N, [&](std::span<std::byte> dst) { std::memcpy(dst.data(), item.data(), N); });
  }
  template <class F>
  void get_bytes(F&& visit) {
    auto view = q.get_view();
    visit(view.bytes());
  }
};

constexpr bench::QuickItems kQuickItems{3'000, 50'000, 2'000'000, 2'000'000, 2'000'000};

template <std::size_t N>
bool run_bytes(const bench::Options& opt, const bench::ThroughputCase& c, std::uint64_t n) {
  const std::size_t maxsize = std::max<std::size_t>(4, (4u << 20) / N);
  ZeroCopyChannel<N> ch(maxsize);
  return bench::run_throughput(opt, c, n, ch);
}

}  // namespace

int main(int argc, char** argv) {
  mp::init(argc, argv);
  const bench::Options opt =
      bench::parse_options(argc, argv, "queue_throughput", "multiproc_zerocopy");
  bench::Status status;
  for (const bench::ThroughputCase& c : bench::kThroughputCases) {
    if (c.producers != 1 || c.consumers != 1 || !bench::is_bytes_case(c)) {
      bench::emit_throughput_na(opt, c, "zero copy is for byte items (an integer is one move)");
      continue;
    }
    const std::uint64_t n = bench::scaled(opt.mode, bench::quick_items(c, kQuickItems));
    const auto ok = bench::with_item_size(
        c.item_bytes, [&](auto size) { return run_bytes<decltype(size)::value>(opt, c, n); });
    if (ok)
      status.record(*ok);
    else
      bench::emit_throughput_na(opt, c, "no item type for this size");
  }
  return status.exit_code();
}
