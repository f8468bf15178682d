// queue_throughput with multiproc::Queue, the ratio baseline. Every case gets a fresh queue made in
// the parent before the driver forks its producers and consumers (as a queue made before a Pool
// or Process is inherited by forked children), the same drivers, items and checks as every other
// competitor (queue_driver.hpp).
//
//   int64 cases:  mp::Queue<std::int64_t>, unbounded (mp::Queue<T> q;, as most programs write it);
//                 put()/get() one at a time, put_many()/get_many(span of 64) for
//                 int64_1to1_batched.
//   byte cases:   mp::Queue<Bytes<N>> with `struct Bytes<N> { std::array<char, N> b; }`, a
//                 plain-bytes struct that the queue memcpys straight into its ring
//                 (std::vector<char> or std::string items would be serialized first: one more copy
//                 and an allocation per item). Bounded with the depth every competitor's byte queue
//                 has (about 4 MiB of items, at least 4, as boost_mq): an unbounded queue lets a
//                 fast producer chain ever larger fresh rings, whose first-touch page faults then
//                 dominate. Depth matters at 1 MiB: a 32 MiB backlog no longer stays in cache
//                 (1 MiB items: 7.9 GB/s at 32 MiB deep, 10.4 at 4 MiB, this machine).
//
// The producer side puts the driver's stamped buffer as a Bytes<N> in place (no extra copy: one
// memcpy into the ring, as a user's `q.put(item)` does); the consumer side gets a Bytes<N> by
// value (one memcpy out of the ring into a local) and checks its stamps.
#include <multiproc/multiproc.hpp>

#include <algorithm>
#include <array>
#include <cstddef>
#include <cstdint>
#include <span>
#include <stdexcept>
#include <string>
#include <vector>

#include "queue_driver.hpp"

namespace mp = multiproc;

namespace {

template <std::size_t N>
struct Bytes {
  std::array<char, N> b;
};

// Queue<std::int64_t>: the driver's items are uint64_t values 0..n-1 (and kStop = ~0, which maps
// to -1 and back).
struct IntChannel {
  mp::Queue<std::int64_t> q;

  void put(std::uint64_t v) { q.put(static_cast<std::int64_t>(v)); }
  std::uint64_t get() { return static_cast<std::uint64_t>(q.get()); }
  void put_many(std::span<const std::uint64_t> s) {
    // int64_t and uint64_t may alias each other: the same 8 bytes, put straight from the caller.
    q.put_many(
        std::span<const std::int64_t>(reinterpret_cast<const std::int64_t*>(s.data()), s.size()));
  }
  std::size_t get_many(std::span<std::uint64_t> out) {
    // Straight into the driver's buffer (the same aliasing as put_many's): no vector per batch.
    return q.get_many(
        std::span<std::int64_t>(reinterpret_cast<std::int64_t*>(out.data()), out.size()));
  }
};

template <std::size_t N>
struct BytesChannel {
  mp::Queue<Bytes<N>> q;

  explicit BytesChannel(std::size_t maxsize) : q(maxsize) {}
  void put(std::uint64_t) { throw std::logic_error("byte channel: no integers"); }
  std::uint64_t get() { throw std::logic_error("byte channel: no integers"); }
  void put_bytes(std::span<const std::byte> item) {
    if (item.size() != N) throw std::invalid_argument("item size != N");
    // The driver's buffer is N bytes of vector storage: Bytes<N> has alignment 1 and is an
    // implicit-lifetime type, and the queue only memcpys it.
    q.put(*reinterpret_cast<const Bytes<N>*>(item.data()));
  }
  template <class F>
  void get_bytes(F&& visit) {
    // Returned by value straight into this local (one memcpy out of the ring; 1 MiB of stack at
    // most, the main thread has 8 MiB).
    const Bytes<N> item = q.get();
    visit(std::span<const std::byte>(reinterpret_cast<const std::byte*>(item.b.data()), N));
  }
};

constexpr bench::QuickItems kQuickItems{3'000, 50'000, 2'000'000, 50'000'000, 5'000'000};

template <std::size_t N>
bool run_bytes(const bench::Options& opt, const bench::ThroughputCase& c, std::uint64_t n) {
  const std::size_t maxsize = std::max<std::size_t>(4, (4u << 20) / N);
  BytesChannel<N> ch(maxsize);
  return bench::run_throughput(
      opt, c, n, ch,
      "mp::Queue<Bytes<" + std::to_string(N) + ">>(maxsize " + std::to_string(maxsize) +
          "), struct Bytes<N> { std::array<char, N> b; }: plain bytes, memcpy'd into and out of "
          "the ring; put()/get() one at a time");
}

}  // namespace

int main(int argc, char** argv) {
  mp::init(argc, argv);
  const bench::Options opt = bench::parse_options(argc, argv, "queue_throughput", "multiproc");
  bench::Status status;
  for (const bench::ThroughputCase& c : bench::kThroughputCases) {
    const std::uint64_t n = bench::scaled(opt.mode, bench::quick_items(c, kQuickItems));
    if (c.item_bytes == 8) {
      IntChannel ch;
      status.record(bench::run_throughput(
          opt, c, n, ch,
          c.batched
              ? "mp::Queue<std::int64_t> (unbounded); put_many(span of 64) / get_many(span of 64)"
              : "mp::Queue<std::int64_t> (unbounded); put()/get() one at a time"));
      continue;
    }
    const auto ok = bench::with_item_size(
        c.item_bytes, [&](auto size) { return run_bytes<decltype(size)::value>(opt, c, n); });
    if (ok)
      status.record(*ok);
    else
      bench::emit_throughput_na(opt, c, "no item type for this size");
  }
  return status.exit_code();
}
