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
// (without them int64_1to1_batched is reported n/a).
//
// Team forks the members (producers, consumers), pins each by role, releases them together and
// collects what each measured from a shared block. Timing: a producer stamps its start just
// before its first put, a consumer its end just after its last get and check; throughput is
// items / (latest end - earliest start).
#pragma once

#include <atomic>
#include <concepts>
#include <cstdint>
#include <new>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "bench_common.hpp"

namespace bench {

// ---- the fixed cases of queue_throughput
// ---------------------------------------------------------

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

// The optional parts of a Channel (see the top of this file).
template <class C>
concept HasBatch = requires(C& ch, std::span<const std::uint64_t> s, std::span<std::uint64_t> d) {
  ch.put_many(s);
  { ch.get_many(d) } -> std::convertible_to<std::size_t>;
};
template <class C>
concept HasBytes = requires(C& ch, std::span<const std::byte> s) {
  ch.put_bytes(s);
};

// Prints n/a for every metric of the case (items_per_s, and bytes_per_s for byte items).
inline void emit_throughput_na(const Options& o, const ThroughputCase& c, const std::string& why) {
  emit_na(o, c.name, "items_per_s", "items/s", true, why);
  if (is_bytes_case(c)) emit_na(o, c.name, "bytes_per_s", "B/s", true, why);
}

// ---- Team: forked members that start together
// ----------------------------------------------------

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
  // or what went wrong (exit statuses and members' own error texts).
  std::string run() {
    Backoff b;
    while (shared_->ready.load(std::memory_order_acquire) < static_cast<int>(pids_.size())) {
      b.wait();
    }
    shared_->go.store(1, std::memory_order_release);
    std::string failed = wait_children(pids_);
    for (std::size_t i = 0; i < pids_.size(); ++i) {
      if (shared_->slot[i].error[0]) failed += std::string(shared_->slot[i].error) + "; ";
    }
    pids_.clear();
    while (!failed.empty() && (failed.back() == ' ' || failed.back() == ';')) failed.pop_back();
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

// ---- queue_throughput
// ----------------------------------------------------------------------------

template <class Channel>
void produce(Channel& ch, const ThroughputCase& c, std::uint64_t lo, std::uint64_t hi,
             MemberSlot& slot) {
  std::vector<std::byte> item(c.item_bytes);
  for (std::size_t i = 0; i < item.size(); ++i) item[i] = static_cast<std::byte>(i * 31 + 7);
  slot.start_ns = now_ns();
  if (c.batched) {
    if constexpr (HasBatch<Channel>) {
      std::uint64_t batch[kBatch];
      for (std::uint64_t i = lo; i < hi;) {
        const std::size_t k = static_cast<std::size_t>(std::min<std::uint64_t>(kBatch, hi - i));
        for (std::size_t j = 0; j < k; ++j) batch[j] = i + j;
        ch.put_many(std::span<const std::uint64_t>(batch, k));
        i += k;
      }
    }
  } else if (is_bytes_case(c)) {
    if constexpr (HasBytes<Channel>) {
      for (std::uint64_t i = lo; i < hi; ++i) {
        stamp_item(item, i);
        ch.put_bytes(item);
      }
    }
  } else {
    for (std::uint64_t i = lo; i < hi; ++i) ch.put(i);
  }
  // Many-to-many (producers == consumers): each producer ends with one kStop and each consumer
  // stops at the first it meets; the last kStop follows every item, so nothing is left behind.
  if (c.consumers > 1) ch.put(kStop);
  slot.end_ns = now_ns();
}

// One consumer. With a single producer and consumer it also checks FIFO order; with several it
// reads until it meets a kStop.
template <class Channel>
void consume(Channel& ch, const ThroughputCase& c, std::uint64_t n, MemberSlot& slot) {
  Checksum sum;
  std::string error;
  const bool ordered = c.producers == 1 && c.consumers == 1;
  slot.start_ns = now_ns();
  if (!ordered) {
    for (;;) {
      const std::uint64_t v = ch.get();
      if (v == kStop) break;
      sum.add(v);
    }
  } else if (c.batched) {
    if constexpr (HasBatch<Channel>) {
      std::uint64_t batch[kBatch];
      while (sum.count < n) {
        const std::size_t k = ch.get_many(std::span<std::uint64_t>(batch, kBatch));
        for (std::size_t j = 0; j < k; ++j) {
          if (batch[j] != sum.count && error.empty()) {
            error = "item " + std::to_string(sum.count) + " arrived as " + std::to_string(batch[j]);
          }
          sum.add(batch[j]);
        }
      }
    }
  } else if (is_bytes_case(c)) {
    if constexpr (HasBytes<Channel>) {
      while (sum.count < n) {
        ch.get_bytes([&](std::span<const std::byte> item) {
          std::uint64_t seq = 0;
          if (item.size() != c.item_bytes || !read_stamp(item, &seq) || seq != sum.count) {
            if (error.empty()) {
              error = "item " + std::to_string(sum.count) + ": size " +
                      std::to_string(item.size()) + ", stamps bad or out of order";
            }
          }
          sum.add(seq);
        });
      }
    }
  } else {
    while (sum.count < n) {
      const std::uint64_t v = ch.get();
      if (v != sum.count && error.empty()) {
        error = "item " + std::to_string(sum.count) + " arrived as " + std::to_string(v);
      }
      sum.add(v);
    }
  }
  slot.end_ns = now_ns();
  slot.set_checksum(sum);
  if (!error.empty()) slot.fail(error);
}

// Runs one case with n items over ch (items 0..n-1, split evenly between the producers), checks
// that the consumers together received each exactly once, and prints items_per_s (and bytes_per_s
// for byte items). Returns whether the check passed.
template <class Channel>
bool run_throughput(const Options& o, const ThroughputCase& c, std::uint64_t n, Channel& ch) {
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

// ---- queue_pingpong
// ------------------------------------------------------------------------------

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
    Checksum sum;
    std::string error;
    for (std::uint64_t i = 0; i < total; ++i) {
      const std::int64_t t0 = now_ns();
      to_child.put(i);
      const std::uint64_t r = to_parent.get();
      const std::int64_t t1 = now_ns();
      if (i >= warmup) rtt[i - warmup] = static_cast<double>(t1 - t0) * 1e-3;
      if (r != i + 1 && error.empty()) {
        error = "reply " + std::to_string(r) + " to " + std::to_string(i);
      }
      sum.add(r);
    }
    to_child.put(kStop);
    s.set_checksum(sum);
    if (!error.empty()) s.fail(error);
  });
  team.spawn(Role::kConsumer, [&](MemberSlot&) {
    for (;;) {
      const std::uint64_t v = to_child.get();
      if (v == kStop) break;
      to_parent.put(v + 1);
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
