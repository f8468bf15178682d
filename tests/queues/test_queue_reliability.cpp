// Queues under hostile use (issue 9): sizes that mean "unbounded", producers that die in the
// middle of a JoinableQueue's bookkeeping, and a process that scribbles over a queue's shared
// memory. The process bodies run under fork, spawn and forkserver.
#include <sys/wait.h>
#include <unistd.h>
#include <csignal>
#include <cstring>
#include <numeric>
#include <random>
#include <string>
#include <thread>
#include <vector>

#include <multiproc/ordered_queues.hpp>

#include "start_methods.hpp"

using namespace std::chrono_literals;

namespace {

// Runs `body` in a forked child with an alarm: a body that spins or hangs fails the test
// instead of hanging the suite. Returns the child's wait status.
template <class Body>
int in_child_with_alarm(Body body, unsigned seconds = 20) {
  pid_t pid = fork();
  if (pid == 0) {
    alarm(seconds);
    try {
      body();
    } catch (...) {
      _exit(3);
    }
    _exit(0);
  }
  int status = 0;
  waitpid(pid, &status, 0);
  return status;
}

bool exited_ok(int status) {
  return WIFEXITED(status) && WEXITSTATUS(status) == 0;
}

}  // namespace

// ---- 1. a negative maxsize means unbounded (Python's rule) -------------------------------------

TEST(QueueMaxsize, NegativeMeansUnbounded) {
  EXPECT_TRUE(exited_ok(in_child_with_alarm([] {
    mp::Queue<int> q(-1);
    for (int i = 0; i < 5000; ++i) q.put(i, 1s);
    if (q.maxsize() != 0 || q.full() || q.qsize() != 5000) _exit(4);
    for (int i = 0; i < 5000; ++i)
      if (q.get(1s) != i) _exit(5);
  })));
  EXPECT_TRUE(exited_ok(in_child_with_alarm([] {
    mp::JoinableQueue<int> q(-1);
    std::vector<int> v(3000);
    std::iota(v.begin(), v.end(), 0);
    q.put_many(v, 1s);
    q.put_nowait(1);
    if (q.maxsize() != 0 || q.full()) _exit(4);
    if (q.get_many(10000, 1s).size() != 3001) _exit(5);
    for (int i = 0; i < 3001; ++i) q.task_done();
    if (!q.join(1s)) _exit(6);
  })));
  EXPECT_TRUE(exited_ok(in_child_with_alarm([] {
    mp::LifoQueue<int> q(-5);
    for (int i = 0; i < 1000; ++i) q.put(i, 1s);
    if (q.maxsize() != 0 || q.full() || q.get(1s) != 999) _exit(4);
  })));
  EXPECT_TRUE(exited_ok(in_child_with_alarm([] {
    mp::PriorityQueue<int> q(-1);
    for (int i = 0; i < 1000; ++i) q.put(1000 - i, 1s);
    if (q.maxsize() != 0 || q.full() || q.get(1s) != 1) _exit(4);
  })));
  EXPECT_TRUE(exited_ok(in_child_with_alarm([] {
    mp::SimpleQueue<int> q;
    for (int i = 0; i < 1000; ++i) q.put(i);
    if (q.get() != 0) _exit(4);
  })));
}

// ---- 2. JoinableQueue: the unfinished count follows the items really in the queue --------------

namespace {

int g_die_where = -1;

void die_at(mp::detail::PutCrashPoint where) {
  if (static_cast<int>(where) == g_die_where) raise(SIGKILL);
}

// Killed inside put (n == 1) or put_many, at a commit point of the put.
void put_and_die(mp::JoinableQueue<int> q, int where, int n) {
  g_die_where = where;
  mp::detail::g_put_crash_point = die_at;
  if (n == 1) {
    q.put(7);
  } else {
    std::vector<int> v(static_cast<size_t>(n));
    std::iota(v.begin(), v.end(), 100);
    q.put_many(v);
  }
}

void put_into_full_queue(mp::JoinableQueue<int> q, mp::Queue<int> ready, int n) {
  ready.put(1);
  std::vector<int> v(static_cast<size_t>(n), 5);
  q.put_many(v);
}

// Gets what is there, marking each done; returns how many.
int drain_and_mark_done(mp::JoinableQueue<int>& q) {
  int got = 0;
  for (;;) {
    try {
      q.get(100ms);
    } catch (const mp::Empty&) {
      return got;
    }
    q.task_done();
    ++got;
  }
}

}  // namespace

class JoinableQueueKill : public StartMethodTest {};

TEST_P(JoinableQueueKill, ProducerKilledInsidePutLeavesJoinWorking) {
  for (auto where :
       {mp::detail::PutCrashPoint::before_first_seal, mp::detail::PutCrashPoint::before_commit}) {
    for (int n : {1, 20}) {
      SCOPED_TRACE("crash point " + std::to_string(static_cast<int>(where)) + ", items " +
                   std::to_string(n));
      mp::JoinableQueue<int> q;
      q.put(1);
      mp::Process p(ctx(), put_and_die, q, static_cast<int>(where), n);
      p.start();
      p.join(30s);
      ASSERT_EQ(p.exitcode(), std::optional<int>(-SIGKILL));
      // Before its first seal nothing of the dying put is visible; after it, all of it is.
      const int want = where == mp::detail::PutCrashPoint::before_commit ? n + 1 : 1;
      EXPECT_EQ(drain_and_mark_done(q), want);
      EXPECT_TRUE(q.join(5s)) << "join() waits for items that never were in the queue";
      q.put(2);  // a later producer takes the dead one's lock over; the count still holds
      EXPECT_FALSE(q.join(10ms));
      EXPECT_EQ(drain_and_mark_done(q), 1);
      EXPECT_TRUE(q.join(5s));
      EXPECT_THROW(q.task_done(), mp::ProcessError);
    }
  }
}

TEST_P(JoinableQueueKill, ProducerBlockedOnAFullQueueThenKilledOrTerminated) {
  for (bool terminate : {false, true}) {
    for (int n : {1, 10}) {
      SCOPED_TRACE(std::string(terminate ? "terminate" : "kill") + ", items " + std::to_string(n));
      mp::JoinableQueue<int> q(1);
      mp::Queue<int> ready;
      q.put(1);
      mp::Process p(ctx(), put_into_full_queue, q, ready, n);
      p.start();
      ASSERT_EQ(ready.get(30s), 1);
      std::this_thread::sleep_for(200ms);  // into put(), waiting for room
      if (terminate)
        p.terminate();
      else
        p.kill();
      p.join(30s);
      ASSERT_TRUE(p.exitcode().has_value());
      EXPECT_EQ(drain_and_mark_done(q), 1);
      EXPECT_TRUE(q.join(5s)) << "join() waits for items that never were in the queue";
    }
  }
}

MP_ALL_START_METHODS(JoinableQueueKill);

// As Python: task_done() counts against the items put, whether or not they were taken yet.
TEST(JoinableQueueCount, TaskDoneCountsAgainstItemsPut) {
  mp::JoinableQueue<int> q;
  EXPECT_THROW(q.task_done(), mp::ProcessError);
  q.put(1);
  q.put(2);
  EXPECT_FALSE(q.join(10ms));
  q.task_done();
  q.task_done();
  EXPECT_TRUE(q.join(1s));
  EXPECT_THROW(q.task_done(), mp::ProcessError);
  EXPECT_EQ(q.get(), 1);  // the items are still there
}

// ---- 3. what a consumer reads from shared memory is validated ----------------------------------

namespace {

using mp::detail::QueueData;
using mp::detail::RingData;
using mp::detail::Segment;
using mp::detail::SegmentKind;

enum Scribble : int {
  random_bytes_over_ring,     // header and data
  random_bytes_over_records,  // data only
  huge_record_length,         // the record at the head claims 4 GiB
  huge_capacity,              // the ring's capacity field
  misaligned_head,            // the ring's head index
  huge_blob_size,             // the blob reference of an out-of-line item
  garbage_next_ring,          // the name of the next ring in the chain
};

// The ring consumers read now, named by the queue's control segment.
std::shared_ptr<Segment> head_ring_of(const std::string& queue_name) {
  auto ctl = Segment::attach(queue_name, SegmentKind::queue, true, false);
  auto* q = static_cast<QueueData*>(ctl->payload());
  const uint64_t gen = q->head_ring_gen.load();
  const char* name = q->head_ring_name[gen & 1];
  return Segment::attach(std::string(name, strnlen(name, mp::detail::kMaxSegmentName)),
                         SegmentKind::ring, false, false);
}

void scribble(mp::Queue<std::string> q, int how) {
  auto ring = head_ring_of(q.name());
  auto* base = static_cast<unsigned char*>(ring->payload());
  auto* r = reinterpret_cast<RingData*>(base);
  unsigned char* data = base + mp::detail::kRingDataSize;
  const size_t size = ring->payload_size();
  std::mt19937_64 rng(static_cast<uint64_t>(how) * 7919 + 1);
  auto random_fill = [&](unsigned char* from, unsigned char* to) {
    for (; from < to; ++from) *from = static_cast<unsigned char>(rng());
  };
  const uint64_t head_off = r->head.load() & (r->capacity - 1);
  switch (how) {
    case random_bytes_over_ring:
      random_fill(base, base + size);
      break;
    case random_bytes_over_records:
      random_fill(data + head_off, data + head_off + 4096);
      break;
    case huge_record_length:
      mp::detail::header_at(reinterpret_cast<char*>(data + head_off))
          .store(mp::detail::header_word(0xfffffff8u, mp::detail::kRecordItem));
      break;
    case huge_capacity:
      r->capacity = uint64_t{1} << 40;
      break;
    case misaligned_head:
      r->head.store(r->head.load() + 3);
      break;
    case huge_blob_size: {
      auto* ref = reinterpret_cast<mp::detail::BlobRef*>(data + head_off + mp::detail::kHeaderSize);
      ref->size = uint64_t{1} << 50;
      break;
    }
    case garbage_next_ring:
      std::memset(r->next_name, 'x', sizeof r->next_name);
      break;
  }
}

}  // namespace

class QueueCorruption : public StartMethodTest {};

TEST_P(QueueCorruption, ScribbledRingGivesProcessErrorNotACrash) {
  for (int how = random_bytes_over_ring; how <= garbage_next_ring; ++how) {
    SCOPED_TRACE("scribble " + std::to_string(how));
    mp::Queue<std::string> q;
    if (how == huge_blob_size) {
      q.put(std::string(3 << 20, 'b'));  // out of line
    } else if (how == garbage_next_ring) {
      q.put("first");
      q.put(std::string(200000, 'g'));  // too big for the first ring: chains a second one
    } else {
      for (int i = 0; i < 50; ++i) q.put(std::string(40 + i, 'a'));
    }
    mp::Process p(ctx(), scribble, q, how);
    p.start();
    p.join(30s);
    ASSERT_EQ(p.exitcode(), std::optional<int>(0));
    bool corrupt = false;
    for (int i = 0; i < 60 && !corrupt; ++i) {
      try {
        q.get(100ms);
      } catch (const mp::Empty&) {
        break;
      } catch (const mp::ProcessError& e) {
        EXPECT_NE(std::string(e.what()).find("is corrupt"), std::string::npos) << e.what();
        corrupt = true;
        if (std::getenv("MP_TEST_VERBOSE")) std::printf("%s\n", e.what());
      }
    }
    EXPECT_TRUE(corrupt) << "the damage went unnoticed";
  }
}

namespace {

using mp::detail::OrderedQueueData;
using mp::detail::StoreEntry;
using mp::detail::StoreHeader;

enum OrderedScribble : int { huge_count, huge_offset, huge_size };

void scribble_ordered(mp::LifoQueue<std::string> q, int how) {
  auto ctl = Segment::attach(q.name(), SegmentKind::ordered_queue, true, false);
  auto* d = static_cast<OrderedQueueData*>(ctl->payload());
  const char* name = d->store_name[d->store_gen.load() & 1];
  auto store = Segment::attach(std::string(name, strnlen(name, mp::detail::kMaxSegmentName)),
                               SegmentKind::blob, false, false);
  auto* index =
      reinterpret_cast<StoreEntry*>(static_cast<char*>(store->payload()) + sizeof(StoreHeader));
  StoreEntry& top = index[d->count.load() - 1];
  switch (how) {
    case huge_count:
      d->count.store(uint64_t{1} << 40);
      break;
    case huge_offset:
      top.set_offset(uint64_t{1} << 40);
      break;
    case huge_size:
      top.size = uint64_t{1} << 40;
      break;
  }
}

}  // namespace

TEST_P(QueueCorruption, ScribbledLifoStoreGivesProcessErrorNotACrash) {
  for (int how = huge_count; how <= huge_size; ++how) {
    SCOPED_TRACE("scribble " + std::to_string(how));
    mp::LifoQueue<std::string> q;
    for (int i = 0; i < 10; ++i) q.put(std::string(100, 'a'));
    mp::Process p(ctx(), scribble_ordered, q, how);
    p.start();
    p.join(30s);
    ASSERT_EQ(p.exitcode(), std::optional<int>(0));
    try {
      q.get(1s);
      ADD_FAILURE() << "the damage went unnoticed";
    } catch (const mp::ProcessError& e) {
      EXPECT_NE(std::string(e.what()).find("is corrupt"), std::string::npos) << e.what();
    }
  }
}

MP_ALL_START_METHODS(QueueCorruption);

// ---- 4. handles inside items of a queue that goes away are released ----------------------------

namespace {

using BigWithHandle = std::pair<std::string, mp::Queue<int>>;

void put_handles(mp::Queue<mp::Queue<int>> queues, mp::Queue<mp::Value<int>> values,
                 mp::Queue<BigWithHandle> big, mp::LifoQueue<mp::Queue<int>> lifo) {
  for (int i = 0; i < 3; ++i) {
    mp::Queue<int> inner;
    inner.put(i);
    queues.put(inner);
    values.put(mp::Value<int>(i));
    lifo.put(inner);
  }
  big.put(BigWithHandle(std::string(3 << 20, 'z'), mp::Queue<int>()));  // out of line
}

}  // namespace

class QueueLeak : public StartMethodTest {};

TEST_P(QueueLeak, HandlesInsideItemsOfADestroyedQueueAreReleased) {
  const int before = count_shm_files();
  {
    mp::Queue<mp::Queue<int>> queues;
    mp::Queue<mp::Value<int>> values;
    mp::Queue<BigWithHandle> big;
    mp::LifoQueue<mp::Queue<int>> lifo;
    mp::Process p(ctx(), put_handles, queues, values, big, lifo);
    p.start();
    p.join(30s);
    ASSERT_EQ(p.exitcode(), std::optional<int>(0));
    EXPECT_EQ(queues.get(5s).get(5s), 0);  // one is taken and opened; the others stay queued
    EXPECT_EQ(lifo.get(5s).get(5s), 2);
    EXPECT_GT(count_shm_files(), before);
  }
  EXPECT_TRUE(eventually([&] { return count_shm_files() == before; }, 5s))
      << count_shm_files() - before << " segments left behind";
}

MP_ALL_START_METHODS(QueueLeak);

// A put that times out gives back what the refused item's handles took.
TEST(QueueLeakSingle, HandlesOfAnItemThatWasNotPutAreReleased) {
  const int before = count_shm_files();
  {
    mp::Queue<mp::Queue<int>> full(1);
    mp::LifoQueue<mp::Queue<int>> lifo_full(1);
    full.put(mp::Queue<int>());
    lifo_full.put(mp::Queue<int>());
    for (int i = 0; i < 3; ++i) {
      EXPECT_THROW(full.put(mp::Queue<int>(), 10ms), mp::Full);
      EXPECT_THROW(lifo_full.put_nowait(mp::Queue<int>()), mp::Full);
    }
  }
  EXPECT_TRUE(eventually([&] { return count_shm_files() == before; }, 5s))
      << count_shm_files() - before << " segments left behind";
}
