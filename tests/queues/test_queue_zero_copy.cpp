// Queue<T>::put_with and get_view: big items written and read in place in the queue's shared
// memory. The same semantics as put/get (FIFO, timeouts, close, shutdown, many processes, items
// past 2 MiB out of line), interoperating with them; a writer that throws queues nothing; a
// producer SIGKILLed inside its writer loses that item only; a consumer SIGKILLed while it holds
// a view consumed nothing (the next consumer gets the item).
#include <dirent.h>
#include <algorithm>
#include <array>
#include <atomic>
#include <cstring>
#include <random>
#include <stdexcept>
#include <string>
#include <thread>
#include <vector>

#include "start_methods.hpp"

using namespace std::chrono_literals;

namespace {

template <size_t N>
struct Bytes {
  std::array<char, N> b;
};

// Sizes that cover the ring's paths: small, packed (700), aligned (>= 4096), bigger than a quarter
// of the first ring (grows it), and out of line (> 2 MiB).
const std::vector<size_t> kSizes = {0, 1, 24, 700, 4096, 100000, (3u << 20) + 5};

char pattern(uint64_t seed, size_t i) {
  return static_cast<char>((seed * 131 + i * 7 + (i >> 8)) & 0xff);
}

void write_pattern(std::span<std::byte> dst, uint64_t seed) {
  for (size_t i = 0; i < dst.size(); ++i) dst[i] = static_cast<std::byte>(pattern(seed, i));
}

bool has_pattern(std::span<const std::byte> got, uint64_t seed, size_t size) {
  if (got.size() != size) return false;
  for (size_t i = 0; i < size; ++i)
    if (got[i] != static_cast<std::byte>(pattern(seed, i))) return false;
  return true;
}

std::string pattern_string(uint64_t seed, size_t size) {
  std::string s(size, '\0');
  for (size_t i = 0; i < size; ++i) s[i] = pattern(seed, i);
  return s;
}

size_t shm_files_with(const std::string& prefix) {
  size_t n = 0;
  if (DIR* d = opendir("/dev/shm")) {
    while (dirent* e = readdir(d))
      if (std::string(e->d_name).starts_with(prefix)) ++n;
    closedir(d);
  }
  return n;
}

// ---- children ------------------------------------------------------------------------------

void put_with_patterns(mp::Queue<std::string> q, int rounds) {
  for (int r = 0; r < rounds; ++r)
    for (size_t k = 0; k < kSizes.size(); ++k)
      q.put_with(kSizes[k], [&](std::span<std::byte> dst) { write_pattern(dst, r * 100 + k); });
}

// Gets with get_view and reports each item's check on `out` (1: intact, 0: not).
void view_patterns(mp::Queue<std::string> q, mp::Queue<int> out, int rounds) {
  for (int r = 0; r < rounds; ++r)
    for (size_t k = 0; k < kSizes.size(); ++k) {
      auto v = q.get_view(60s);
      out.put(has_pattern(v.bytes(), r * 100 + k, kSizes[k]) ? 1 : 0);
    }
}

// Puts `before` items, then starts one of `size` bytes, writes half of it, says so on `ready`
// and waits to be killed.
void die_inside_writer(mp::Queue<std::string> q, mp::Queue<int> ready, int before, size_t size) {
  for (int i = 0; i < before; ++i) q.put("before " + std::to_string(i));
  q.put_with(size, [&](std::span<std::byte> dst) {
    std::memset(dst.data(), 'x', dst.size() / 2);
    ready.put(1);
    for (;;) std::this_thread::sleep_for(1s);
  });
}

// Takes a view of the next item, says what it holds on `ready` and waits to be killed.
void die_holding_view(mp::Queue<std::string> q, mp::Queue<std::string> ready) {
  auto v = q.get_view(60s);
  ready.put(std::string(reinterpret_cast<const char*>(v.data()), std::min<size_t>(v.size(), 64)));
  for (;;) std::this_thread::sleep_for(1s);
}

// Holds a view until `release` says so; reports on `ready` when it holds it.
void hold_view_until_told(mp::Queue<std::string> q, mp::Queue<int> ready, mp::Queue<int> release) {
  auto v = q.get_view(60s);
  ready.put(static_cast<int>(v.size()));
  release.get(60s);
}

// Items of the random-kill test: a plain 700-byte struct (a filler record puts each on a cache
// line) stamped with its sequence number all through.
using Stamped = Bytes<700>;
constexpr uint64_t kRange = 1u << 20;  // sequence numbers per producer incarnation

void stamp(std::span<std::byte> dst, uint64_t seq) {
  for (size_t i = 0; i + 8 <= dst.size(); i += 8) {
    const uint64_t v = seq ^ (i * 0x9e3779b97f4a7c15ULL);
    std::memcpy(dst.data() + i, &v, 8);
  }
}

// The sequence number of an intact item, or ~0.
uint64_t unstamp(std::span<const std::byte> item) {
  if (item.size() < 8) return ~uint64_t{0};
  uint64_t seq;
  std::memcpy(&seq, item.data(), 8);
  for (size_t i = 0; i + 8 <= item.size(); i += 8) {
    uint64_t v;
    std::memcpy(&v, item.data() + i, 8);
    if (v != (seq ^ (i * 0x9e3779b97f4a7c15ULL))) return ~uint64_t{0};
  }
  return seq;
}

// Puts lo, lo+1, ... until killed, by put_with and put in turn.
void put_stamped_until_killed(mp::Queue<Stamped> q, mp::Queue<int> started, uint64_t lo) {
  started.put(1);
  for (uint64_t seq = lo; seq < lo + kRange; ++seq) {
    if (seq % 2) {
      q.put_with(sizeof(Stamped), [&](std::span<std::byte> dst) { stamp(dst, seq); });
    } else {
      Stamped s;
      stamp(std::as_writable_bytes(std::span(s.b)), seq);
      q.put(s);
    }
  }
}

// Gets by get_view and get in turn until killed; reports each item's sequence number on `seen`
// once it is consumed (~0 for a damaged one).
void get_stamped_until_killed(mp::Queue<Stamped> q, mp::Queue<int> started,
                              mp::Queue<uint64_t> seen) {
  started.put(2);
  for (uint64_t i = 0;; ++i) {
    uint64_t seq;
    if (i % 2) {
      seq = unstamp(q.get_view(60s).bytes());
    } else {
      const Stamped s = q.get(60s);
      seq = unstamp(std::as_bytes(std::span(s.b)));
    }
    seen.put(seq);
  }
}

}  // namespace

// ---- one process ------------------------------------------------------------------------

TEST(QueueZeroCopy, PutWithThenGetAndGetViewOfPut) {
  mp::Queue<std::string> q;
  for (size_t k = 0; k < kSizes.size(); ++k)
    q.put_with(kSizes[k], [&](std::span<std::byte> dst) {
      ASSERT_EQ(dst.size(), kSizes[k]);
      write_pattern(dst, k);
    });
  for (size_t k = 0; k < kSizes.size(); ++k) EXPECT_EQ(q.get(), pattern_string(k, kSizes[k]));
  for (size_t k = 0; k < kSizes.size(); ++k) q.put(pattern_string(k + 50, kSizes[k]));
  for (size_t k = 0; k < kSizes.size(); ++k) {
    auto v = q.get_view();
    EXPECT_TRUE(has_pattern(v.bytes(), k + 50, kSizes[k])) << kSizes[k];
  }
  EXPECT_TRUE(q.empty());
}

// put_with's writer gets a cache-aligned buffer from 512 bytes on (its consumer, reading in
// place, keeps up: no line shared with the next item); put() packs items under 4 KiB (one line
// fewer to move per 1 KiB item). Both are read back whole, in either layout and by either get.
TEST(QueueZeroCopy, WrittenItemsAreCacheAlignedCopiedOnesPacked) {
  mp::Queue<Bytes<1024>> q;
  std::vector<uintptr_t> written;
  for (int i = 0; i < 40; ++i) {
    if (i % 2 == 0) {
      q.put_with(1024, [&](std::span<std::byte> dst) {
        written.push_back(reinterpret_cast<uintptr_t>(dst.data()));
        write_pattern(dst, i);
      });
    } else {
      Bytes<1024> b;
      write_pattern(std::as_writable_bytes(std::span(b.b)), i);
      q.put(b);
    }
  }
  for (uintptr_t a : written) EXPECT_EQ(a % 64, 0u);
  size_t packed = 0;
  for (int i = 0; i < 40; ++i) {
    if (i % 4 < 2) {
      auto v = q.get_view();
      ASSERT_TRUE(v);
      EXPECT_TRUE(has_pattern(v.bytes(), i, 1024)) << i;
      EXPECT_EQ(reinterpret_cast<uintptr_t>(v.data()) % 8, 0u);
      if (i % 2 == 1 && reinterpret_cast<uintptr_t>(v.data()) % 64 != 0) ++packed;
    } else {
      const Bytes<1024> b = q.get();
      EXPECT_TRUE(has_pattern(std::as_bytes(std::span(b.b)), i, 1024)) << i;
    }
  }
  EXPECT_GT(packed, 0u);  // copied items follow each other without fillers
  EXPECT_TRUE(q.empty());
}

TEST(QueueZeroCopy, PlainItemsInPlace) {
  mp::Queue<Bytes<4096>> q;
  for (int i = 0; i < 100; ++i)
    q.put_with(4096, [&](std::span<std::byte> dst) {
      EXPECT_EQ(reinterpret_cast<uintptr_t>(dst.data()) % 64, 0u);  // big items: cache-aligned
      write_pattern(dst, i);
    });
  for (int i = 0; i < 100; ++i) {
    auto v = q.get_view();
    ASSERT_TRUE(v);
    EXPECT_TRUE(has_pattern(v.bytes(), i, 4096));
    EXPECT_EQ(v->b[5], pattern(i, 5));
  }
  EXPECT_THROW(q.put_with(100, [](std::span<std::byte>) {}), std::invalid_argument);
  mp::Queue<int64_t> ints;
  ints.put_with(8, [](std::span<std::byte> dst) {
    const int64_t x = 42;
    std::memcpy(dst.data(), &x, 8);
  });
  ints.put(43);
  EXPECT_EQ(*ints.get_view(), 42);
  EXPECT_EQ(ints.get(), 43);
}

TEST(QueueZeroCopy, ViewConsumesWhenReleasedOrMoved) {
  mp::Queue<std::vector<std::byte>> q;
  for (int i = 0; i < 3; ++i)
    q.put_with(10, [&](std::span<std::byte> dst) { write_pattern(dst, i); });
  auto v = q.get_view();
  EXPECT_EQ(q.qsize(), 3u);  // not consumed until released
  mp::ItemView<std::vector<std::byte>> moved = std::move(v);
  EXPECT_FALSE(v);
  EXPECT_TRUE(has_pattern(moved.bytes(), 0, 10));
  moved.release();
  EXPECT_FALSE(moved);
  EXPECT_EQ(q.qsize(), 2u);
  EXPECT_EQ(q.get(), [] {
    std::vector<std::byte> b(10);
    write_pattern(b, 1);
    return b;
  }());
  { auto w = q.get_view(); }
  EXPECT_TRUE(q.empty());
}

TEST(QueueZeroCopy, WriterThatThrowsQueuesNothing) {
  const char* env = std::getenv("MULTIPROC_SHM_PREFIX");
  const std::string prefix = env ? env : "";
  mp::Queue<std::string> q;
  q.put("first");
  const size_t files = shm_files_with(prefix);
  auto throwing = [](std::span<std::byte> dst) {
    std::memset(dst.data(), 'z', dst.size());
    throw std::runtime_error("writer failed");
  };
  for (size_t size : kSizes) {
    EXPECT_THROW(q.put_with(size, throwing), std::runtime_error);
    q.put_with(size, [&](std::span<std::byte> dst) { write_pattern(dst, size); });
  }
  EXPECT_EQ(q.get(), "first");
  for (size_t size : kSizes) EXPECT_EQ(q.get(), pattern_string(size, size));
  // Round the ring many times, a writer throwing now and then (also as the record that wraps).
  for (int i = 0; i < 3000; ++i) {
    if (i % 7 == 0) {
      EXPECT_THROW(q.put_with(300 + i % 50, throwing), std::runtime_error);
    }
    q.put(std::to_string(i));
    ASSERT_EQ(q.get(), std::to_string(i));
  }
  EXPECT_TRUE(q.empty());
  // No out-of-line segment of a thrown item is left (rings come and go: allow a new one).
  EXPECT_LE(shm_files_with(prefix), files + 1);
}

TEST(QueueZeroCopy, TimeoutsCloseAndShutdown) {
  mp::Queue<std::string> q(2);
  q.put("a");
  q.put("b");
  auto start = std::chrono::steady_clock::now();
  EXPECT_THROW(q.put_with(
                   5, [](std::span<std::byte>) { ADD_FAILURE(); }, 100ms),
               mp::Full);
  EXPECT_GE(std::chrono::steady_clock::now() - start, 90ms);
  {
    auto v = q.get_view();
    EXPECT_EQ(static_cast<char>(v.bytes()[0]), 'a');
  }
  EXPECT_EQ(q.get_view_nowait().size(), 1u);  // "b"
  EXPECT_THROW(q.get_view_nowait(), mp::Empty);
  start = std::chrono::steady_clock::now();
  EXPECT_THROW(q.get_view(100ms), mp::Empty);
  EXPECT_GE(std::chrono::steady_clock::now() - start, 90ms);

  q.put("c");
  q.shutdown();
  EXPECT_THROW(q.put_with(1, [](std::span<std::byte>) {}), mp::ShutDown);
  EXPECT_EQ(q.get_view().size(), 1u);  // drains what is left
  EXPECT_THROW(q.get_view(), mp::ShutDown);

  mp::Queue<std::string> c;
  c.put("z");
  c.close();
  EXPECT_THROW(c.put_with(1, [](std::span<std::byte>) {}), mp::ProcessError);
  EXPECT_THROW(c.get_view(), mp::ProcessError);
}

TEST(QueueZeroCopy, GetOnTheThreadThatHoldsAViewIsRefused) {
  mp::Queue<std::string> q;
  q.put("a");
  q.put("b");
  auto v = q.get_view();
  EXPECT_THROW(q.get(), mp::ProcessError);
  EXPECT_THROW(q.get_view(), mp::ProcessError);
  EXPECT_THROW(q.shutdown(true), mp::ProcessError);
  q.put("c");  // producers go on
  // Another thread waits for the view, within its timeout.
  std::string other;
  std::thread t([&] { other = q.get(30s); });
  std::this_thread::sleep_for(50ms);
  EXPECT_EQ(v.size(), 1u);
  EXPECT_EQ(static_cast<char>(v.bytes()[0]), 'a');
  v.release();
  t.join();
  EXPECT_EQ(other, "b");
  EXPECT_EQ(q.get(), "c");
}

// ---- processes --------------------------------------------------------------------------

class QueueZeroCopyTest : public StartMethodTest {};

TEST_P(QueueZeroCopyTest, ChildPutsWithParentViews) {
  mp::Queue<std::string> q(5);
  mp::Process p(ctx(), put_with_patterns, q, 3);
  p.start();
  for (int r = 0; r < 3; ++r)
    for (size_t k = 0; k < kSizes.size(); ++k) {
      auto v = q.get_view(60s);
      EXPECT_TRUE(has_pattern(v.bytes(), r * 100 + k, kSizes[k])) << r << " " << kSizes[k];
    }
  p.join();
  EXPECT_EQ(p.exitcode(), 0);
  EXPECT_TRUE(q.empty());
}

TEST_P(QueueZeroCopyTest, ParentPutsWithChildViews) {
  mp::Queue<std::string> q(5);
  mp::Queue<int> out;
  mp::Process p(ctx(), view_patterns, q, out, 3);
  p.start();
  put_with_patterns(q, 3);
  for (size_t i = 0; i < 3 * kSizes.size(); ++i) EXPECT_EQ(out.get(60s), 1) << i;
  p.join();
  EXPECT_EQ(p.exitcode(), 0);
}

TEST_P(QueueZeroCopyTest, OtherConsumersWaitForAViewWithinTheirTimeout) {
  mp::Queue<std::string> q;
  mp::Queue<int> ready, release;
  q.put("held");
  q.put("next");
  mp::Process p(ctx(), hold_view_until_told, q, ready, release);
  p.start();
  EXPECT_EQ(ready.get(60s), 4);
  EXPECT_THROW(q.get(200ms), mp::Empty);  // the view holds the consumers' lock
  EXPECT_THROW(q.get_nowait(), mp::Empty);
  q.put("more");  // producers are not held up
  release.put(1);
  EXPECT_EQ(q.get(60s), "next");
  EXPECT_EQ(q.get(60s), "more");
  p.join();
  EXPECT_EQ(p.exitcode(), 0);
}

TEST_P(QueueZeroCopyTest, ProducerKilledInsideItsWriterLosesOnlyThatItem) {
  for (size_t size : {size_t{40}, size_t{4096}, size_t{300000}, size_t{3u << 20}}) {
    for (int before : {0, 5}) {  // 5 puts: the producer then holds the put lock biased
      mp::Queue<std::string> q;
      mp::Queue<int> ready;
      mp::Process p(ctx(), die_inside_writer, q, ready, before, size);
      p.start();
      ASSERT_EQ(ready.get(60s), 1);
      p.kill();
      p.join();
      for (int i = 0; i < before; ++i) EXPECT_EQ(q.get(10s), "before " + std::to_string(i));
      EXPECT_THROW(q.get_nowait(), mp::Empty) << size;
      // Another producer takes over and the queue goes on.
      q.put_with(size, [&](std::span<std::byte> dst) { write_pattern(dst, 7); });
      q.put("after");
      {
        auto v = q.get_view(10s);
        EXPECT_TRUE(has_pattern(v.bytes(), 7, size)) << size;
      }
      EXPECT_EQ(q.get(10s), "after");
      EXPECT_EQ(q.qsize(), 0u);
    }
  }
}

TEST_P(QueueZeroCopyTest, ConsumerKilledHoldingAViewLeavesTheItemToTheNext) {
  for (size_t size : {size_t{40}, size_t{100000}, size_t{3u << 20}}) {
    mp::Queue<std::string> q;
    mp::Queue<std::string> ready;
    const std::string first = pattern_string(1, size), second = pattern_string(2, 10);
    q.put(first);
    q.put(second);
    mp::Process p(ctx(), die_holding_view, q, ready);
    p.start();
    EXPECT_EQ(ready.get(60s), first.substr(0, 64));
    p.kill();
    p.join();
    // The next consumer takes the dead one's lock over and finds the item still first.
    EXPECT_EQ(q.get(30s), first);
    {
      auto v = q.get_view(30s);
      EXPECT_EQ(std::string(reinterpret_cast<const char*>(v.data()), v.size()), second);
    }
    EXPECT_EQ(q.qsize(), 0u);
    q.put("after");
    EXPECT_EQ(q.get(), "after");
  }
}

// A producer (put_with and put of a 700-byte plain item) and a consumer (get_view and get) are
// SIGKILLed at random instants, round after round, a new pair each round. Every item got is
// intact and got once; what is missing is at most one item per round (the dead producer's item
// in flight, or the one its consumer had consumed but not yet reported); the queue works on.
TEST_P(QueueZeroCopyTest, SigkillAtRandomInstantsInsidePutWithAndGetView) {
  constexpr int kRounds = 12;
  mp::Queue<Stamped> q(64);
  mp::Queue<int> started;
  mp::Queue<uint64_t> seen;
  std::mt19937 rng(12345);
  for (int round = 0; round < kRounds; ++round) {
    mp::Process producer(ctx(), put_stamped_until_killed, q, started, round * kRange);
    mp::Process consumer(ctx(), get_stamped_until_killed, q, started, seen);
    producer.start();
    consumer.start();
    ASSERT_NO_THROW(started.get(60s));
    ASSERT_NO_THROW(started.get(60s));
    std::this_thread::sleep_for(std::chrono::microseconds(200 + rng() % 3000));
    (rng() % 2 ? producer : consumer).kill();
    std::this_thread::sleep_for(std::chrono::microseconds(rng() % 1000));
    producer.kill();
    consumer.kill();
    producer.join();
    consumer.join();
  }
  std::vector<uint64_t> got;
  for (;;) {
    try {
      got.push_back(seen.get_nowait());
    } catch (const mp::Empty&) {
      break;
    }
  }
  for (;;) {
    try {
      const Stamped left = q.get_nowait();
      got.push_back(unstamp(std::as_bytes(std::span(left.b))));
    } catch (const mp::Empty&) {
      break;
    }
  }
  std::vector<std::vector<uint64_t>> by_round(kRounds);
  for (uint64_t seq : got) {
    ASSERT_NE(seq, ~uint64_t{0}) << "a damaged item";
    ASSERT_LT(seq / kRange, static_cast<uint64_t>(kRounds));
    by_round[seq / kRange].push_back(seq % kRange);
  }
  uint64_t missing = 0, total = 0;
  for (auto& r : by_round) {
    std::sort(r.begin(), r.end());
    EXPECT_EQ(std::adjacent_find(r.begin(), r.end()), r.end()) << "an item got twice";
    if (!r.empty()) missing += r.back() + 1 - r.size();  // gaps below the last one got
    total += r.size();
  }
  EXPECT_LE(missing, static_cast<uint64_t>(kRounds)) << "of " << total << " items";
  EXPECT_GT(total, 0u);
  // The queue goes on: producers and consumers take the dead ones' locks over.
  Stamped s;
  stamp(std::as_writable_bytes(std::span(s.b)), 7);
  q.put(s);
  q.put_with(sizeof(Stamped), [](std::span<std::byte> dst) { stamp(dst, 8); });
  EXPECT_EQ(unstamp(q.get_view(10s).bytes()), 7u);
  const Stamped last = q.get(10s);
  EXPECT_EQ(unstamp(std::as_bytes(std::span(last.b))), 8u);
  EXPECT_EQ(q.qsize(), 0u);
}

MP_ALL_START_METHODS(QueueZeroCopyTest);
