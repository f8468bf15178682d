// LifoQueue and PriorityQueue: Python's queue.LifoQueue / queue.PriorityQueue semantics with
// Queue's surface, across processes under fork, spawn and forkserver, and a kill -9 stress test.
#include <unistd.h>
#include <algorithm>
#include <csignal>
#include <cstdlib>
#include <numeric>
#include <optional>
#include <random>
#include <set>
#include <string>
#include <thread>
#include <unordered_set>
#include <utility>
#include <vector>

#include <multiproc/ordered_queues.hpp>

#include "big_item_stack.hpp"
#include "start_methods.hpp"

using namespace std::chrono_literals;

namespace {

using Keyed = std::pair<int, std::string>;

std::vector<int64_t> shuffled(int64_t n, unsigned seed) {
  std::vector<int64_t> v(static_cast<size_t>(n));
  std::iota(v.begin(), v.end(), 0);
  std::shuffle(v.begin(), v.end(), std::mt19937(seed));
  return v;
}

// Segments in /dev/shm created by this process (names "/<prefix><pid>_...").
int own_segments() {
  return count_shm_files(std::to_string(getpid()) + "_");
}

// ---- child tasks --------------------------------------------------------------------------------

void lifo_put_range(mp::LifoQueue<int64_t> q, int64_t n) {
  for (int64_t i = 0; i < n; ++i) q.put(i);
}

void pq_put_keyed(mp::PriorityQueue<Keyed> q, int n, unsigned seed) {
  for (int64_t k : shuffled(n, seed)) q.put({static_cast<int>(k), "item" + std::to_string(k)});
}

void pq_consume(mp::PriorityQueue<int64_t> q, mp::Queue<int64_t> out, int n) {
  for (int i = 0; i < n; ++i) out.put(q.get(30s));
}

void lifo_drain_until_closed(mp::LifoQueue<std::string> q, mp::Queue<std::string> out) {
  try {
    for (;;) out.put(q.get());
  } catch (const mp::ShutDown&) {
  }
  out.put("closed");
}

void pq_produce(mp::PriorityQueue<int64_t, std::greater<int64_t>> q, int64_t from, int64_t to) {
  std::vector<int64_t> xs(static_cast<size_t>(to - from));
  std::iota(xs.begin(), xs.end(), from);
  for (size_t i = 0; i < xs.size(); i += 100)
    q.put_many(
        std::vector<int64_t>(xs.begin() + static_cast<ptrdiff_t>(i),
                             xs.begin() + static_cast<ptrdiff_t>(std::min(i + 100, xs.size()))));
}

void pq_sum_until_closed(mp::PriorityQueue<int64_t, std::greater<int64_t>> q,
                         mp::Queue<std::pair<int64_t, int64_t>> out) {
  int64_t sum = 0, count = 0;
  try {
    for (;;) {
      auto batch = q.get_many(7);
      for (int64_t x : batch) sum += x;
      count += static_cast<int64_t>(batch.size());
    }
  } catch (const mp::ShutDown&) {
  }
  out.put({sum, count});
}

void big_item_child(mp::PriorityQueue<std::string> q, size_t bytes) {
  q.put(std::string(bytes, 'z'));
  q.put("a");
}

// Put and get at random until killed. Every value is reported to `attempts` before it is put and
// to `got` after it was got, so the parent can account for each one.
template <class Q>
void hammer(Q pq, mp::Queue<int64_t> attempts, mp::Queue<int64_t> got, int64_t id, unsigned seed) {
  std::mt19937 rng(seed);
  int64_t seq = 0;
  std::optional<int64_t> pending;  // reported, not yet put (a bounded queue was full)
  for (;;) {
    if (rng() % 2) {
      if (!pending) {
        pending = (id << 32) | seq++;
        attempts.put(*pending);
      }
      try {
        pq.put(*pending, 2ms);
        pending.reset();
      } catch (const mp::Full&) {
      }
    } else {
      try {
        got.put(pq.get(2ms));
      } catch (const mp::Empty&) {
      }
    }
  }
}

void put_through_carrier(mp::LifoQueue<mp::Queue<int>> carrier) {
  mp::Queue<int> inner = carrier.get(30s);
  inner.put(1234);
}

struct CrashReport {
  int kills = 0;
  size_t attempted = 0, got = 0, left = 0, lost = 0;
};

// Children hammer q with put/get while the parent SIGKILLs them at random instants; then checks
// that q works, that every item got was put and was got once, and that at most one item in
// flight was lost per kill. Returns what remained in q, in get order.
template <class Q>
std::vector<int64_t> kill_children_at_random(Q q, int children, int kills_wanted,
                                             CrashReport& report) {
  mp::Queue<int64_t> attempts, got;
  auto context = mp::get_context(mp::StartMethod::fork);
  std::mt19937 rng(12345);
  int64_t next_id = 1;
  std::vector<mp::Process> kids;
  auto spawn_one = [&] {
    mp::Process p(context, hammer<Q>, q, attempts, got, next_id, static_cast<unsigned>(rng()));
    ++next_id;
    p.start();
    return p;
  };
  for (int i = 0; i < children; ++i) kids.push_back(spawn_one());
  int kills = 0;
  for (int k = 0; k < kills_wanted; ++k) {
    std::this_thread::sleep_for(std::chrono::microseconds(rng() % 30000));
    auto& victim = kids[rng() % kids.size()];
    victim.kill();
    EXPECT_TRUE(victim.join(10s));
    ++kills;
    victim = spawn_one();
  }
  for (auto& p : kids) {
    p.kill();
    EXPECT_TRUE(p.join(10s));
    ++kills;
  }

  // What is left comes out, and the queue still works.
  std::vector<int64_t> left;
  while (!q.empty()) left.push_back(q.get(5s));
  q.put(-5);
  q.put(-6);
  EXPECT_EQ(q.get_many(2).size(), 2u);
  EXPECT_TRUE(q.empty());

  std::unordered_set<int64_t> attempted, taken;
  try {
    for (;;) attempted.insert(attempts.get_nowait());
  } catch (const mp::Empty&) {
  }
  size_t bad = 0;
  auto take = [&](int64_t v) {
    if (!attempted.count(v) && bad++ < 5) ADD_FAILURE() << "got " << v << ", never put";
    if (!taken.insert(v).second && bad++ < 5) ADD_FAILURE() << "got " << v << " twice";
  };
  size_t got_count = 0;
  try {
    for (;;) {
      take(got.get_nowait());
      ++got_count;
    }
  } catch (const mp::Empty&) {
  }
  for (int64_t v : left) take(v);
  report.kills = kills;
  report.attempted = attempted.size();
  report.got = got_count;
  report.left = left.size();
  report.lost = attempted.size() - std::min(attempted.size(), taken.size());
  EXPECT_EQ(bad, 0u);
  EXPECT_LE(report.lost, static_cast<size_t>(kills));
  EXPECT_GT(got_count, 100u) << "the children should have done real work";
  std::printf("[ crash    ] %d kills, %zu attempted puts, %zu got, %zu left, %zu lost\n", kills,
              report.attempted, report.got, report.left, report.lost);
  return left;
}

}  // namespace

// ---- single-process semantics -------------------------------------------------------------------

TEST(LifoQueue, GetReturnsLastPut) {
  mp::LifoQueue<int> q;
  for (int i = 0; i < 5; ++i) q.put(i);
  EXPECT_EQ(q.qsize(), 5u);
  for (int i = 4; i >= 0; --i) EXPECT_EQ(q.get(), i);
  EXPECT_TRUE(q.empty());
  q.put(1);
  q.put(2);
  EXPECT_EQ(q.get(), 2);
  q.put(3);
  EXPECT_EQ(q.get(), 3);
  EXPECT_EQ(q.get(), 1);
}

TEST(LifoQueue, StringsOfManySizes) {
  mp::LifoQueue<std::string> q;
  std::vector<std::string> xs;
  for (int i = 0; i < 3000; ++i)
    xs.push_back(std::string(static_cast<size_t>(i * 37 % 1000), static_cast<char>('a' + i % 26)));
  for (auto& x : xs) q.put(x);
  for (auto it = xs.rbegin(); it != xs.rend(); ++it) ASSERT_EQ(q.get(), *it);
  EXPECT_THROW(q.get_nowait(), mp::Empty);
}

TEST(PriorityQueue, IntsComeOutSmallestFirst) {
  mp::PriorityQueue<int64_t> q;
  auto xs = shuffled(5000, 1);
  for (int64_t x : xs) q.put(x);
  for (int64_t i = 0; i < 5000; ++i) ASSERT_EQ(q.get(), i);
  EXPECT_TRUE(q.empty());
}

TEST(PriorityQueue, DuplicatesAndInterleaving) {
  mp::PriorityQueue<int> q;
  std::multiset<int> model;
  std::mt19937 rng(7);
  for (int i = 0; i < 20000; ++i) {
    if (model.empty() || rng() % 3 != 0) {
      int x = static_cast<int>(rng() % 100);
      q.put(x);
      model.insert(x);
    } else {
      ASSERT_EQ(q.get(), *model.begin());
      model.erase(model.begin());
    }
  }
  EXPECT_EQ(q.qsize(), model.size());
  for (int x : model) ASSERT_EQ(q.get(), x);
}

TEST(PriorityQueue, PairsOfIntAndString) {
  mp::PriorityQueue<Keyed> q;
  q.put({2, "b"});
  q.put({1, "z"});
  q.put({2, "a"});
  q.put({0, std::string(100000, 'x')});
  q.put({1, "y"});
  EXPECT_EQ(q.get().first, 0);
  EXPECT_EQ(q.get(), Keyed(1, "y"));
  EXPECT_EQ(q.get(), Keyed(1, "z"));
  EXPECT_EQ(q.get(), Keyed(2, "a"));
  EXPECT_EQ(q.get(), Keyed(2, "b"));
}

TEST(PriorityQueue, CustomCompareGreater) {
  mp::PriorityQueue<double, std::greater<double>> q;
  for (double x : {0.5, 3.0, -1.0, 2.5, 3.0}) q.put(x);
  EXPECT_EQ(q.get_many(10), (std::vector<double>{3.0, 3.0, 2.5, 0.5, -1.0}));
}

TEST(PriorityQueue, StructWithCompareOnAField) {
  struct Job {
    int priority;
    char tag;
  };
  struct ByPriority {
    bool operator()(const Job& a, const Job& b) { return a.priority < b.priority; }  // non-const
  };
  mp::PriorityQueue<Job, ByPriority> q;
  q.put({5, 'e'});
  q.put({1, 'a'});
  q.put({3, 'c'});
  EXPECT_EQ(q.get().tag, 'a');
  EXPECT_EQ(q.get().tag, 'c');
  EXPECT_EQ(q.get().tag, 'e');
}

TEST(OrderedQueues, EmptyTimeouts) {
  mp::LifoQueue<int> l;
  mp::PriorityQueue<std::string> p;
  auto t0 = std::chrono::steady_clock::now();
  EXPECT_THROW(l.get(100ms), mp::Empty);
  EXPECT_GE(std::chrono::steady_clock::now() - t0, 90ms);
  t0 = std::chrono::steady_clock::now();
  EXPECT_THROW(p.get(100ms), mp::Empty);
  EXPECT_GE(std::chrono::steady_clock::now() - t0, 90ms);
  EXPECT_THROW(l.get_nowait(), mp::Empty);
  EXPECT_THROW(p.get_nowait(), mp::Empty);
  EXPECT_THROW(p.get(-1s), mp::Empty);  // a negative timeout is the same as zero
  EXPECT_THROW(p.get_many(5, 10ms), mp::Empty);
}

TEST(OrderedQueues, BoundedFullAndTimeouts) {
  mp::PriorityQueue<int> q(3);
  EXPECT_EQ(q.maxsize(), 3u);
  q.put(3);
  q.put(1);
  q.put_nowait(2);
  EXPECT_TRUE(q.full());
  EXPECT_THROW(q.put_nowait(0), mp::Full);
  auto t0 = std::chrono::steady_clock::now();
  EXPECT_THROW(q.put(0, 100ms), mp::Full);
  EXPECT_GE(std::chrono::steady_clock::now() - t0, 90ms);
  EXPECT_EQ(q.get(), 1);
  q.put(0);
  EXPECT_EQ(q.get_many(10), (std::vector<int>{0, 2, 3}));

  mp::LifoQueue<std::string> l(2);
  l.put("a");
  l.put("b");
  EXPECT_THROW(l.put("c", 20ms), mp::Full);
  EXPECT_THROW(l.put_many(std::vector<std::string>{"x"}, 0s), mp::Full);
  EXPECT_EQ(l.get(), "b");
  // put_many puts what fits, then throws Full when the timeout passes.
  EXPECT_THROW(l.put_many(std::vector<std::string>{"c", "d"}, 20ms), mp::Full);
  EXPECT_EQ(l.get_many(5), (std::vector<std::string>{"c", "a"}));
}

TEST(OrderedQueues, BoundedPutWaitsForAConsumerThread) {
  mp::PriorityQueue<int> q(4);
  std::thread consumer([q]() mutable {
    int64_t sum = 0;
    for (int i = 0; i < 2000; ++i) sum += q.get(30s);
    EXPECT_EQ(sum, 1999 * 2000 / 2);
  });
  std::vector<int> xs(2000);
  std::iota(xs.begin(), xs.end(), 0);
  q.put_many(xs);
  consumer.join();
  EXPECT_TRUE(q.empty());
}

TEST(OrderedQueues, ShutdownRefusesPutsDrainsGetsAndWakesGetters) {
  mp::PriorityQueue<int> q;
  q.put(2);
  q.put(1);
  q.shutdown();
  EXPECT_TRUE(q.is_shutdown());
  EXPECT_THROW(q.put(3), mp::ShutDown);
  EXPECT_EQ(q.get(), 1);
  EXPECT_EQ(q.get(), 2);
  EXPECT_THROW(q.get(), mp::ShutDown);

  mp::LifoQueue<int> l;
  std::thread getter([l]() mutable { EXPECT_THROW(l.get(), mp::ShutDown); });
  std::this_thread::sleep_for(50ms);
  l.shutdown();
  getter.join();
}

TEST(OrderedQueues, SixteenMiBItemAmongSmallOnes) {
  const size_t big = size_t{16} << 20;
  mp::PriorityQueue<std::string> p;
  p.put("m");
  p.put(std::string(big, 'b'));
  p.put("a");
  EXPECT_EQ(p.get(), "a");
  std::string s = p.get();
  ASSERT_EQ(s.size(), big);
  EXPECT_EQ(s.find_first_not_of('b'), std::string::npos);
  EXPECT_EQ(p.get(), "m");

  mp::LifoQueue<std::vector<char>> l;
  l.put(std::vector<char>(big, 'x'));
  for (int i = 0; i < 100; ++i) l.put(std::vector<char>(static_cast<size_t>(i), 'y'));
  for (int i = 99; i >= 0; --i) ASSERT_EQ(l.get().size(), static_cast<size_t>(i));
  EXPECT_EQ(l.get(), std::vector<char>(big, 'x'));
}

TEST(OrderedQueues, ManySmallItemsGrowAndShrink) {
  const int64_t n = 300000;
  mp::PriorityQueue<int64_t> q;
  auto xs = shuffled(n, 3);
  q.put_many(xs);
  EXPECT_EQ(q.qsize(), static_cast<size_t>(n));
  int64_t next = 0;
  while (next < n) {
    auto batch = q.get_many(1000);
    for (int64_t x : batch) ASSERT_EQ(x, next++);
  }
  EXPECT_TRUE(q.empty());
  mp::LifoQueue<int64_t> l;
  l.put_many(xs);
  auto all = l.get_many(static_cast<size_t>(n));
  std::reverse(all.begin(), all.end());
  EXPECT_EQ(all, xs);
}

TEST(OrderedQueues, PutManyGetMany) {
  mp::LifoQueue<int> l;
  l.put_many(std::vector<int>{1, 2, 3});
  std::set<int> more{4, 5};
  l.put_many(more);  // any input range
  EXPECT_EQ(l.get_many(3), (std::vector<int>{5, 4, 3}));
  EXPECT_EQ(l.get_many(10), (std::vector<int>{2, 1}));
  mp::PriorityQueue<std::string> p;
  p.put_many(std::vector<std::string>{"pear", "apple", "fig"});
  EXPECT_EQ(p.get_many(2), (std::vector<std::string>{"apple", "fig"}));
  EXPECT_EQ(p.get_many(2), (std::vector<std::string>{"pear"}));
}

TEST(OrderedQueues, ThreadsShareOneQueue) {
  mp::PriorityQueue<int64_t> q;
  std::vector<std::thread> ts;
  std::atomic<int64_t> sum{0};
  for (int t = 0; t < 3; ++t)
    ts.emplace_back([q, t]() mutable {
      for (int64_t i = 0; i < 5000; ++i) q.put(t * 5000 + i);
    });
  for (int t = 0; t < 3; ++t)
    ts.emplace_back([q, &sum]() mutable {
      for (int i = 0; i < 5000; ++i) sum += q.get(30s);
    });
  for (auto& t : ts) t.join();
  EXPECT_EQ(sum.load(), 15000LL * 14999 / 2);
}

TEST(OrderedQueues, HandlesShareOneQueue) {
  mp::LifoQueue<int> a;
  mp::LifoQueue<int> b = a;
  a.put(7);
  EXPECT_EQ(b.get(), 7);
  EXPECT_TRUE(a == b);
  EXPECT_FALSE(a == mp::LifoQueue<int>());
  EXPECT_FALSE(a.name().empty());
}

TEST(OrderedQueues, NoSegmentLeftAfterLastHandle) {
  int before = own_segments();
  std::string name;
  {
    mp::PriorityQueue<std::string> q;
    name = q.name();
    q.put(std::string(size_t{8} << 20, 'q'));  // grows the store (a switch)
    for (int i = 0; i < 1000; ++i) q.put(std::to_string(i));
    EXPECT_EQ(access(("/dev/shm" + name).c_str(), F_OK), 0);
    EXPECT_GT(own_segments(), before);
  }
  EXPECT_NE(access(("/dev/shm" + name).c_str(), F_OK), 0);
  EXPECT_EQ(own_segments(), before);
}

TEST(OrderedQueues, HandleOfTheWrongOrderIsRefused) {
  mp::LifoQueue<int> l;
  std::string wrong, right;  // each serialized handle carries one reference, used by one load
  mp::detail::dump(wrong, l);
  mp::detail::dump(right, l);
  EXPECT_THROW(mp::detail::load<mp::PriorityQueue<int>>(wrong), mp::ProcessError);
  auto same = mp::detail::load<mp::LifoQueue<int>>(right);
  EXPECT_TRUE(same == l);
  same.put(3);
  EXPECT_EQ(l.get(), 3);
}

// ---- across processes, under every start method
// --------------------------------------------------

class OrderedQueueTest : public StartMethodTest {};

TEST_P(OrderedQueueTest, ChildPutsParentGetsLifo) {
  mp::LifoQueue<int64_t> q;
  mp::Process p(ctx(), lifo_put_range, q, 1000);
  p.start();
  ASSERT_TRUE(p.join(60s));
  EXPECT_EQ(p.exitcode(), 0);
  for (int64_t i = 999; i >= 0; --i) ASSERT_EQ(q.get(1s), i);
  EXPECT_TRUE(q.empty());
}

TEST_P(OrderedQueueTest, ChildPutsParentGetsByPriority) {
  mp::PriorityQueue<Keyed> q;
  mp::Process p(ctx(), pq_put_keyed, q, 500, 11u);
  p.start();
  ASSERT_TRUE(p.join(60s));
  EXPECT_EQ(p.exitcode(), 0);
  for (int i = 0; i < 500; ++i) ASSERT_EQ(q.get(1s), Keyed(i, "item" + std::to_string(i)));
}

TEST_P(OrderedQueueTest, ChildConsumesInPriorityOrder) {
  mp::PriorityQueue<int64_t> q;
  mp::Queue<int64_t> out;
  q.put_many(shuffled(1000, 5));
  mp::Process p(ctx(), pq_consume, q, out, 1000);
  p.start();
  for (int64_t i = 0; i < 1000; ++i) ASSERT_EQ(out.get(30s), i);
  p.join();
  EXPECT_EQ(p.exitcode(), 0);
}

TEST_P(OrderedQueueTest, CloseWakesGetterInChild) {
  mp::LifoQueue<std::string> q;
  mp::Queue<std::string> out;
  mp::Process p(ctx(), lifo_drain_until_closed, q, out);
  p.start();
  q.put("x");
  EXPECT_EQ(out.get(30s), "x");
  std::this_thread::sleep_for(50ms);  // let the child block on the empty queue
  q.shutdown();
  EXPECT_EQ(out.get(30s), "closed");
  p.join();
  EXPECT_EQ(p.exitcode(), 0);
}

TEST_P(OrderedQueueTest, ManyProducersAndConsumersOnABoundedQueue) {
  mp::PriorityQueue<int64_t, std::greater<int64_t>> q(16);
  mp::Queue<std::pair<int64_t, int64_t>> out;  // (sum, count) from each consumer
  std::vector<mp::Process> ps;
  ps.emplace_back(ctx(), pq_produce, q, int64_t{0}, int64_t{3000});
  ps.emplace_back(ctx(), pq_produce, q, int64_t{3000}, int64_t{6000});
  ps.emplace_back(ctx(), pq_sum_until_closed, q, out);
  ps.emplace_back(ctx(), pq_sum_until_closed, q, out);
  for (auto& p : ps) p.start();
  ASSERT_TRUE(ps[0].join(60s));
  ASSERT_TRUE(ps[1].join(60s));
  ASSERT_TRUE(eventually([&] { return q.empty(); }));
  q.shutdown();
  int64_t sum = 0, count = 0;
  for (int i = 0; i < 2; ++i) {
    auto [s, c] = out.get(30s);
    sum += s;
    count += c;
  }
  EXPECT_EQ(count, 6000);
  EXPECT_EQ(sum, 6000LL * 5999 / 2);
  for (auto& p : ps) {
    p.join();
    EXPECT_EQ(p.exitcode(), 0);
  }
}

TEST_P(OrderedQueueTest, HugeItemFromAChild) {
  mp::PriorityQueue<std::string> q;
  mp::Process p(ctx(), big_item_child, q, size_t{16} << 20);
  p.start();
  ASSERT_TRUE(p.join(60s));
  EXPECT_EQ(q.get(1s), "a");
  EXPECT_EQ(q.get(1s), std::string(size_t{16} << 20, 'z'));
}

TEST_P(OrderedQueueTest, QueueHandlesTravelThroughALifoQueue) {
  mp::LifoQueue<mp::Queue<int>> carrier;
  mp::Queue<int> inner;
  mp::Process p(ctx(), put_through_carrier, carrier);
  p.start();
  carrier.put(inner);
  EXPECT_EQ(inner.get(30s), 1234);
  p.join();
  EXPECT_EQ(p.exitcode(), 0);
}

MP_ALL_START_METHODS(OrderedQueueTest);

// ---- kill -9 at random instants
// --------------------------------------------------------------------

TEST(OrderedQueues, PriorityQueueSurvivesChildrenKilledAtRandomInstants) {
  mp::PriorityQueue<int64_t> pq;
  CrashReport report;
  auto left = kill_children_at_random(pq, 4, 50, report);
  EXPECT_TRUE(std::is_sorted(left.begin(), left.end())) << "the heap was damaged";
}

TEST(OrderedQueues, LifoQueueSurvivesChildrenKilledAtRandomInstants) {
  mp::LifoQueue<int64_t> q(64);  // bounded: putters also wait, and get killed waiting
  CrashReport report;
  kill_children_at_random(q, 3, 20, report);
}

TEST(LifoQueue, GetOfAPlainItemNeedsStackForOneCopyOfIt) {
  big_item_stack::expect_get_needs_stack_for_one_copy<mp::LifoQueue<big_item_stack::BigItem>>();
}
