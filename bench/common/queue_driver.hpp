// queue_driver.hpp: the process drivers of queue_throughput and queue_pingpong, written once for
// every channel-style competitor (Boost message_queue, pipe, socketpair, the raw rings) so that
// they all do exactly the same work: the same items, stamps, checks and clocks.
//
// A Channel is built in the parent before fork() and used by the forked children (fork copies
// the object; whatever it maps MAP_SHARED or holds as file descriptors is shared). It provides
//   void put(std::uint64_t v);                        blocking; one 8-byte item
//   std::uint64_t get();                               blocking
//   void put_bytes(std::span<const std::byte> item);   blocking; one item of item.size() bytes
//   template <class F> void get_bytes(F&& visit);      blocking; calls visit(span<const byte>) once
// where put_bytes/get_bytes are optional (without them the byte cases are reported n/a), and, for
// int64_1to1_batched, optionally
//   void put_many(std::span<const std::uint64_t> items);
//   std::size_t get_many(std::span<std::uint64_t> out);  blocks for >= 1 item; returns how many
// (without them int64_1to1_batched is reported n/a). A channel may instead hand out process-local
// ends, `producer()` and `consumer()`, offering these operations: a process calls it once and
// works on the object it got, whose state the compiler can then keep in registers (the raw rings
// do; at hundreds of millions of items per second reloading indices from memory shows).
//
// Team forks the members (producers, consumers), pins each by role, releases them together and
// collects what each measured from a shared block. Timing: a producer stamps its start just
// before its first put, a consumer its end just after its last get and check; throughput is
// items / (latest end - earliest start). With BENCH_CASE set, run_throughput runs only the case
// of that name (A/B runs of one figure).
#pragma once

#include <atomic>
#include <concepts>
#include <cstdint>
#include <new>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <type_traits>
#include <utility>
#include <vector>

#include "bench_common.hpp"

namespace bench {

// ---- the fixed cases of queue_throughput --------------------------------------------------------

struct ThroughputCase {
  std::string_view name;
  std::size_t item_bytes;  // 8: the item is a std::uint64_t; otherwise a stamped byte item
  int producers;
  int consumers;
  bool batched;  // put_many/get_many in batches of kBatch
};

inline constexpr std::size_t kBatch = 64;
inline constexpr ThroughputCase kThroughputCases[] = {
    {"int64_1to1", 8, 1, 1, false},         {"int64_1to1_batched", 8, 1, 1, true},
    {"bytes1k_1to1", 1024, 1, 1, false},    {"bytes64k_1to1", 65536, 1, 1, false},
    {"bytes1m_1to1", 1 << 20, 1, 1, false}, {"int64_2to2", 8, 2, 2, false},
};
// Ends a producer's stream in the many-to-many case; never a real item (items are 0..n-1).
inline constexpr std::uint64_t kStop = ~std::uint64_t{0};

inline bool is_bytes_case(const ThroughputCase& c) {
  return c.item_bytes != 8;
}

// Items a competitor's case runs in quick mode, by item size (each competitor at its own pace,
// so that every case takes about as long).
struct QuickItems {
  std::uint64_t mib, kib64, kib1, int64_batched, int64;
};
inline std::uint64_t quick_items(const ThroughputCase& c, const QuickItems& q) {
  if (c.item_bytes >= (1 << 20)) return q.mib;
  if (c.item_bytes >= 65536) return q.kib64;
  if (c.item_bytes >= 1024) return q.kib1;
  return c.batched ? q.int64_batched : q.int64;
}

// For competitors whose byte item has its size in its type: calls
// f(std::integral_constant<std::size_t, N>{}) with N the case's item size and returns what f
// returns, or returns std::nullopt for a size not among the byte cases'.
template <class F>
auto with_item_size(std::size_t bytes, F&& f)
    -> std::optional<decltype(f(std::integral_constant<std::size_t, 1024>{}))> {
  switch (bytes) {
    case 1024:
      return f(std::integral_constant<std::size_t, 1024>{});
    case 65536:
      return f(std::integral_constant<std::size_t, 65536>{});
    case std::size_t{1} << 20:
      return f(std::integral_constant<std::size_t, (std::size_t{1} << 20)>{});
    default:
      return std::nullopt;
  }
}

// The end a producer or consumer process works on: the channel's producer()/consumer() when it
// has them, else the channel itself.
template <class C>
decltype(auto) producer_end(C& ch) {
  if constexpr (requires { ch.producer(); }) {
    return ch.producer();
  } else {
    return (ch);
  }
}
template <class C>
decltype(auto) consumer_end(C& ch) {
  if constexpr (requires { ch.consumer(); }) {
    return ch.consumer();
  } else {
    return (ch);
  }
}
template <class C>
using ProducerEnd = std::remove_reference_t<decltype(producer_end(std::declval<C&>()))>;
template <class C>
using ConsumerEnd = std::remove_reference_t<decltype(consumer_end(std::declval<C&>()))>;

// The optional parts of a Channel (see the top of this file).
template <class C>
concept HasBatch = requires(ProducerEnd<C>& p, ConsumerEnd<C>& q, std::span<const std::uint64_t> s,
                            std::span<std::uint64_t> d) {
  p.put_many(s);
  { q.get_many(d) } -> std::convertible_to<std::size_t>;
};
template <class C>
concept HasBytes = requires(ProducerEnd<C>& p, std::span<const std::byte> s) {
  p.put_bytes(s);
};

// Prints n/a for every metric of the case (items_per_s, and bytes_per_s for byte items).
inline void emit_throughput_na(const Options& o, const ThroughputCase& c, const std::string& why) {
  emit_na(o, c.name, "items_per_s", "items/s", true, why);
  if (is_bytes_case(c)) emit_na(o, c.name, "bytes_per_s", "B/s", true, why);
}

// ---- Team: forked members that start together ---------------------------------------------------

struct alignas(64) MemberSlot {
  std::int64_t start_ns;
  std::int64_t end_ns;
  std::uint64_t count, sum, sumsq;  // a Checksum, spelled out (shared memory holds plain data)
  char error[200];

  void set_checksum(const Checksum& c) {
    count = c.count;
    sum = c.sum;
    sumsq = c.sumsq;
  }
  Checksum checksum() const { return Checksum{count, sum, sumsq}; }
  void fail(const std::string& what) { std::snprintf(error, sizeof error, "%s", what.c_str()); }
};

class Team {
 public:
  static constexpr int kMaxMembers = 8;
  static_assert(std::atomic<int>::is_always_lock_free, "the start flag lives in shared memory");

  explicit Team(const Options& o) : opt_(o), region_(sizeof(Shared)) {
    shared_ = new (region_.data()) Shared{};
  }
  Team(const Team&) = delete;
  Team& operator=(const Team&) = delete;
  ~Team() {
    for (pid_t p : pids_) kill(p, SIGKILL);  // only left when run() was never reached
    if (!pids_.empty()) wait_children(pids_);
  }

  // Forks member number size(): it pins itself for `role`, waits for run(), then calls
  // body(MemberSlot&); a throw or a non-empty slot.error makes it exit non-zero.
  template <class F>
  void spawn(Role role, F&& body) {
    const int index = static_cast<int>(pids_.size());
    if (index >= kMaxMembers) throw std::logic_error("Team: too many members");
    Shared* s = shared_;
    const Placement placement = opt_.placement;
    pids_.push_back(fork_child([s, index, role, placement, &body]() -> int {
      pin(placement, role);
      MemberSlot& slot = s->slot[index];
      s->ready.fetch_add(1, std::memory_order_acq_rel);
      Backoff b;
      while (s->go.load(std::memory_order_acquire) == 0) b.wait();
      try {
        body(slot);
      } catch (const std::exception& e) {
        slot.fail(e.what());
      }
      return slot.error[0] ? 1 : 0;
    }));
  }

  // Waits until every member is pinned and ready, releases them and waits for them all. Returns ""
  // or what went wrong (exit statuses and members' own error texts). A member that dies before it
  // is ready (it could not pin itself, say) fails the run at once.
  std::string run() {
    std::string failed;
    while (shared_->ready.load(std::memory_order_acquire) < static_cast<int>(pids_.size())) {
      int st = 0;
      const pid_t dead = waitpid(-1, &st, WNOHANG);
      auto it = std::find(pids_.begin(), pids_.end(), dead);
      if (dead > 0 && it != pids_.end()) {
        pids_.erase(it);
        failed = describe_exit(dead, st);
        if (failed.empty()) failed = "a member exited before it started";
        for (pid_t p : pids_) kill(p, SIGKILL);
        break;
      }
      usleep(50);
    }
    if (failed.empty()) {
      shared_->go.store(1, std::memory_order_release);
      failed = wait_children(pids_);
    } else {
      wait_children(pids_);
    }
    for (int i = 0; i < kMaxMembers; ++i) {
      if (shared_->slot[i].error[0]) {
        failed += (failed.empty() ? "" : "; ") + std::string(shared_->slot[i].error);
      }
    }
    pids_.clear();
    return failed;
  }

  const MemberSlot& slot(int i) const { return shared_->slot[i]; }

 private:
  struct Shared {
    std::atomic<int> ready{0};
    std::atomic<int> go{0};
    MemberSlot slot[kMaxMembers];
  };
  Options opt_;
  SharedRegion region_;
  Shared* shared_;
  std::vector<pid_t> pids_;
};

// ---- queue_throughput ---------------------------------------------------------------------------

// One producer: items lo..hi-1, then (many-to-many) one kStop.
template <class Channel>
void produce(Channel& ch, const ThroughputCase& c, std::uint64_t lo, std::uint64_t hi,
             MemberSlot& slot) {
  decltype(auto) p = producer_end(ch);
  std::vector<std::byte> item(c.item_bytes);
  for (std::size_t i = 0; i < item.size(); ++i) item[i] = static_cast<std::byte>(i * 31 + 7);
  slot.start_ns = now_ns();
  if (c.batched) {
    if constexpr (HasBatch<Channel>) {
      std::uint64_t batch[kBatch];
      for (std::uint64_t i = lo; i < hi;) {
        const auto k = static_cast<std::size_t>(std::min<std::uint64_t>(kBatch, hi - i));
        for (std::size_t j = 0; j < k; ++j) batch[j] = i + j;
        p.put_many(std::span<const std::uint64_t>(batch, k));
        i += k;
      }
    }
  } else if (is_bytes_case(c)) {
    if constexpr (HasBytes<Channel>) {
      for (std::uint64_t i = lo; i < hi; ++i) {
        stamp_item(item, i);
        p.put_bytes(item);
      }
    }
  } else {
    for (std::uint64_t i = lo; i < hi; ++i) p.put(i);
  }
  // Many-to-many (producers == consumers): each producer ends with one kStop and each consumer
  // stops at the first it meets; the last kStop follows every item, so nothing is left behind.
  if (c.consumers > 1) p.put(kStop);
  slot.end_ns = now_ns();
}

// One consumer. With a single producer and consumer it checks that item i arrives i-th (n items);
// with several it reads until it meets a kStop. The running sums are plain locals (a Checksum
// whose address escapes would live in memory, costing a store per item at ring speeds).
template <class Channel>
void consume(Channel& ch, const ThroughputCase& c, std::uint64_t n, MemberSlot& slot) {
  decltype(auto) q = consumer_end(ch);
  constexpr std::uint64_t kNone = ~std::uint64_t{0};
  std::uint64_t count = 0, sum = 0, sumsq = 0, bad_at = kNone, bad_value = 0;
  auto take = [&](std::uint64_t v, bool good) {
    if (!good && bad_at == kNone) {
      bad_at = count;
      bad_value = v;
    }
    ++count;
    sum += v;
    sumsq += v * v;
  };
  slot.start_ns = now_ns();
  if (c.producers != 1 || c.consumers != 1) {
    for (;;) {
      const std::uint64_t v = q.get();
      if (v == kStop) break;
      take(v, true);
    }
  } else if (c.batched) {
    if constexpr (HasBatch<Channel>) {
      std::uint64_t batch[kBatch];
      while (count < n) {
        const std::size_t k = q.get_many(std::span<std::uint64_t>(batch, kBatch));
        for (std::size_t j = 0; j < k; ++j) take(batch[j], batch[j] == count);
      }
    }
  } else if (is_bytes_case(c)) {
    if constexpr (HasBytes<Channel>) {
      while (count < n) {
        q.get_bytes([&](std::span<const std::byte> item) {
          std::uint64_t seq = 0;
          const bool good = item.size() == c.item_bytes && read_stamp(item, &seq);
          take(seq, good && seq == count);
        });
      }
    }
  } else {
    while (count < n) {
      const std::uint64_t v = q.get();
      take(v, v == count);
    }
  }
  slot.end_ns = now_ns();
  slot.set_checksum(Checksum{count, sum, sumsq});
  if (bad_at != kNone) {
    slot.fail("item " + std::to_string(bad_at) + " arrived as " + std::to_string(bad_value) +
              (is_bytes_case(c) ? " (or its size or stamps were wrong)" : ""));
  }
}

// Runs one case with n items over ch (items 0..n-1, split evenly between the producers), checks
// that the consumers together received each exactly once, and prints items_per_s (and bytes_per_s
// for byte items), with `what` (which queue and item type were measured, if the competitor says)
// as the lines' note. Returns whether the check passed.
template <class Channel>
bool run_throughput(const Options& o, const ThroughputCase& c, std::uint64_t n, Channel& ch,
                    std::string_view what = {}) {
  if (const char* only = std::getenv("BENCH_CASE"); only && c.name != std::string_view(only))
    return true;
  if (c.batched && !HasBatch<Channel>) {
    emit_throughput_na(o, c, "no put_many/get_many");
    return true;
  }
  if (is_bytes_case(c) && !HasBytes<Channel>) {
    emit_throughput_na(o, c, "8-byte items only");
    return true;
  }
  Team team(o);
  for (int p = 0; p < c.producers; ++p) {
    const std::uint64_t lo = n * p / c.producers, hi = n * (p + 1) / c.producers;
    team.spawn(Role::kProducer, [&, lo, hi](MemberSlot& s) { produce(ch, c, lo, hi, s); });
  }
  for (int k = 0; k < c.consumers; ++k) {
    team.spawn(Role::kConsumer, [&](MemberSlot& s) { consume(ch, c, n, s); });
  }
  const std::string failed = team.run();
  std::int64_t start = INT64_MAX, end = 0;
  Checksum got;
  for (int i = 0; i < c.producers; ++i) start = std::min(start, team.slot(i).start_ns);
  for (int i = c.producers; i < c.producers + c.consumers; ++i) {
    end = std::max(end, team.slot(i).end_ns);
    got.merge(team.slot(i).checksum());
  }
  const Checksum want = Checksum::of_range(0, n);
  const bool ok = failed.empty() && got == want;
  std::string note = failed;
  if (failed.empty() && !(got == want)) note = "expected " + want.str();
  if (!what.empty()) note = note.empty() ? std::string(what) : note + "; " + std::string(what);
  const double secs = static_cast<double>(end - start) * 1e-9;
  const double items = ok && secs > 0 ? static_cast<double>(n) / secs : std::nan("");
  emit(o, {.case_name = c.name,
           .metric = "items_per_s",
           .value = items,
           .unit = "items/s",
           .ok = ok,
           .check = got.str(),
           .note = note});
  if (is_bytes_case(c)) {
    emit(o, {.case_name = c.name,
             .metric = "bytes_per_s",
             .value = items * static_cast<double>(c.item_bytes),
             .unit = "B/s",
             .ok = ok,
             .check = got.str(),
             .note = note});
  }
  return ok;
}

// ---- queue_pingpong -----------------------------------------------------------------------------

// Round trips between two processes over two channels: the ping side (producer role) puts i on
// to_child and waits for i + 1 on to_parent; the pong side answers. warmup round trips first,
// then `samples` timed ones. Prints p50_us and p99_us; checks every reply.
template <class Channel>
bool run_pingpong(const Options& o, std::string_view case_name, std::uint64_t warmup,
                  std::uint64_t samples, Channel& to_child, Channel& to_parent) {
  SharedRegion times(sizeof(double) * samples);
  auto* rtt = static_cast<double*>(times.data());
  const std::uint64_t total = warmup + samples;
  Team team(o);
  team.spawn(Role::kProducer, [&](MemberSlot& s) {
    decltype(auto) out = producer_end(to_child);
    decltype(auto) in = consumer_end(to_parent);
    Checksum sum;
    std::string error;
    for (std::uint64_t i = 0; i < total; ++i) {
      const std::int64_t t0 = now_ns();
      out.put(i);
      const std::uint64_t r = in.get();
      const std::int64_t t1 = now_ns();
      if (i >= warmup) rtt[i - warmup] = static_cast<double>(t1 - t0) * 1e-3;
      if (r != i + 1 && error.empty()) {
        error = "reply " + std::to_string(r) + " to " + std::to_string(i);
      }
      sum.add(r);
    }
    out.put(kStop);
    s.set_checksum(sum);
    if (!error.empty()) s.fail(error);
  });
  team.spawn(Role::kConsumer, [&](MemberSlot&) {
    decltype(auto) in = consumer_end(to_child);
    decltype(auto) out = producer_end(to_parent);
    for (;;) {
      const std::uint64_t v = in.get();
      if (v == kStop) break;
      out.put(v + 1);
    }
  });
  const std::string failed = team.run();
  const Checksum got = team.slot(0).checksum(), want = Checksum::of_range(1, total + 1);
  const bool ok = failed.empty() && got == want;
  std::string note = failed;
  if (failed.empty() && !(got == want)) note = "expected " + want.str();
  std::vector<double> v(rtt, rtt + samples);
  for (auto [metric, p] : {std::pair{"p50_us", 50.0}, std::pair{"p99_us", 99.0}}) {
    emit(o, {.case_name = case_name,
             .metric = metric,
             .value = ok ? percentile(v, p) : std::nan(""),
             .unit = "us",
             .higher_is_better = false,
             .ok = ok,
             .check = got.str(),
             .note = note});
  }
  return ok;
}

}  // namespace bench
