// Queue<T>::get_many(std::span<T> out, timeout): a batch got into the caller's buffer. The same
// semantics as get_many(max_items): up to out.size() items that are there, FIFO, Empty after the
// timeout, ShutDown once shut down and drained, ProcessError through a closed handle; an empty
// span returns 0 at once; it fills only the first `count` elements; a producer process under
// every start method; items of serialized types too.
#include <array>
#include <chrono>
#include <cstdint>
#include <span>
#include <string>
#include <thread>
#include <vector>

#include "start_methods.hpp"

using namespace std::chrono_literals;

namespace {

constexpr int64_t kUntouched = -7;

struct Pair {
  int32_t a;
  double b;
};

void put_range_in_batches(mp::Queue<int64_t> q, int64_t n) {
  std::vector<int64_t> batch;
  for (int64_t i = 0; i < n; ++i) {
    batch.push_back(i);
    if (batch.size() == 37 || i + 1 == n) {
      q.put_many(batch);
      batch.clear();
    }
  }
}

void put_strings(mp::Queue<std::string> q, int n) {
  for (int i = 0; i < n; ++i)
    q.put(std::string(static_cast<size_t>(i % 50), 'x') + std::to_string(i));
}

}  // namespace

TEST(QueueGetManySpan, TakesWhatIsThereUpToTheSpanAndReturnsTheCount) {
  mp::Queue<int64_t> q;
  for (int64_t i = 0; i < 10; ++i) q.put(i);
  std::array<int64_t, 4> small;
  small.fill(kUntouched);
  EXPECT_EQ(q.get_many(std::span(small)), 4u);
  EXPECT_EQ(small, (std::array<int64_t, 4>{0, 1, 2, 3}));

  std::vector<int64_t> big(64, kUntouched);
  EXPECT_EQ(q.get_many(std::span(big), 1s), 6u);  // only what is there
  for (size_t i = 0; i < 6; ++i) EXPECT_EQ(big[i], static_cast<int64_t>(i + 4));
  for (size_t i = 6; i < big.size(); ++i) EXPECT_EQ(big[i], kUntouched) << i;  // left alone
  EXPECT_TRUE(q.empty());

  // A vector converts to the span; the vector form still works beside it.
  q.put_many(std::vector<int64_t>{20, 21});
  EXPECT_EQ(q.get_many(big), 2u);
  EXPECT_EQ(big[0], 20);
  EXPECT_EQ(big[1], 21);
  q.put(30);
  EXPECT_EQ(q.get_many(8), std::vector<int64_t>{30});
}

TEST(QueueGetManySpan, PlainStructsAndSerializedItems) {
  mp::Queue<Pair> q;
  q.put(Pair{1, 1.5});
  q.put(Pair{2, 2.5});
  std::array<Pair, 3> out{};
  ASSERT_EQ(q.get_many(std::span(out)), 2u);
  EXPECT_EQ(out[0].a, 1);
  EXPECT_EQ(out[1].b, 2.5);

  mp::Queue<std::string> s;
  s.put("alpha");
  s.put(std::string(5000, 'z'));
  s.put("");
  std::vector<std::string> got(5, "untouched");
  ASSERT_EQ(s.get_many(std::span(got)), 3u);
  EXPECT_EQ(got[0], "alpha");
  EXPECT_EQ(got[1], std::string(5000, 'z'));
  EXPECT_EQ(got[2], "");
  EXPECT_EQ(got[3], "untouched");
}

TEST(QueueGetManySpan, EmptySpanReturnsZeroAtOnce) {
  mp::Queue<int64_t> q;
  std::span<int64_t> none;
  auto start = std::chrono::steady_clock::now();
  EXPECT_EQ(q.get_many(none), 0u);  // no timeout given, yet no wait on an empty queue
  EXPECT_EQ(q.get_many(none, 5s), 0u);
  EXPECT_LT(std::chrono::steady_clock::now() - start, 4s);
  q.put(1);
  EXPECT_EQ(q.get_many(none), 0u);
  EXPECT_EQ(q.qsize(), 1u);  // nothing taken
}

TEST(QueueGetManySpan, TimeoutsThrowEmpty) {
  mp::Queue<int64_t> q;
  std::array<int64_t, 8> out;
  EXPECT_THROW(q.get_many(std::span(out), 0s), mp::Empty);
  auto start = std::chrono::steady_clock::now();
  EXPECT_THROW(q.get_many(std::span(out), 100ms), mp::Empty);
  EXPECT_GE(std::chrono::steady_clock::now() - start, 90ms);

  // A waiting batch returns as soon as an item comes.
  std::thread t([q]() mutable {
    std::this_thread::sleep_for(50ms);
    q.put(5);
  });
  EXPECT_EQ(q.get_many(std::span(out), 30s), 1u);
  EXPECT_EQ(out[0], 5);
  t.join();
}

TEST(QueueGetManySpan, ShutDownAndClosed) {
  mp::Queue<int64_t> q;
  q.put_many(std::vector<int64_t>{1, 2, 3});
  q.shutdown();
  std::array<int64_t, 2> out;
  EXPECT_EQ(q.get_many(std::span(out)), 2u);  // drains what is left
  EXPECT_EQ(q.get_many(std::span(out)), 1u);
  EXPECT_EQ(out[0], 3);
  EXPECT_THROW(q.get_many(std::span(out)), mp::ShutDown);

  mp::Queue<int64_t> imm;
  imm.put(1);
  imm.shutdown(true);
  EXPECT_THROW(imm.get_many(std::span(out)), mp::ShutDown);

  mp::Queue<int64_t> c;
  c.put(1);
  c.close();
  EXPECT_THROW(c.get_many(std::span(out)), mp::ProcessError);
  EXPECT_THROW(c.get_many(std::span<int64_t>()), mp::ProcessError);  // even asking for nothing
}

// ---- processes --------------------------------------------------------------------------

namespace {
struct Triple {  // 24 bytes: records of 32, the copy loops' general size
  int64_t a, b, c;
};
// put_many and get_many of every batch length from 1 to about 70, round the ring's end many
// times (the queue is drained as it goes, so its first ring is reused): the copy loops take
// records four at a time and the rest one by one, and a batch that ends mid-round, at a record
// not there yet or at the ring's end must neither lose nor repeat an item.
template <class T, class Make>
void check_runs_of_every_length(Make make, int64_t (*key)(const T&)) {
  mp::Queue<T> q;
  std::vector<T> batch, out(70);
  int64_t next_put = 0, next_get = 0;
  size_t put_len = 1, get_len = 1;
  while (next_put < 60000) {
    batch.clear();
    for (size_t i = 0; i < put_len; ++i) batch.push_back(make(next_put++));
    q.put_many(batch);
    put_len = put_len % 67 + 1;
    while (next_get + static_cast<int64_t>(get_len) <= next_put) {
      const size_t n = q.get_many(std::span<T>(out.data(), get_len), 1s);
      ASSERT_GE(n, 1u);
      for (size_t i = 0; i < n; ++i) ASSERT_EQ(key(out[i]), next_get++);
      get_len = get_len % 70 + 1;
    }
  }
  while (next_get < next_put) {
    const size_t n = q.get_many(std::span<T>(out), 1s);
    for (size_t i = 0; i < n; ++i) ASSERT_EQ(key(out[i]), next_get++);
  }
  EXPECT_TRUE(q.empty());
}
}  // namespace

TEST(QueueGetManySpan, RunsOfEveryLengthRoundTheRingKeepOrder) {
  check_runs_of_every_length<int64_t>([](int64_t i) { return i; },
                                      [](const int64_t& v) { return v; });
  check_runs_of_every_length<Triple>(
      [](int64_t i) {
        return Triple{i, -i, i * 3};
      },
      [](const Triple& t) { return t.b == -t.a && t.c == 3 * t.a ? t.a : int64_t{-1}; });
}

class QueueGetManySpanTest : public StartMethodTest {};

TEST_P(QueueGetManySpanTest, ChildProducerParentBatches) {
  constexpr int64_t kN = 20000;
  mp::Queue<int64_t> q(1000);  // bounded: the producer waits for the batches to make room
  mp::Process p(ctx(), put_range_in_batches, q, kN);
  p.start();
  std::vector<int64_t> out(64);
  int64_t next = 0;
  while (next < kN) {
    const size_t n = q.get_many(std::span(out), 60s);
    ASSERT_GE(n, 1u);
    ASSERT_LE(n, out.size());
    for (size_t i = 0; i < n; ++i) ASSERT_EQ(out[i], next++);
  }
  p.join();
  EXPECT_EQ(p.exitcode(), 0);
  EXPECT_TRUE(q.empty());
}

TEST_P(QueueGetManySpanTest, ChildProducerOfStrings) {
  constexpr int kN = 500;
  mp::Queue<std::string> q;
  mp::Process p(ctx(), put_strings, q, kN);
  p.start();
  std::vector<std::string> out(16);
  int next = 0;
  while (next < kN) {
    const size_t n = q.get_many(std::span(out), 60s);
    for (size_t i = 0; i < n; ++i, ++next)
      ASSERT_EQ(out[i], std::string(static_cast<size_t>(next % 50), 'x') + std::to_string(next));
  }
  p.join();
  EXPECT_EQ(p.exitcode(), 0);
}

MP_ALL_START_METHODS(QueueGetManySpanTest);
