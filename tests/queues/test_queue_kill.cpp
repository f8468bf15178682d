// A process killed with SIGKILL at any instant inside put() or get() never leaves the others
// deadlocked or the queue corrupt: every item got is one that was put, intact, and got once; at
// most the dying process's own item in flight is lost.
//
// Two producers and two consumers share a bounded queue of checksummed items of mixed sizes
// (some large enough to grow the ring, some out of line). The parent SIGKILLs one of them at a
// random moment 200+ times, starting a replacement each time, then drains and accounts for every
// item through a shared table of how often each (producer, sequence) was got.
#include <sys/mman.h>
#include <algorithm>
#include <atomic>
#include <csignal>
#include <cstring>
#include <random>

#include "start_methods.hpp"

using namespace std::chrono_literals;

namespace {

constexpr int kProducers = 2;
constexpr int kConsumers = 2;
constexpr uint64_t kMaxSeq = 400000;

struct Shared {
  std::atomic<uint64_t> next_seq[kProducers];  // next sequence number a producer may claim
  std::atomic<uint32_t> producers_stop;
  std::atomic<uint32_t> consumers_stop;
  std::atomic<uint64_t> corrupt;
  std::atomic<uint64_t> duplicates;
  std::atomic<uint64_t> got;
  std::atomic<uint8_t> seen[kProducers][kMaxSeq];
};
Shared* g_shared = nullptr;

uint64_t mix(uint64_t x) {
  x ^= x >> 33;
  x *= 0xff51afd7ed558ccdULL;
  x ^= x >> 33;
  return x;
}

size_t item_size(uint64_t seq) {
  if (seq % 997 == 0) return (3u << 20) + 5;  // out of line (blob)
  if (seq % 101 == 0) return 100000;          // grows the ring
  return 24 + mix(seq) % 200;
}

std::string make_item(uint32_t producer, uint64_t seq) {
  std::string s(item_size(seq), '\0');
  std::memcpy(s.data(), &producer, 4);
  std::memcpy(s.data() + 8, &seq, 8);
  uint64_t sum = 0;
  for (size_t i = 24; i < s.size(); ++i) {
    s[i] = static_cast<char>(mix(seq * 31 + i) & 0xff);
    sum += static_cast<unsigned char>(s[i]);
  }
  std::memcpy(s.data() + 16, &sum, 8);
  return s;
}

bool check_item(const std::string& s, uint32_t& producer, uint64_t& seq) {
  if (s.size() < 24) return false;
  uint64_t sum = 0, want = 0;
  std::memcpy(&producer, s.data(), 4);
  std::memcpy(&seq, s.data() + 8, 8);
  std::memcpy(&want, s.data() + 16, 8);
  if (producer >= kProducers || seq >= kMaxSeq || s.size() != item_size(seq)) return false;
  for (size_t i = 24; i < s.size(); ++i) {
    if (static_cast<char>(mix(seq * 31 + i) & 0xff) != s[i]) return false;
    sum += static_cast<unsigned char>(s[i]);
  }
  return sum == want;
}

void producer(mp::Queue<std::string> q, uint32_t id) {
  // Each sequence number is claimed before it is put: one whose producer was killed inside put()
  // is uncertain (put or not), and no later producer puts it again.
  while (!g_shared->producers_stop.load()) {
    uint64_t seq = g_shared->next_seq[id].fetch_add(1);
    if (seq >= kMaxSeq) return;
    q.put(make_item(id, seq));
  }
}

void consumer(mp::Queue<std::string> q) {
  for (;;) {
    std::string s;
    try {
      s = q.get(50ms);
    } catch (const mp::Empty&) {
      if (g_shared->consumers_stop.load()) return;
      continue;
    }
    uint32_t p;
    uint64_t seq;
    if (!check_item(s, p, seq)) {
      g_shared->corrupt.fetch_add(1);
      continue;
    }
    if (g_shared->seen[p][seq].fetch_add(1) != 0) g_shared->duplicates.fetch_add(1);
    g_shared->got.fetch_add(1);
  }
}

}  // namespace

TEST(QueueKill, SigkillAtRandomInstantsLosesAtMostInFlightItems) {
  void* mem =
      mmap(nullptr, sizeof(Shared), PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
  ASSERT_NE(mem, MAP_FAILED);
  g_shared = new (mem) Shared{};
  auto fork_ctx = mp::get_context(mp::StartMethod::fork);
  mp::Queue<std::string> q(2000);

  std::vector<mp::Process> producers, consumers;
  for (uint32_t i = 0; i < kProducers; ++i) {
    producers.emplace_back(fork_ctx, producer, q, i);
    producers.back().start();
  }
  for (int i = 0; i < kConsumers; ++i) {
    consumers.emplace_back(fork_ctx, consumer, q);
    consumers.back().start();
  }

  std::mt19937 rng(12345);
  int kills = 0, producer_kills = 0;
  const auto until = std::chrono::steady_clock::now() + 60s;
  while (kills < 220 && std::chrono::steady_clock::now() < until) {
    std::this_thread::sleep_for(std::chrono::microseconds(2000 + rng() % 8000));
    bool kill_producer = rng() % 2 == 0;
    size_t idx = rng() % (kill_producer ? kProducers : kConsumers);
    mp::Process& victim = kill_producer ? producers[idx] : consumers[idx];
    if (!victim.is_alive()) continue;  // a producer that reached kMaxSeq
    victim.kill();
    victim.join();
    ASSERT_EQ(victim.exitcode(), -SIGKILL);
    ++kills;
    if (kill_producer) {
      ++producer_kills;
      victim = mp::Process(fork_ctx, producer, q, static_cast<uint32_t>(idx));
    } else {
      victim = mp::Process(fork_ctx, consumer, q);
    }
    victim.start();
  }
  EXPECT_GE(kills, 200);
  // Under a sanitizer on a loaded machine the kills can come faster than the traffic: let it
  // flow, without kills, until enough items were put for the accounting below to mean something.
  auto claimed = [] {
    uint64_t n = 0;
    for (int p = 0; p < kProducers; ++p) n += std::min(g_shared->next_seq[p].load(), kMaxSeq);
    return n;
  };
  EXPECT_TRUE(eventually([&] { return claimed() > 1000; }, 60s)) << claimed() << " items claimed";

  // Stop producing, let the consumers drain, then stop them.
  g_shared->producers_stop.store(1);
  for (auto& p : producers) ASSERT_TRUE(p.join(60s));
  ASSERT_TRUE(eventually([&] { return q.qsize() == 0; }, 60s))
      << q.qsize() << " items never drained";
  g_shared->consumers_stop.store(1);
  for (auto& c : consumers) ASSERT_TRUE(c.join(60s));

  // Exact accounting.
  EXPECT_EQ(g_shared->corrupt.load(), 0u);
  EXPECT_EQ(g_shared->duplicates.load(), 0u);
  uint64_t put_total = 0, missing = 0;
  for (int p = 0; p < kProducers; ++p) {
    uint64_t end = std::min(g_shared->next_seq[p].load(), kMaxSeq);
    for (uint64_t s = 0; s < end; ++s) {
      ++put_total;
      if (g_shared->seen[p][s].load() == 0) ++missing;
    }
  }
  EXPECT_GT(put_total, 1000u);  // real traffic flowed
  // Each kill loses at most one item: the producer's claimed one or the consumer's in hand (a
  // producer stopped by producers_stop after claiming also leaves one unput: at most one each).
  EXPECT_LE(missing, static_cast<uint64_t>(kills + kProducers))
      << "put " << put_total << ", kills " << kills;
  std::printf(
      "queue kill test: %d kills (%d producers), %llu items put, %llu got, %llu lost in flight\n",
      kills, producer_kills, static_cast<unsigned long long>(put_total),
      static_cast<unsigned long long>(g_shared->got.load()),
      static_cast<unsigned long long>(missing));

  // The queue still works for the survivors.
  q.put("after");
  EXPECT_EQ(q.get(5s), "after");
  munmap(mem, sizeof(Shared));
}

// The two windows of a producer's commit, hit exactly: a producer killed after writing a batch
// but before sealing its first record leaves none of it visible; one killed after sealing but
// before committing leaves the whole batch to the consumers, and the next producer commits it.
// Either way the next producer (whose records may differ in size from the dead one's) carries on.
namespace {

std::atomic<int>* g_crash_at = nullptr;  // the PutCrashPoint to die at, in the child

void die_at(mp::detail::PutCrashPoint where) {
  if (static_cast<int>(where) == *g_crash_at) raise(SIGKILL);
}

// Forks a child that put_many's `batch` and is killed at `where`; returns once it is dead.
void put_batch_and_die(mp::Queue<std::string> q, const std::vector<std::string>& batch,
                       mp::detail::PutCrashPoint where) {
  static std::atomic<int> crash_at;
  crash_at = static_cast<int>(where);
  g_crash_at = &crash_at;
  pid_t pid = fork();
  ASSERT_GE(pid, 0);
  if (pid == 0) {
    mp::detail::g_put_crash_point = die_at;
    q.put_many(batch);
    _exit(0);  // not reached
  }
  int status = 0;
  ASSERT_EQ(waitpid(pid, &status, 0), pid);
  ASSERT_TRUE(WIFSIGNALED(status) && WTERMSIG(status) == SIGKILL) << status;
}

std::vector<std::string> batch_of(int n, size_t size, char tag) {
  std::vector<std::string> v;
  for (int i = 0; i < n; ++i) v.push_back(std::string(size + i, static_cast<char>(tag + i)));
  return v;
}

}  // namespace

TEST(QueueKill, ProducerKilledBeforeItsFirstSealLeavesNothingVisible) {
  mp::Queue<std::string> q;
  q.put("before");
  put_batch_and_die(q, batch_of(20, 40, 'a'), mp::detail::PutCrashPoint::before_first_seal);
  EXPECT_EQ(q.get(), "before");
  EXPECT_THROW(q.get_nowait(), mp::Empty);
  // A new producer takes the dead one's lock over and writes records of other sizes over the
  // unsealed batch; consumers see exactly the new items.
  const auto next = batch_of(30, 3, 'A');
  q.put_many(next);
  EXPECT_EQ(q.qsize(), next.size());
  EXPECT_EQ(q.get_many(100), next);
  EXPECT_THROW(q.get_nowait(), mp::Empty);
  EXPECT_EQ(q.qsize(), 0u);
}

TEST(QueueKill, ProducerKilledBeforeItsCommitLeavesItsBatchToConsumers) {
  const auto batch = batch_of(20, 40, 'a');
  {
    // Consumers take the sealed batch before any producer repairs the commit.
    mp::Queue<std::string> q;
    put_batch_and_die(q, batch, mp::detail::PutCrashPoint::before_commit);
    EXPECT_EQ(q.get_many(100), batch);
    q.put("next");  // takes the lock over: commits the dead batch, then puts
    EXPECT_EQ(q.get(), "next");
    EXPECT_THROW(q.get_nowait(), mp::Empty);
    EXPECT_EQ(q.qsize(), 0u);
  }
  {
    // A producer repairs the commit first: the counts include the dead batch.
    mp::Queue<std::string> q;
    put_batch_and_die(q, batch, mp::detail::PutCrashPoint::before_commit);
    q.put("next");
    EXPECT_EQ(q.qsize(), batch.size() + 1);
    auto all = batch;
    all.push_back("next");
    EXPECT_EQ(q.get_many(100), all);
    EXPECT_EQ(q.qsize(), 0u);
  }
}

// A lone producer soon holds put_lock biased (queue_core_bias.cpp) and puts with no lock
// operation at all. Killed at random instants, each one's successor must revoke the dead
// thread's bias (repairing what it left mid-put), and the consumer must see every producer's
// items in order, none twice and none corrupt, with at most the in-flight one lost.
TEST(QueueKill, BiasedProducerKilledAtRandomInstants) {
  mp::Queue<uint64_t> q;
  std::mt19937 rng(12345);
  constexpr int kRounds = 40;
  uint64_t got = 0;
  for (int round = 0; round < kRounds; ++round) {
    pid_t pid = fork();
    ASSERT_GE(pid, 0);
    if (pid == 0) {
      for (uint64_t seq = 0;; ++seq) q.put(uint64_t(round) << 40 | seq);
    }
    uint64_t next = 0;  // this round's next sequence number
    auto take = [&](uint64_t v) {
      ASSERT_EQ(v >> 40, uint64_t(round)) << "an item of another producer";
      ASSERT_EQ(v & ((uint64_t{1} << 40) - 1), next) << "out of order, lost or twice";
      ++next;
      ++got;
    };
    const auto until = std::chrono::steady_clock::now() +
                       std::chrono::microseconds(std::uniform_int_distribution<int>(0, 3000)(rng));
    while (std::chrono::steady_clock::now() < until) {
      try {
        take(q.get(1s));
      } catch (const mp::Empty&) {
        FAIL() << "the producer went quiet";
      }
    }
    kill(pid, SIGKILL);
    int status = 0;
    ASSERT_EQ(waitpid(pid, &status, 0), pid);
    for (;;) {  // what it sealed before it died
      try {
        take(q.get_nowait());
      } catch (const mp::Empty&) {
        break;
      }
    }
  }
  // The parent puts after the last one: it takes the lock over from a dead biased thread.
  q.put(42);
  EXPECT_EQ(q.get(1s), 42u);
  EXPECT_THROW(q.get_nowait(), mp::Empty);
  EXPECT_EQ(q.qsize(), 0u);
  EXPECT_GT(got, uint64_t(kRounds));
}

// A biased producer checks for sleeping consumers without a fence; consumers about to sleep run
// membarrier_global() instead. A lost wake-up would leave the consumer asleep until its timeout.
TEST(QueueKill, SleepingConsumerWakesForBiasedProducer) {
  mp::Queue<int> q;
  mp::Queue<int> done;
  constexpr int kItems = 30;
  pid_t pid = fork();
  ASSERT_GE(pid, 0);
  if (pid == 0) {
    int ok = 0;
    for (int i = 0; i < kItems; ++i) {
      try {
        ok += q.get(20s) == i;
      } catch (...) {
      }
    }
    done.put(ok);
    _exit(0);
  }
  for (int i = 0; i < kItems; ++i) {
    // Long enough for the consumer to stop spinning and sleep on the futex.
    std::this_thread::sleep_for(std::chrono::milliseconds(i % 3 == 0 ? 5 : 1));
    q.put(i);
  }
  const auto t0 = std::chrono::steady_clock::now();
  EXPECT_EQ(done.get(30s), kItems);
  EXPECT_LT(std::chrono::steady_clock::now() - t0, 10s);
  int status = 0;
  ASSERT_EQ(waitpid(pid, &status, 0), pid);
}

// Producers that take turns in bursts: each burst's producer soon holds put_lock biased and the
// other revokes it. Every item must arrive once, in its producer's order, and the counts agree.
TEST(QueueKill, ProducersTakingTurnsLoseNothing) {
  mp::Queue<uint64_t> q;
  constexpr int kProducers = 2;
  constexpr uint64_t kItems = 100000;
  pid_t pids[kProducers];
  for (int p = 0; p < kProducers; ++p) {
    pids[p] = fork();
    ASSERT_GE(pids[p], 0);
    if (pids[p] == 0) {
      std::mt19937 rng(p);
      for (uint64_t seq = 0; seq < kItems;) {
        const uint64_t burst = std::uniform_int_distribution<uint64_t>(1, 300)(rng);
        for (uint64_t k = 0; k < burst && seq < kItems; ++k, ++seq) q.put(uint64_t(p) << 40 | seq);
        std::this_thread::sleep_for(std::chrono::microseconds(rng() % 50));
      }
      _exit(0);
    }
  }
  uint64_t next[kProducers] = {};
  for (uint64_t i = 0; i < kProducers * kItems; ++i) {
    uint64_t v = 0;
    ASSERT_NO_THROW(v = q.get(10s)) << "item " << i << " never came";
    const uint64_t p = v >> 40, seq = v & ((uint64_t{1} << 40) - 1);
    ASSERT_LT(p, uint64_t(kProducers));
    ASSERT_EQ(seq, next[p]) << "producer " << p << ": out of order, lost or twice";
    ++next[p];
  }
  for (pid_t pid : pids) {
    int status = 0;
    ASSERT_EQ(waitpid(pid, &status, 0), pid);
    EXPECT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 0);
  }
  EXPECT_THROW(q.get_nowait(), mp::Empty);
  EXPECT_EQ(q.qsize(), 0u);
}

// Found in review: put-lock corner cases, with puts held open by a fill callback that waits.
namespace {

std::atomic<int> g_in_fill{0}, g_release_fill{0};

void fill_when_released(void*, size_t, char* dst) {
  g_in_fill = 1;
  while (!g_release_fill) std::this_thread::sleep_for(1ms);
  std::memset(dst, 0x11, 8);
}

void deliver_string(void* ctx, const char* src, size_t size) {
  static_cast<std::string*>(ctx)->assign(src, size);
}

}  // namespace

// One thread putting through two handles of a queue holds two producer slots; the bias is on
// the second. Another producer must wait for the put in progress, not look at the first slot.
TEST(QueueKill, RevokerWaitsForTheBiasedSlotNotAnother) {
  using namespace mp::detail;
  g_in_fill = 0;
  g_release_fill = 0;
  auto q = QueueCore::create(0);
  auto a = QueueCore::attach_existing(q->name());
  auto b = QueueCore::attach_existing(q->name());
  auto c = QueueCore::attach_existing(q->name());
  size_t size = 8;
  uint64_t v = 7;
  b->put(1, &size, 0, nullptr, &v, Deadline::never());  // b: a slot, and a bias
  b->put(1, &size, 0, nullptr, &v, Deadline::never());
  std::vector<uint64_t> many(70000, 1);  // a revokes it, then outlasts the hold-off
  a->put(many.size(), &size, 0, nullptr, many.data(), Deadline::never());
  a->put(1, &size, 0, nullptr, &v, Deadline::never());  // a: a second slot, and the bias
  a->put(1, &size, 0, nullptr, &v, Deadline::never());
  std::vector<uint64_t> out(100000);
  PlainSink sink{reinterpret_cast<char*>(out.data()), 8};
  EXPECT_EQ(q->get(out.size(), nullptr, &sink, Deadline::never()), 2u + 2u + many.size());
  std::atomic<int> other_done{0};
  std::thread other([&] {
    while (!g_in_fill) std::this_thread::sleep_for(1ms);
    uint64_t w = 99;
    c->put(1, &size, 0, nullptr, &w, Deadline::never());
    other_done = 1;
  });
  std::thread release([&] {
    while (!g_in_fill) std::this_thread::sleep_for(1ms);
    std::this_thread::sleep_for(300ms);
    EXPECT_EQ(other_done.load(), 0) << "another producer put while a biased put was under way";
    g_release_fill = 1;
  });
  a->put(1, &size, 0, fill_when_released, nullptr, Deadline::never());  // biased
  other.join();
  release.join();
  EXPECT_EQ(q->qsize(), 2u);
}

// fork() while another thread is inside a put: the child's first put must not inherit that
// put's half-done state (it sealed its record before writing it, and then a stale header).
TEST(QueueKill, ForkDuringAnotherThreadsPutLeavesTheChildsPutWhole) {
  using namespace mp::detail;
  g_in_fill = 0;
  g_release_fill = 0;
  auto q = QueueCore::create(0);
  size_t size = 16;
  std::thread putter([&] { q->put(1, &size, 0, fill_when_released, nullptr, Deadline::never()); });
  while (!g_in_fill) std::this_thread::sleep_for(1ms);
  pid_t pid = fork();
  ASSERT_GE(pid, 0);
  if (pid == 0) {
    auto fill_slowly = [](void*, size_t, char* dst) {
      std::this_thread::sleep_for(300ms);
      std::memset(dst, 0xAB, 16);
    };
    q->put(1, &size, 0, fill_slowly, nullptr, Deadline::never());
    _exit(0);
  }
  std::this_thread::sleep_for(50ms);
  g_release_fill = 1;
  putter.join();
  std::string first, second;
  ASSERT_EQ(q->get(1, deliver_string, &first, Deadline{Deadline::Clock::now() + 10s}), 1u);
  ASSERT_EQ(q->get(1, deliver_string, &second, Deadline{Deadline::Clock::now() + 10s}), 1u);
  EXPECT_EQ(static_cast<unsigned char>(first[0]), 0x11);
  EXPECT_EQ(second, std::string(16, '\xAB'));
  int status = 0;
  ASSERT_EQ(waitpid(pid, &status, 0), pid);
}
