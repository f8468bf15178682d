// Queue, JoinableQueue, SimpleQueue: CPython's _TestQueue / TestSimpleQueue semantics, each body
// under fork, spawn and forkserver.
#include <unistd.h>
#include <numeric>
#include <ranges>
#include <set>
#include <string>
#include <thread>

#include "big_item_stack.hpp"
#include "start_methods.hpp"

using namespace std::chrono_literals;

namespace {

void put_range(mp::Queue<int64_t> q, int64_t from, int64_t to) {
  for (int64_t i = from; i < to; ++i) q.put(i);
}

void echo_strings(mp::Queue<std::string> in, mp::Queue<std::string> out, int n) {
  for (int i = 0; i < n; ++i) out.put(in.get() + "!");
}

void put_big_then_exit(mp::Queue<std::string> q, size_t bytes, int count) {
  for (int i = 0; i < count; ++i) q.put(std::string(bytes, static_cast<char>('a' + i)));
}

void sum_until_closed(mp::Queue<int64_t> in, mp::Queue<int64_t> out) {
  int64_t sum = 0;
  try {
    for (;;) sum += in.get();
  } catch (const mp::ShutDown&) {
  }
  out.put(sum);
}

void consume_and_mark_done(mp::JoinableQueue<int> q, int n) {
  for (int i = 0; i < n; ++i) {
    q.get();
    q.task_done();
  }
}

void get_many_into(mp::Queue<int64_t> in, mp::Queue<int64_t> out, int64_t total) {
  int64_t got = 0, sum = 0;
  while (got < total) {
    auto batch = in.get_many(1000);
    got += static_cast<int64_t>(batch.size());
    sum = std::accumulate(batch.begin(), batch.end(), sum);
  }
  out.put(sum);
}

void pass_queue_through_queue(mp::Queue<mp::Queue<int>> carrier) {
  mp::Queue<int> inner = carrier.get();
  inner.put(1234);
}

}  // namespace

class QueueTest : public StartMethodTest {};

TEST_P(QueueTest, FifoAcrossProcesses) {
  mp::Queue<int64_t> q;
  mp::Process p(ctx(), put_range, q, 0, 1000);
  p.start();
  for (int64_t i = 0; i < 1000; ++i) ASSERT_EQ(q.get(30s), i);
  p.join();
  EXPECT_EQ(p.exitcode(), 0);
  EXPECT_TRUE(q.empty());
}

TEST_P(QueueTest, StringsBothWays) {
  mp::Queue<std::string> in, out;
  mp::Process p(ctx(), echo_strings, in, out, 3);
  p.start();
  for (const char* s : {"a", "hello", ""}) in.put(s);
  EXPECT_EQ(out.get(30s), "a!");
  EXPECT_EQ(out.get(30s), "hello!");
  EXPECT_EQ(out.get(30s), "!");
  p.join();
}

TEST_P(QueueTest, JoinChildBeforeDrainingDoesNotDeadlock) {
  // Python's classic trap: a child that put much data cannot exit until it is read. Here put()
  // returns with the item in shared memory, so the child exits and join() returns.
  mp::Queue<std::string> q;
  mp::Process p(ctx(), put_big_then_exit, q, size_t{1} << 20, 8);
  p.start();
  ASSERT_TRUE(p.join(60s));
  EXPECT_EQ(p.exitcode(), 0);
  EXPECT_EQ(q.qsize(), 8u);
  for (int i = 0; i < 8; ++i) {
    std::string s = q.get();
    ASSERT_EQ(s.size(), size_t{1} << 20);
    EXPECT_EQ(s.front(), 'a' + i);
    EXPECT_EQ(s.back(), 'a' + i);
  }
}

TEST_P(QueueTest, HugeItemsFromAChild) {
  mp::Queue<std::string> q;
  mp::Process p(ctx(), put_big_then_exit, q, size_t{64} << 20, 2);
  p.start();
  for (int i = 0; i < 2; ++i) {
    std::string s = q.get(60s);
    ASSERT_EQ(s.size(), size_t{64} << 20);
    EXPECT_EQ(s.find_first_not_of(static_cast<char>('a' + i)), std::string::npos);
  }
  p.join();
}

TEST_P(QueueTest, ShutdownWakesBlockedGetterInChild) {
  mp::Queue<int64_t> in, out;
  mp::Process p(ctx(), sum_until_closed, in, out);
  p.start();
  for (int64_t i = 1; i <= 100; ++i) in.put(i);
  std::this_thread::sleep_for(50ms);  // let the child block on the empty queue
  in.shutdown();
  EXPECT_EQ(out.get(30s), 5050);
  p.join();
  EXPECT_EQ(p.exitcode(), 0);
}

TEST_P(QueueTest, PutManyGetMany) {
  mp::Queue<int64_t> in, out;
  const int64_t n = 100000;
  mp::Process p(ctx(), get_many_into, in, out, n);
  p.start();
  std::vector<int64_t> xs(n);
  std::iota(xs.begin(), xs.end(), 0);
  in.put_many(xs);
  EXPECT_EQ(out.get(60s), n * (n - 1) / 2);
  p.join();
}

TEST_P(QueueTest, QueueThroughAQueue) {
  mp::Queue<mp::Queue<int>> carrier;
  mp::Queue<int> inner;
  mp::Process p(ctx(), pass_queue_through_queue, carrier);
  p.start();
  carrier.put(inner);
  EXPECT_EQ(inner.get(30s), 1234);
  p.join();
}

TEST_P(QueueTest, JoinableQueueJoinWaitsForTaskDone) {
  mp::JoinableQueue<int> q;
  for (int i = 0; i < 20; ++i) q.put(i);
  EXPECT_FALSE(q.join(10ms));
  mp::Process p(ctx(), consume_and_mark_done, q, 20);
  p.start();
  EXPECT_TRUE(q.join(30s));
  p.join();
  EXPECT_THROW(q.task_done(), mp::ProcessError);
}

MP_ALL_START_METHODS(QueueTest);

// ---- single-process semantics ------------------------------------------------------------------

TEST(Queue, GetTimeoutThrowsEmpty) {
  mp::Queue<int> q;
  auto t0 = std::chrono::steady_clock::now();
  EXPECT_THROW(q.get(100ms), mp::Empty);
  EXPECT_GE(std::chrono::steady_clock::now() - t0, 90ms);
  EXPECT_THROW(q.get_nowait(), mp::Empty);
  EXPECT_THROW(q.get(-1s), mp::Empty);  // a negative timeout is the same as zero
}

TEST(Queue, BoundedPutBlocksThenFull) {
  mp::Queue<int> q(3);
  EXPECT_EQ(q.maxsize(), 3u);
  q.put(1);
  q.put(2);
  q.put_nowait(3);
  EXPECT_TRUE(q.full());
  EXPECT_THROW(q.put_nowait(4), mp::Full);
  auto t0 = std::chrono::steady_clock::now();
  EXPECT_THROW(q.put(4, 100ms), mp::Full);
  EXPECT_GE(std::chrono::steady_clock::now() - t0, 90ms);
  EXPECT_EQ(q.get(), 1);
  q.put(4);
  EXPECT_EQ(q.qsize(), 3u);
  EXPECT_EQ(q.get_many(10), (std::vector<int>{2, 3, 4}));
}

// A producer blocked on a full queue waits a little for room for a batch (fewer looks at the
// consumers' count), but one free slot is enough: the put goes in, well before its timeout.
TEST(Queue, BoundedPutNeedsOnlyOneFreeSlot) {
  mp::Queue<int> q(64);
  std::vector<int> xs(64, 1);
  q.put_many(xs);
  std::thread consumer([q]() mutable {
    std::this_thread::sleep_for(20ms);
    EXPECT_EQ(q.get(), 1);  // one slot, then nothing more
  });
  auto t0 = std::chrono::steady_clock::now();
  q.put(2, 10s);
  EXPECT_LT(std::chrono::steady_clock::now() - t0, 5s);
  consumer.join();
  EXPECT_EQ(q.qsize(), 64u);
  EXPECT_THROW(q.put_nowait(3), mp::Full);
}

TEST(Queue, BoundedPutManyWaitsForRoom) {
  mp::Queue<int> q(10);
  std::thread consumer([q]() mutable {
    int64_t sum = 0;
    for (int i = 0; i < 1000; ++i) sum += q.get();
    EXPECT_EQ(sum, 999 * 1000 / 2);
  });
  std::vector<int> xs(1000);
  std::iota(xs.begin(), xs.end(), 0);
  q.put_many(xs);
  consumer.join();
}

TEST(Queue, ShutdownRefusesPutsAndDrainsGets) {
  mp::Queue<int> q;
  q.put(1);
  q.shutdown();
  EXPECT_TRUE(q.is_shutdown());
  EXPECT_FALSE(q.closed());
  EXPECT_THROW(q.put(2), mp::ShutDown);
  EXPECT_EQ(q.get(), 1);
  EXPECT_THROW(q.get(), mp::ShutDown);
}

TEST(Queue, MixOfTinyAndLargeKeepsOrder) {
  mp::Queue<std::string> q;
  std::vector<size_t> sizes;
  for (int i = 0; i < 200; ++i) sizes.push_back(i % 10 == 0 ? (size_t{1} << (10 + i % 13)) : i % 7);
  sizes.push_back(size_t{5} << 20);  // out of line
  for (size_t i = 0; i < sizes.size(); ++i) q.put(std::string(sizes[i], static_cast<char>(i)));
  for (size_t i = 0; i < sizes.size(); ++i) {
    std::string s = q.get();
    ASSERT_EQ(s.size(), sizes[i]);
    if (!s.empty()) {
      EXPECT_EQ(s[s.size() / 2], static_cast<char>(i));
    }
  }
}

TEST(Queue, GetManyTakesWhatIsThereInOrder) {
  mp::Queue<int64_t> q;
  std::vector<int64_t> xs(5000);
  std::iota(xs.begin(), xs.end(), 0);
  q.put_many(xs);
  std::vector<int64_t> got = q.get_many(3);
  EXPECT_EQ(got, (std::vector<int64_t>{0, 1, 2}));
  while (got.size() < xs.size()) {
    auto more = q.get_many(100000);  // more than is there: takes what is there
    ASSERT_FALSE(more.empty());
    got.insert(got.end(), more.begin(), more.end());
  }
  EXPECT_EQ(got, xs);
  EXPECT_THROW(q.get_many(10, 10ms), mp::Empty);
}

TEST(Queue, UnboundedGrowsWithBacklog) {
  mp::Queue<int64_t> q;
  const int64_t n = 2'000'000;  // 32 MB of records: several ring growths
  for (int64_t i = 0; i < n; ++i) q.put(i);
  EXPECT_EQ(q.qsize(), static_cast<size_t>(n));
  for (int64_t i = 0; i < n; ++i) ASSERT_EQ(q.get(), i);
  EXPECT_TRUE(q.empty());
}

TEST(Queue, HandlesShareOneQueue) {
  mp::Queue<int> a;
  mp::Queue<int> b = a;
  a.put(7);
  EXPECT_EQ(b.get(), 7);
  EXPECT_TRUE(a == b);
  EXPECT_FALSE(a == mp::Queue<int>());
}

TEST(SimpleQueue, PutGetEmptyClose) {
  mp::SimpleQueue<std::string> q;
  EXPECT_TRUE(q.empty());
  q.put("x");
  EXPECT_FALSE(q.empty());
  EXPECT_EQ(q.get(), "x");
  q.close();  // this handle puts no more (Python's close)
  EXPECT_THROW(q.put("y"), mp::ProcessError);
}

TEST(Queue, NoSegmentLeftAfterLastHandle) {
  std::string name;
  {
    mp::Queue<int> q;
    q.put(1);
    name = q.name();
    EXPECT_EQ(access(("/dev/shm" + name).c_str(), F_OK), 0);
  }
  EXPECT_NE(access(("/dev/shm" + name).c_str(), F_OK), 0);
}

TEST(Queue, PutManyTakesAnyInputRange) {
  mp::Queue<int64_t> q;
  q.put_many(std::vector<int64_t>{1, 2});  // contiguous, of T: put from its own storage
  q.put_many(std::set<int64_t>{4, 3});     // not contiguous: copied first
  q.put_many(std::vector<int>{5, 6});      // of another type: converted first
  q.put_many(std::views::iota(7, 9));      // a view
  EXPECT_EQ(q.get_many(100), (std::vector<int64_t>{1, 2, 3, 4, 5, 6, 7, 8}));
}

TEST(Queue, GetOfAPlainItemNeedsStackForOneCopyOfIt) {
  big_item_stack::expect_get_needs_stack_for_one_copy<mp::Queue<big_item_stack::BigItem>>();
}
