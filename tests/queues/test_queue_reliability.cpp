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
