// redis::Queue's shutdown and get_many on the plain commands (a put on an unbounded queue is one
// LPUSH, a plain get_many one RPOP with a count; a shutdown turns the items key into a string so
// that a later LPUSH fails): puts racing a shutdown in other processes either land (and are
// drained, or dropped by an immediate shutdown) or raise, never both and never neither; get_many's
// timeouts, waits and drain; reliable items of a consumer that died or went away come back, also
// after a shutdown. Against the binary's own redis-server (tests/support/redis_server.hpp).
#include <signal.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <cstdint>
#include <set>
#include <string>
#include <thread>
#include <vector>

#include <multiproc/redis.hpp>

#include "redis_server.hpp"
#include "start_methods.hpp"

namespace mpr = multiproc::redis;
using namespace std::chrono_literals;

namespace {

MP_REDIS_TEST_PROGRAM();

constexpr int64_t kSecond = 1'000'000'000;  // the second producer's items start here

// Puts base, base + 1, ... one at a time (or in batches of `batch`) until the queue is shut down,
// then reports how many puts returned.
void put_until_shut_down(mpr::Queue<int64_t> q, mpr::Queue<int64_t> report, int64_t base,
                         int batch) {
  int64_t done = 0;
  try {
    for (;;) {
      if (batch == 1) {
        q.put(base + done);
        ++done;
      } else {
        std::vector<int64_t> b;
        for (int i = 0; i < batch; ++i) b.push_back(base + done + i);
        q.put_many(b);
        done += batch;
      }
      if (done > 50'000'000) break;  // never shut down: the test fails on the count
    }
  } catch (const mp::QueueClosed&) {
  }
  report.put(done);
}

void take_many_then_hang(mpr::Queue<int> q, mpr::Queue<int> got) {
  for (int x : q.get_many(3, 30s)) got.put(x);
  for (;;) pause();
}

void put_later(mpr::Queue<int> q) {
  std::this_thread::sleep_for(300ms);
  q.put_many(std::vector<int>{1, 2, 3});
}

}  // namespace

class RedisQueueShutdown : public StartMethodTest {
 protected:
  // Two producers put while this process shuts the queue down. Returns what each reported.
  std::vector<int64_t> race(mpr::Queue<int64_t>& q, bool immediate, int batch) {
    mpr::Queue<int64_t> report(redis_url(), q.name() + ".report");
    std::vector<mp::Process> procs;
    procs.emplace_back(ctx(), put_until_shut_down, q, report, 0, batch);
    procs.emplace_back(ctx(), put_until_shut_down, q, report, kSecond, batch);
    for (auto& p : procs) p.start();
    // Both producers are putting (the queue grows) when the shutdown comes.
    EXPECT_TRUE(eventually([&] { return q.qsize() >= 2000; }, 60s));
    q.shutdown(immediate);
    std::vector<int64_t> counts;
    for (int i = 0; i < 2; ++i) counts.push_back(report.get(60s));
    for (auto& p : procs) {
      EXPECT_TRUE(p.join(30s));
      EXPECT_EQ(p.exitcode(), 0);
    }
    report.unlink();
    return counts;
  }
};

// Every put that returned is drained, in each producer's order; no put that raised left its item.
TEST_P(RedisQueueShutdown, PutsRacingAShutdownLandOrRaiseNeverBoth) {
  MP_REQUIRE_REDIS();
  for (int batch : {1, 64}) {
    mpr::Queue<int64_t> q(redis_url(), qname(std::to_string(batch)));
    const auto counts = race(q, false, batch);
    EXPECT_THROW(q.put(-1), mp::QueueClosed);
    std::vector<int64_t> first, second;
    try {
      for (;;) {
        for (int64_t x : q.get_many(1000, 10s)) (x >= kSecond ? second : first).push_back(x);
      }
    } catch (const mp::QueueClosed&) {
    }
    int64_t a = 0, b = 0;  // which report is whose is unknown: match them by size
    if (static_cast<int64_t>(first.size()) == counts[0]) {
      a = counts[0];
      b = counts[1];
    } else {
      a = counts[1];
      b = counts[0];
    }
    ASSERT_EQ(static_cast<int64_t>(first.size()), a) << "batch " << batch;
    ASSERT_EQ(static_cast<int64_t>(second.size()), b) << "batch " << batch;
    for (int64_t i = 0; i < a; ++i) ASSERT_EQ(first[i], i);
    for (int64_t i = 0; i < b; ++i) ASSERT_EQ(second[i], kSecond + i);
    EXPECT_THROW(q.get_nowait(), mp::QueueClosed);
    EXPECT_EQ(q.qsize(), 0u);
    q.unlink();
  }
}

// After an immediate shutdown nothing is left and nothing lands, whatever was in flight.
TEST_P(RedisQueueShutdown, PutsRacingAnImmediateShutdownLeaveNothing) {
  MP_REQUIRE_REDIS();
  for (int batch : {1, 64}) {
    mpr::Queue<int64_t> q(redis_url(), qname(std::to_string(batch)));
    const auto counts = race(q, true, batch);
    EXPECT_GT(counts[0] + counts[1], 0);
    EXPECT_EQ(q.qsize(), 0u);
    EXPECT_THROW(q.get_nowait(), mp::QueueClosed);
    EXPECT_THROW(q.get(5s), mp::QueueClosed);
    EXPECT_THROW(q.get_many(10, 5s), mp::QueueClosed);
    EXPECT_THROW(q.put_many(std::vector<int64_t>{1, 2}), mp::QueueClosed);
    q.unlink();
  }
}

// A reliable consumer's items, taken with get_many, come back when it is killed; after a
// shutdown they come back into what is drained.
TEST_P(RedisQueueShutdown, ReliableGetManyOfAKilledConsumerComesBack) {
  MP_REQUIRE_REDIS();
  const mpr::Options reliable{.reliable = true, .heartbeat_ttl = 1s};
  for (bool shut : {false, true}) {
    mpr::Queue<int> q(redis_url(), qname(shut ? "shut" : "open"), 0, reliable);
    mpr::Queue<int> got(redis_url(), qname(shut ? "shut.got" : "open.got"));
    q.put_many(std::vector<int>{1, 2, 3, 4});
    mp::Process consumer(ctx(), take_many_then_hang, q, got);
    consumer.start();
    std::set<int> taken;
    for (int i = 0; i < 3; ++i) taken.insert(got.get(60s));
    EXPECT_EQ(taken, (std::set<int>{1, 2, 3}));
    consumer.kill();
    consumer.join(30s);
    EXPECT_EQ(consumer.exitcode(), -SIGKILL);
    // Shut down once its heartbeat ran out: the reaper then puts its items into what is drained
    // (a shut down queue whose list is empty raises at once, whatever dead consumers still hold).
    if (shut) {
      std::this_thread::sleep_for(2s);
      q.shutdown();
    }
    std::multiset<int> back;
    while (back.size() < 4) {
      for (int x : q.get_many(10, 30s)) back.insert(x);
    }
    EXPECT_EQ(back, (std::multiset<int>{1, 2, 3, 4}));
    q.ack(4);
    if (shut) {
      EXPECT_THROW(q.get_many(10, 5s), mp::QueueClosed);
    } else {
      EXPECT_THROW(q.get_many(10, 0.2s), mp::Empty);
    }
    q.unlink();
    got.unlink();
  }
}

// get_many waits for items another process puts later, and takes what came, up to its maximum.
TEST_P(RedisQueueShutdown, GetManyWaitsForAnotherProcess) {
  MP_REQUIRE_REDIS();
  mpr::Queue<int> q(redis_url(), qname());
  mp::Process producer(ctx(), put_later, q);
  producer.start();
  std::vector<int> all;
  while (all.size() < 3) {
    auto part = q.get_many(10, 30s);
    EXPECT_FALSE(part.empty());
    all.insert(all.end(), part.begin(), part.end());
  }
  EXPECT_EQ(all, (std::vector<int>{1, 2, 3}));
  EXPECT_TRUE(producer.join(30s));
  EXPECT_EQ(producer.exitcode(), 0);
  q.unlink();
}

MP_ALL_START_METHODS(RedisQueueShutdown);

// get_many (one RPOP with a count): its timeout, its maximum, and the drain after a shutdown.
TEST(RedisQueueGetMany, TimeoutsMaximumAndDrain) {
  MP_REQUIRE_REDIS();
  mpr::Queue<int> q(redis_url(), qname());
  auto t0 = std::chrono::steady_clock::now();
  EXPECT_THROW(q.get_many(5, 0.3s), mp::Empty);
  EXPECT_GE(std::chrono::steady_clock::now() - t0, 0.29s);
  EXPECT_THROW(q.get_many(5, 0s), mp::Empty);
  std::vector<int> items(20);
  for (int i = 0; i < 20; ++i) items[i] = i;
  q.put_many(items);
  EXPECT_EQ(q.get_many(5, 0s), (std::vector<int>{0, 1, 2, 3, 4}));
  EXPECT_EQ(q.get_many(1), (std::vector<int>{5}));
  EXPECT_EQ(q.get(), 6);
  q.shutdown();
  EXPECT_TRUE(q.is_shutdown());
  EXPECT_EQ(q.qsize(), 13u);  // what is left, to drain
  EXPECT_FALSE(q.empty());
  EXPECT_THROW(q.put(99), mp::QueueClosed);
  q.shutdown();  // twice is once
  EXPECT_EQ(q.get_nowait(), 7);
  EXPECT_EQ(q.get_many(3, 0s), (std::vector<int>{8, 9, 10}));
  EXPECT_EQ(q.get(), 11);
  EXPECT_EQ(q.get_many(100, 5s), (std::vector<int>{12, 13, 14, 15, 16, 17, 18, 19}));
  EXPECT_EQ(q.qsize(), 0u);
  t0 = std::chrono::steady_clock::now();
  EXPECT_THROW(q.get_many(5, 30s), mp::QueueClosed);
  EXPECT_THROW(q.get_many(5, 0s), mp::QueueClosed);
  EXPECT_LT(std::chrono::steady_clock::now() - t0, 10s);
  q.shutdown(true);  // immediate after a plain one: still shut down, still nothing
  EXPECT_THROW(q.get_nowait(), mp::QueueClosed);
  q.unlink();  // forgets the shutdown too
  q.put_many(std::vector<int>{1, 2});
  EXPECT_EQ(q.get_many(10), (std::vector<int>{1, 2}));
  q.unlink();
}

// A getter blocked in get_many when the queue is shut down raises within the blocking slice.
TEST(RedisQueueGetMany, ShutdownWakesABlockedGetMany) {
  MP_REQUIRE_REDIS();
  mpr::Queue<int> q(redis_url(), qname());
  std::atomic<bool> closed{false};
  std::thread getter([&, u = redis_url(), n = qname()] {
    mpr::Queue<int> other(u, n);
    try {
      other.get_many(10, 30s);
    } catch (const mp::QueueClosed&) {
      closed = true;
    }
  });
  std::this_thread::sleep_for(300ms);
  const auto t0 = std::chrono::steady_clock::now();
  q.shutdown();
  getter.join();
  EXPECT_TRUE(closed);
  EXPECT_LT(std::chrono::steady_clock::now() - t0, 10s);
  q.unlink();
}

// A reliable handle going away after a shutdown gives back what it did not ack, to be drained.
TEST(RedisQueueGetMany, ReliableHandleReleasedAfterAShutdownIsDrained) {
  MP_REQUIRE_REDIS();
  const mpr::Options reliable{.reliable = true};
  mpr::Queue<int> q(redis_url(), qname());
  q.put_many(std::vector<int>{1, 2, 3});
  {
    mpr::Queue<int> consumer(redis_url(), qname(), 0, reliable);
    EXPECT_EQ(consumer.get_many(2), (std::vector<int>{1, 2}));
    q.shutdown();
  }  // gives 1 and 2 back
  std::multiset<int> left;
  try {
    for (;;) left.insert(q.get(5s));
  } catch (const mp::QueueClosed&) {
  }
  EXPECT_EQ(left, (std::multiset<int>{1, 2, 3}));
  q.unlink();
}
