// redis::Queue / redis::JoinableQueue against a real redis-server started by this binary
// (tests/support/redis_server.hpp): Queue<T>'s semantics, processes under fork, spawn and
// forkserver sharing queues by URL and name, the reliable mode with a SIGKILLed consumer, a server
// restarted mid-run, and the errors for bad URLs, bad passwords and an unreachable server.
#include <signal.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <set>
#include <string>
#include <thread>
#include <vector>

#include <multiproc/redis.hpp>

#include "lossy_proxy.hpp"
#include "redis_server.hpp"
#include "start_methods.hpp"

namespace mpr = multiproc::redis;
using namespace std::chrono_literals;

namespace {

MP_REDIS_TEST_PROGRAM();

struct Point {
  int x;
  double y;
};

// ---- child tasks --------------------------------------------------------------------------------

void produce(mpr::Queue<int64_t> q, int64_t base, int64_t n) {
  for (int64_t i = 0; i < n; ++i) q.put(base + i);
}

void consume(mpr::Queue<int64_t> q, mpr::Queue<int64_t> out, int n) {
  for (int i = 0; i < n; ++i) out.put(q.get(30s));
}

void double_and_mark_done(mpr::JoinableQueue<int> q, mpr::Queue<int> out, int n) {
  for (int i = 0; i < n; ++i) {
    int x = q.get(30s);
    out.put(2 * x);
    q.task_done();
  }
}

void produce_joinable(mpr::JoinableQueue<int> q, int n) {
  for (int i = 0; i < n; ++i) q.put(i);
}

void take_one_then_hang(mpr::Queue<int> q, mpr::Queue<int> got) {
  int x = q.get(30s);
  got.put(x);
  for (;;) pause();
}

}  // namespace

// ---- URLs and connections -----------------------------------------------------------------------

TEST(RedisUrl, ParsesWhatItShould) {
  auto u = mpr::detail::parse_url("redis://user:p%40ss@db.example:6380/3");
  EXPECT_EQ(u.host, "db.example");
  EXPECT_EQ(u.port, 6380);
  EXPECT_EQ(u.user, "user");
  EXPECT_EQ(u.password, "p@ss");
  EXPECT_EQ(u.db, 3);
  u = mpr::detail::parse_url("redis://:secret@127.0.0.1");
  EXPECT_EQ(u.port, 6379);
  EXPECT_EQ(u.user, "");
  EXPECT_EQ(u.password, "secret");
  EXPECT_EQ(u.db, 0);
  u = mpr::detail::parse_url("redis://[::1]:7000/");
  EXPECT_EQ(u.host, "::1");
  EXPECT_EQ(u.port, 7000);
}

TEST(RedisUrl, MalformedIsAClearError) {
  for (const char* bad : {"http://h:1", "redis://", "redis://h:0", "redis://h:99999",
                          "redis://h:port", "redis://h:1/x", "redis://h:1/0?ssl=1",
                          "redis://u:%zz@h:1", "redis://[::1:1", "redis://h:"}) {
    try {
      mpr::detail::parse_url(bad);
      ADD_FAILURE() << bad << " was accepted";
    } catch (const mp::ProcessError& e) {
      EXPECT_NE(std::string(e.what()).find("redis URL"), std::string::npos) << e.what();
    }
  }
  EXPECT_THROW(mpr::Queue<int>("redis//127.0.0.1:1", "q"), mp::ProcessError);
}

// Debian's hiredis (0.14) has no TLS: a rediss:// URL says so instead of "must start with".
TEST(RedisUrl, TlsUrlSaysTlsIsNotAvailable) {
  try {
    mpr::detail::parse_url("rediss://:pw@h:6380/0");
    ADD_FAILURE() << "rediss:// was accepted";
  } catch (const mp::ProcessError& e) {
    EXPECT_NE(std::string(e.what()).find("TLS"), std::string::npos) << e.what();
  }
}

TEST(RedisQueue, WrongPasswordIsAuthenticationError) {
  MP_REQUIRE_REDIS();
  try {
    mpr::Queue<int> q(RedisServer::instance()->url("not-the-password"), qname());
    ADD_FAILURE() << "connected with a wrong password";
  } catch (const mp::AuthenticationError& e) {
    EXPECT_NE(std::string(e.what()).find("refused the credentials"), std::string::npos) << e.what();
  }
  const std::string no_password =
      "redis://127.0.0.1:" + std::to_string(RedisServer::instance()->port());
  EXPECT_THROW(mpr::Queue<int>(no_password, qname()), mp::AuthenticationError);
}

TEST(RedisQueue, UnreachableServerIsConnectionErrorAfterTheStatedTime) {
  // A port nothing listens on: take the server's own, stopped, would need a restart; a fresh
  // free port is simpler.
  int fd = socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  ASSERT_EQ(bind(fd, reinterpret_cast<sockaddr*>(&a), sizeof a), 0);
  socklen_t len = sizeof a;
  getsockname(fd, reinterpret_cast<sockaddr*>(&a), &len);
  close(fd);
  const std::string dead = "redis://127.0.0.1:" + std::to_string(ntohs(a.sin_port));
  const auto t0 = std::chrono::steady_clock::now();
  try {
    mpr::Queue<int> q(dead, "q", 0, {.unreachable_timeout = 0.3s});
    ADD_FAILURE() << "connected to nothing";
  } catch (const mpr::ConnectionError& e) {
    EXPECT_NE(std::string(e.what()).find("cannot reach"), std::string::npos) << e.what();
  }
  const auto took = std::chrono::steady_clock::now() - t0;
  EXPECT_GE(took, 0.25s);
  EXPECT_LT(took, 10s);
}

// ---- one process --------------------------------------------------------------------------------

TEST(RedisQueue, FifoOrderForEveryKindOfItem) {
  MP_REQUIRE_REDIS();
  mpr::Queue<int64_t> ints(redis_url(), qname("ints"));
  for (int64_t i = 0; i < 100; ++i) ints.put(i);
  EXPECT_EQ(ints.qsize(), 100u);
  for (int64_t i = 0; i < 100; ++i) EXPECT_EQ(ints.get(), i);
  EXPECT_TRUE(ints.empty());

  mpr::Queue<std::string> strings(redis_url(), qname("strings"));
  strings.put("");
  strings.put(std::string(100000, 'x'));
  strings.put(std::string("a\0b", 3));
  EXPECT_EQ(strings.get(), "");
  EXPECT_EQ(strings.get(), std::string(100000, 'x'));
  EXPECT_EQ(strings.get(), std::string("a\0b", 3));

  mpr::Queue<Point> points(redis_url(), qname("points"));
  points.put({1, 2.5});
  auto p = points.get();
  EXPECT_EQ(p.x, 1);
  EXPECT_EQ(p.y, 2.5);

  mpr::Queue<std::vector<std::string>> vecs(redis_url(), qname("vecs"));
  vecs.put({"a", "bc"});
  EXPECT_EQ(vecs.get(), (std::vector<std::string>{"a", "bc"}));

  // Another handle with the same URL and name is the same queue.
  mpr::Queue<int64_t> again(redis_url(), qname("ints"));
  ints.put(7);
  EXPECT_EQ(again.get(), 7);
  EXPECT_TRUE(again == ints);
}

TEST(RedisQueue, EmptyFullAndTimeouts) {
  MP_REQUIRE_REDIS();
  mpr::Queue<int> q(redis_url(), qname(), 2);
  EXPECT_THROW(q.get_nowait(), mp::Empty);
  auto t0 = std::chrono::steady_clock::now();
  EXPECT_THROW(q.get(0.2s), mp::Empty);
  EXPECT_GE(std::chrono::steady_clock::now() - t0, 0.19s);
  q.put(1);
  q.put_nowait(2);
  EXPECT_TRUE(q.full());
  EXPECT_EQ(q.maxsize(), 2u);
  EXPECT_THROW(q.put_nowait(3), mp::Full);
  t0 = std::chrono::steady_clock::now();
  EXPECT_THROW(q.put(3, 0.2s), mp::Full);
  EXPECT_GE(std::chrono::steady_clock::now() - t0, 0.19s);
  EXPECT_EQ(q.qsize(), 2u);
  EXPECT_EQ(q.get_nowait(), 1);
  q.put_nowait(3);
  EXPECT_EQ(q.get(), 2);
  EXPECT_EQ(q.get(), 3);
}

TEST(RedisQueue, PutWaitsForRoomAndGetForAnItem) {
  MP_REQUIRE_REDIS();
  mpr::Queue<int> q(redis_url(), qname(), 1);
  q.put(1);
  std::thread getter([u = redis_url(), n = qname()] {
    mpr::Queue<int> other(u, n);
    std::this_thread::sleep_for(200ms);
    EXPECT_EQ(other.get(), 1);
  });
  q.put(2, 20s);  // blocks until the getter took 1
  getter.join();
  EXPECT_EQ(q.get(), 2);

  std::thread putter([u = redis_url(), n = qname()] {
    mpr::Queue<int> other(u, n, 1);
    std::this_thread::sleep_for(200ms);
    other.put(3);
  });
  EXPECT_EQ(q.get(20s), 3);  // blocks until the putter put
  putter.join();
}

TEST(RedisQueue, PutManyGetMany) {
  MP_REQUIRE_REDIS();
  mpr::Queue<int> q(redis_url(), qname());
  std::vector<int> items(25000);
  for (int i = 0; i < 25000; ++i) items[i] = i;
  q.put_many(items);
  EXPECT_EQ(q.qsize(), 25000u);
  std::vector<int> got;
  while (got.size() < items.size()) {
    auto part = q.get_many(10000, 5s);
    EXPECT_LE(part.size(), 10000u);
    got.insert(got.end(), part.begin(), part.end());
  }
  EXPECT_EQ(got, items);
  EXPECT_THROW(q.get_many(10, 0.05s), mp::Empty);
  EXPECT_TRUE(q.get_many(0).empty());

  mpr::Queue<int> bounded(redis_url(), qname("bounded"), 3);
  EXPECT_THROW(bounded.put_many(std::vector<int>{1, 2, 3, 4}, 0.1s), mp::Full);
  EXPECT_EQ(bounded.get_many(10), (std::vector<int>{1, 2, 3}));
}

TEST(RedisQueue, CloseStopsThisHandleOnly) {
  MP_REQUIRE_REDIS();
  mpr::Queue<int> q(redis_url(), qname());
  mpr::Queue<int> other(redis_url(), qname());
  q.put(1);
  q.close();
  EXPECT_TRUE(q.closed());
  EXPECT_THROW(q.put(2), mp::QueueClosed);
  other.put(3);
  EXPECT_EQ(q.get(), 1);  // a closed handle still gets
  EXPECT_EQ(q.get(), 3);
}

TEST(RedisQueue, ShutdownDrainsThenEveryGetFails) {
  MP_REQUIRE_REDIS();
  mpr::Queue<int> q(redis_url(), qname());
  mpr::Queue<int> other(redis_url(), qname());
  q.put(1);
  q.put(2);
  q.shutdown();
  EXPECT_TRUE(other.is_shutdown());
  EXPECT_THROW(other.put(3), mp::QueueClosed);
  EXPECT_EQ(other.get(), 1);
  EXPECT_EQ(other.get_nowait(), 2);
  EXPECT_THROW(other.get(5s), mp::QueueClosed);
  EXPECT_THROW(q.get_nowait(), mp::QueueClosed);
  q.unlink();  // a queue outlives its handles on the server; unlink() is the way to forget it
  EXPECT_FALSE(q.is_shutdown());
  q.put(4);
  EXPECT_EQ(q.get(), 4);
}

TEST(RedisQueue, ShutdownWakesAWaitingGetter) {
  MP_REQUIRE_REDIS();
  mpr::Queue<int> q(redis_url(), qname());
  std::atomic<bool> closed{false};
  std::thread getter([&, u = redis_url(), n = qname()] {
    mpr::Queue<int> other(u, n);
    try {
      other.get(30s);
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
}

TEST(RedisQueue, ShutdownImmediateDropsItemsAndReleasesJoin) {
  MP_REQUIRE_REDIS();
  mpr::JoinableQueue<int> q(redis_url(), qname());
  q.put(1);
  q.put(2);
  q.shutdown(true);
  EXPECT_THROW(q.get_nowait(), mp::QueueClosed);
  EXPECT_EQ(q.qsize(), 0u);
  EXPECT_TRUE(q.join(5s));
}

TEST(RedisQueue, JoinableCountsTaskDone) {
  MP_REQUIRE_REDIS();
  mpr::JoinableQueue<int> q(redis_url(), qname());
  EXPECT_TRUE(q.join(0s));
  q.put(1);
  q.put_many(std::vector<int>{2, 3});
  EXPECT_FALSE(q.join(0.1s));
  for (int i = 0; i < 3; ++i) {
    q.get();
    q.task_done();
  }
  EXPECT_TRUE(q.join(0s));
  EXPECT_THROW(q.task_done(), mp::ProcessError);
}

TEST(RedisQueue, ReliableItemsStayUntilAcked) {
  MP_REQUIRE_REDIS();
  const mpr::Options reliable{.reliable = true, .heartbeat_ttl = 1s};
  {
    mpr::Queue<int> q(redis_url(), qname(), 0, reliable);
    q.put_many(std::vector<int>{1, 2, 3});
    EXPECT_EQ(q.get(), 1);
    EXPECT_EQ(q.get_many(2), (std::vector<int>{2, 3}));
    EXPECT_EQ(q.unacked(), 3u);
    q.ack(2);
    EXPECT_EQ(q.unacked(), 1u);
    EXPECT_THROW(q.ack(2), mp::ProcessError);
  }  // a handle going away gives back what it did not ack
  mpr::Queue<int> q(redis_url(), qname());
  EXPECT_EQ(q.get_nowait(), 3);
  EXPECT_THROW(q.get_nowait(), mp::Empty);
}

TEST(RedisQueue, ReliableBusyConsumerKeepsItsItemsWhileItBeats) {
  MP_REQUIRE_REDIS();
  const mpr::Options reliable{.reliable = true, .heartbeat_ttl = 0.5s};
  mpr::Queue<int> busy(redis_url(), qname(), 0, reliable);
  mpr::Queue<int> other(redis_url(), qname(), 0, reliable);
  busy.put(1);
  EXPECT_EQ(busy.get(), 1);
  std::atomic<bool> stop{false};
  std::thread beating([&] {
    while (!stop) {
      busy.heartbeat();
      std::this_thread::sleep_for(100ms);
    }
  });
  EXPECT_THROW(other.get(1.5s), mp::Empty);  // alive: its item stays with it
  stop = true;
  beating.join();
  // Silent for longer than its heartbeat: the item is handed out again, and the busy consumer
  // learns at its next call that it no longer holds it.
  EXPECT_EQ(other.get(10s), 1);
  EXPECT_THROW(busy.get_nowait(), mp::Empty);
  EXPECT_EQ(busy.unacked(), 0u);
  other.ack();
}

// A reliable get whose BLMOVE moved an item but whose reply was lost: the item is in this
// consumer's processing list without the consumer knowing it. It must come back (not be acked in
// place of the item the consumer got next, and so never delivered).
//
// The item must arrive while the consumer waits in BLMOVE, not in the take script it runs
// between two of BLMOVE's 0.2 s slices (that reply is not the one dropped): so the item is put
// once the server shows the consumer blocked, and a round in which it still went by the script
// is run again.
TEST(RedisQueue, ReliableItemMovedInALostReplyIsDeliveredAnyway) {
  MP_REQUIRE_REDIS();
  for (int round = 0; round < 5; ++round) {
    LossyProxy proxy(RedisServer::instance()->port());
    const mpr::Options reliable{.reliable = true, .heartbeat_ttl = 30s};
    const std::string name = qname("round" + std::to_string(round));
    mpr::Queue<int> q(proxy.url(), name, 0, reliable);
    mpr::Queue<int> feeder(redis_url(), name);
    std::multiset<int> delivered;
    std::thread consumer([&] {
      delivered.insert(q.get(30s));  // waits in BLMOVE: the queue is empty
      q.ack();
    });
    ASSERT_TRUE(eventually([] { return blocked_clients(*RedisServer::instance()) >= 1; }, 10s));
    proxy.drop_next_reply_to({"BLMOVE"});
    feeder.put(1);
    if (!eventually([&] { return proxy.dropped(); }, 5s)) {  // taken by the script: again
      consumer.join();
      feeder.unlink();
      continue;
    }
    feeder.put(2);
    consumer.join();
    try {
      for (;;) {
        delivered.insert(q.get(1s));
        q.ack();
      }
    } catch (const mp::Empty&) {
    }
    EXPECT_EQ(std::set<int>(delivered.begin(), delivered.end()), (std::set<int>{1, 2}));
    EXPECT_EQ(q.unacked(), 0u);
    feeder.unlink();
    return;
  }
  FAIL() << "in 5 rounds the item never went by a BLMOVE whose reply could be dropped";
}

// An ack whose reply was lost is sent again: it must not ack more than it was asked to (an item
// acked without being handed out is never delivered).
TEST(RedisQueue, ReliableAckWithALostReplyAcksOnce) {
  MP_REQUIRE_REDIS();
  LossyProxy proxy(RedisServer::instance()->port());
  const mpr::Options reliable{.reliable = true, .heartbeat_ttl = 30s};
  mpr::Queue<int> other(redis_url(), qname());
  {
    mpr::Queue<int> q(proxy.url(), qname(), 0, reliable);
    q.put_many(std::vector<int>{1, 2, 3});
    EXPECT_EQ(q.get_many(3), (std::vector<int>{1, 2, 3}));
    proxy.drop_next_reply_to({"RPOP"});
    q.ack();
    EXPECT_TRUE(proxy.dropped());
    EXPECT_EQ(q.unacked(), 2u);
  }  // gives back what it did not ack
  EXPECT_EQ(other.get_many(10, 5s), (std::vector<int>{2, 3}));
  other.unlink();
}

// A task_done() whose reply was lost is sent again: it must count (and ack) once, or join()
// would return with an item still unfinished, and the last task_done() be "one too many".
TEST(RedisQueue, ReliableTaskDoneWithALostReplyCountsOnce) {
  MP_REQUIRE_REDIS();
  LossyProxy proxy(RedisServer::instance()->port());
  const mpr::Options reliable{.reliable = true, .heartbeat_ttl = 30s};
  mpr::JoinableQueue<int> feeder(redis_url(), qname());
  mpr::JoinableQueue<int> q(proxy.url(), qname(), 0, reliable);
  feeder.put_many(std::vector<int>{1, 2});
  EXPECT_EQ(q.get(30s), 1);
  // task_done()'s script is the only command of q that names the unfinished count.
  proxy.drop_next_reply_to({"unfinished"});
  q.task_done();
  EXPECT_TRUE(proxy.dropped());
  EXPECT_EQ(q.unacked(), 0u);
  EXPECT_FALSE(feeder.join(0.3s)) << "item 2 is not done";
  EXPECT_EQ(q.get(30s), 2);
  EXPECT_NO_THROW(q.task_done());
  EXPECT_TRUE(feeder.join(30s));
  feeder.unlink();
}

TEST(RedisQueue, ServerRestartLosesNothingThatWasPut) {
  MP_REQUIRE_REDIS();
  mpr::Queue<int> q(redis_url(), qname());
  mpr::JoinableQueue<int> counted(redis_url(), qname("counted"));
  for (int i = 0; i < 100; ++i) q.put(i);
  counted.put(1);
  ASSERT_TRUE(RedisServer::instance()->restart(SIGKILL));  // a crash, not a clean shutdown
  for (int i = 100; i < 200; ++i) q.put(i);                // reconnects
  EXPECT_EQ(q.qsize(), 200u);
  for (int i = 0; i < 200; ++i) EXPECT_EQ(q.get(5s), i);
  EXPECT_FALSE(counted.join(0s));
  counted.get();
  counted.task_done();
  EXPECT_TRUE(counted.join(0s));

  // A getter waiting while the server goes away and comes back gets the item put after it.
  // (The server is restarted from this thread: its parent-death signal follows the thread.)
  int got = -1;
  std::thread getter([&, u = redis_url(), n = qname()] {
    mpr::Queue<int> other(u, n);
    got = other.get(30s);
  });
  std::this_thread::sleep_for(300ms);
  ASSERT_TRUE(RedisServer::instance()->restart());
  std::this_thread::sleep_for(300ms);
  q.put(42);
  getter.join();
  EXPECT_EQ(got, 42);
}

// ---- processes ----------------------------------------------------------------------------------

class RedisQueueProcesses : public StartMethodTest {};

TEST_P(RedisQueueProcesses, ProducersAndConsumersShareQueuesByName) {
  MP_REQUIRE_REDIS();
  mpr::Queue<int64_t> q(redis_url(), qname("work"), 50);
  mpr::Queue<int64_t> out(redis_url(), qname("out"));
  constexpr int64_t kEach = 200;
  std::vector<mp::Process> procs;
  procs.emplace_back(ctx(), produce, q, 0, kEach);
  procs.emplace_back(ctx(), produce, q, 1000, kEach);
  procs.emplace_back(ctx(), consume, q, out, static_cast<int>(kEach));
  procs.emplace_back(ctx(), consume, q, out, static_cast<int>(kEach));
  for (auto& p : procs) p.start();
  std::multiset<int64_t> got;
  for (int i = 0; i < 2 * kEach; ++i) got.insert(out.get(60s));
  for (auto& p : procs) {
    EXPECT_TRUE(p.join(30s));
    EXPECT_EQ(p.exitcode(), 0);
  }
  std::multiset<int64_t> want;
  for (int64_t i = 0; i < kEach; ++i) {
    want.insert(i);
    want.insert(1000 + i);
  }
  EXPECT_EQ(got, want);
  EXPECT_TRUE(q.empty());
}

TEST_P(RedisQueueProcesses, JoinWaitsForTaskDoneInOtherProcesses) {
  MP_REQUIRE_REDIS();
  mpr::JoinableQueue<int> q(redis_url(), qname("work"));
  mpr::Queue<int> out(redis_url(), qname("out"));
  mp::Process worker(ctx(), double_and_mark_done, q, out, 20);
  worker.start();
  for (int i = 0; i < 20; ++i) q.put(i);
  EXPECT_TRUE(q.join(60s));
  EXPECT_EQ(out.qsize(), 20u);
  EXPECT_TRUE(worker.join(30s));
  EXPECT_EQ(worker.exitcode(), 0);
}

TEST_P(RedisQueueProcesses, AJoinableQueuePassedToAChildStaysJoinable) {
  MP_REQUIRE_REDIS();
  mpr::JoinableQueue<int> q(redis_url(), qname());
  mp::Process producer(ctx(), produce_joinable, q, 10);
  producer.start();
  EXPECT_TRUE(producer.join(30s));
  EXPECT_EQ(producer.exitcode(), 0);
  EXPECT_FALSE(q.join(0s));  // the child's puts were counted
  for (int i = 0; i < 10; ++i) {
    EXPECT_EQ(q.get(5s), i);
    q.task_done();
  }
  EXPECT_TRUE(q.join(0s));
}

TEST_P(RedisQueueProcesses, ReliableItemOfAKilledConsumerComesBack) {
  MP_REQUIRE_REDIS();
  const mpr::Options reliable{.reliable = true, .heartbeat_ttl = 1s};
  mpr::Queue<int> q(redis_url(), qname("work"), 0, reliable);
  mpr::Queue<int> got(redis_url(), qname("got"));
  q.put(7);
  q.put(8);
  mp::Process consumer(ctx(), take_one_then_hang, q, got);
  consumer.start();
  ASSERT_EQ(got.get(60s), 7);
  consumer.kill();
  consumer.join(30s);
  EXPECT_EQ(consumer.exitcode(), -SIGKILL);
  // 7 comes back once the dead consumer's heartbeat runs out (8 was there all along).
  std::set<int> taken{q.get(30s), q.get(30s)};
  EXPECT_EQ(taken, (std::set<int>{7, 8}));
  q.ack(2);
  EXPECT_THROW(q.get_nowait(), mp::Empty);
}

MP_ALL_START_METHODS(RedisQueueProcesses);
