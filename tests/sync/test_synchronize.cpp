// Lock, RLock, Semaphore, BoundedSemaphore, Event, Condition, Barrier: CPython's _TestLock,
// _TestSemaphore, _TestCondition, _TestEvent and _TestBarrier semantics, each process-using body
// under fork, spawn and forkserver; plus the death of a holder, which Python does not survive.
#include <unistd.h>
#include <algorithm>
#include <atomic>
#include <csignal>
#include <cstdint>
#include <mutex>
#include <set>
#include <string>
#include <thread>
#include <vector>

#include <multiproc/sharedctypes.hpp>

#include "start_methods.hpp"

using namespace std::chrono_literals;
using Clock = std::chrono::steady_clock;

namespace {

double seconds_since(Clock::time_point t0) {
  return std::chrono::duration<double>(Clock::now() - t0).count();
}

bool shm_exists(const std::string& name) {
  return access(("/dev/shm" + name).c_str(), F_OK) == 0;
}

[[noreturn]] void die_now() {
  raise(SIGKILL);
  _exit(99);  // not reached
}

// ---- tasks
// ---------------------------------------------------------------------------------------

void hold_lock_until(mp::Lock lock, mp::Event held, mp::Event go) {
  lock.acquire();
  held.set();
  go.wait(30s);
  lock.release();
}

void release_lock(mp::Lock lock) {
  lock.release();
}

void acquire_lock_and_die(mp::Lock lock) {
  lock.acquire();
  die_now();
}

void acquire_lock_then_die_later(mp::Lock lock, mp::Event held) {
  lock.acquire();
  held.set();
  std::this_thread::sleep_for(100ms);
  die_now();
}

void try_release_rlock(mp::RLock lock, mp::Value<int> result) {
  try {
    lock.release();
    result.set(1);
  } catch (const mp::ProcessError&) {
    result.set(2);
  }
}

void acquire_rlock_twice_and_die(mp::RLock lock) {
  lock.acquire();
  lock.acquire();
  die_now();
}

void release_semaphore_n(mp::Semaphore s, int n) {
  for (int i = 0; i < n; ++i) {
    std::this_thread::sleep_for(5ms);
    s.release();
  }
}

void acquire_semaphore_and_die(mp::Semaphore s, int n) {
  for (int i = 0; i < n; ++i) s.acquire();
  die_now();
}

void acquire_semaphore_and_exit(mp::Semaphore s) {
  s.acquire();
}

void set_event_later(mp::Event e) {
  std::this_thread::sleep_for(50ms);
  e.set();
}

void wait_event_report(mp::Event e, mp::Queue<int> out) {
  out.put(e.wait(30s) ? 1 : 0);
}

// Python's _TestCondition.f: note we are about to sleep, wait, note we woke.
void condition_sleeper(mp::Condition cond, mp::Semaphore sleeping, mp::Semaphore woken) {
  cond.acquire();
  sleeping.release();
  cond.wait();
  woken.release();
  cond.release();
}

void condition_sleeper_lock(mp::Condition cond, mp::Semaphore sleeping, mp::Semaphore woken) {
  std::unique_lock g(cond);
  sleeping.release();
  cond.wait(30s);
  woken.release();
}

void bump_state_and_notify(mp::Condition cond, mp::Value<int> state, int times) {
  for (int i = 0; i < times; ++i) {
    std::this_thread::sleep_for(10ms);
    std::lock_guard g(cond);
    state.set(state.value() + 1);
    cond.notify_all();
  }
}

void barrier_waiter(mp::Barrier b, mp::Queue<int> out, int rounds) {
  for (int r = 0; r < rounds; ++r) out.put(static_cast<int>(b.wait(30s)));
}

// Reports 1 if wait() threw BrokenBarrierError, 0 if it passed.
void barrier_expect_broken(mp::Barrier b, mp::Queue<int> out) {
  try {
    b.wait(30s);
    out.put(0);
  } catch (const mp::BrokenBarrierError&) {
    out.put(1);
  }
}

// counts[0]: total, counts[1 + slot]: this worker's own; both under one lock.
void locked_counter_worker(mp::Lock lock, mp::Array<int64_t> counts, int slot, mp::Event stop) {
  while (!stop.is_set()) {
    std::lock_guard g(lock);
    counts[0] += 1;
    counts[1 + slot] += 1;
  }
}

void semaphore_churn(mp::Semaphore s, mp::Value<int> over_limit, int limit, int iterations) {
  for (int i = 0; i < iterations; ++i) {
    s.acquire();
    if (s.get_value() > limit) over_limit.set(1);
    std::this_thread::sleep_for(200us);
    s.release();
    std::this_thread::sleep_for(200us);
  }
}

void barrier_rounds(mp::Barrier b, mp::Array<int> arrived, mp::Value<int> errors, int rounds) {
  const int parties = static_cast<int>(b.parties());
  for (int r = 0; r < rounds; ++r) {
    {
      std::lock_guard g(arrived.get_lock());
      arrived[r] += 1;
    }
    b.wait(30s);
    // Everyone arrived before anyone passed.
    if (arrived.to_vector()[r] != parties) {
      std::lock_guard g(errors.get_lock());
      errors.set(errors.value() + 1);
    }
  }
}

}  // namespace

// ================================= Lock ==========================================================

TEST(Lock, AcquireRelease) {
  mp::Lock lock;
  EXPECT_TRUE(lock.acquire());
  EXPECT_FALSE(lock.acquire(false));  // not recursive
  lock.release();
  EXPECT_TRUE(lock.acquire(false));
  lock.release();
  EXPECT_THROW(lock.release(), mp::ProcessError);  // Python: ValueError
  {
    std::lock_guard g(lock);
    EXPECT_FALSE(lock.try_lock());
  }
  EXPECT_TRUE(lock.try_lock());
  lock.unlock();
  EXPECT_FALSE(lock.previous_owner_died());
  EXPECT_EQ(lock.owner_deaths(), 0u);
}

TEST(Lock, TimeoutReturnsFalseAfterTheTimeout) {
  mp::Lock lock;
  lock.acquire();
  auto t0 = Clock::now();
  EXPECT_FALSE(lock.acquire(true, 200ms));
  double took = seconds_since(t0);
  EXPECT_GE(took, 0.9 * 0.2);
  EXPECT_LT(took, 3.0);
  EXPECT_FALSE(lock.acquire(true, -1s));  // negative = zero
  lock.release();
}

TEST(Lock, ReleaseFromAnotherThread) {
  mp::Lock lock;
  lock.acquire();
  std::thread t([lock]() mutable { lock.release(); });
  t.join();
  EXPECT_TRUE(lock.acquire(false));
  lock.release();
}

TEST(Lock, HandlesShareOneLockAndSerializedCopiesMatch) {
  mp::Lock a;
  mp::Lock b = a;
  a.acquire();
  EXPECT_FALSE(b.acquire(false));
  std::string bytes;
  mp::detail::dump(bytes, a);
  mp::Lock c = mp::detail::load<mp::Lock>(bytes);
  EXPECT_TRUE(c == a);  // one object per process, whichever way the handle came
  c.release();
  EXPECT_TRUE(b.acquire(false));
  b.release();
  EXPECT_FALSE(a == mp::Lock());
}

TEST(Lock, OpeningAsAnotherTypeFails) {
  mp::Lock lock;
  std::string bytes;
  mp::detail::dump(bytes, lock);
  EXPECT_THROW(mp::detail::load<mp::Semaphore>(bytes), mp::ProcessError);
}

TEST(Lock, EmptyHandleThrows) {
  mp::detail::HandleLoadScope scope;
  mp::Lock empty;
  EXPECT_THROW(empty.acquire(), mp::ProcessError);
}

class LockTest : public StartMethodTest {};

TEST_P(LockTest, NonBlockingAcquireFailsWhileAChildHoldsIt) {
  mp::Lock lock;
  mp::Event held, go;
  mp::Process p(ctx(), hold_lock_until, lock, held, go);
  p.start();
  ASSERT_TRUE(held.wait(30s));
  EXPECT_FALSE(lock.acquire(false));
  auto t0 = Clock::now();
  EXPECT_FALSE(lock.acquire(true, 100ms));
  EXPECT_GE(seconds_since(t0), 0.09);
  go.set();
  EXPECT_TRUE(lock.acquire(true, 30s));
  EXPECT_FALSE(lock.previous_owner_died());
  lock.release();
  p.join();
  EXPECT_EQ(p.exitcode(), 0);
}

TEST_P(LockTest, ReleasedByAnotherProcess) {
  mp::Lock lock;
  lock.acquire();
  mp::Process p(ctx(), release_lock, lock);
  p.start();
  p.join();
  EXPECT_EQ(p.exitcode(), 0);
  EXPECT_TRUE(lock.acquire(false));
  lock.release();
}

TEST_P(LockTest, HolderKilledThenNextAcquireTakesOver) {
  mp::Lock lock;
  mp::Process p(ctx(), acquire_lock_and_die, lock);
  p.start();
  p.join();
  EXPECT_EQ(p.exitcode(), -SIGKILL);
  auto t0 = Clock::now();
  ASSERT_TRUE(lock.acquire(true, 10s));
  EXPECT_LT(seconds_since(t0), 5.0);
  EXPECT_TRUE(lock.previous_owner_died());
  EXPECT_EQ(lock.owner_deaths(), 1u);
  lock.release();
  ASSERT_TRUE(lock.acquire());
  EXPECT_FALSE(lock.previous_owner_died());
  lock.release();
}

TEST_P(LockTest, HolderDiesWhileOthersWait) {
  mp::Lock lock;
  mp::Event held;
  mp::Process p(ctx(), acquire_lock_then_die_later, lock, held);
  p.start();
  ASSERT_TRUE(held.wait(30s));
  // A waiting thread and a non-blocking poller: both get through once the holder is dead.
  std::atomic<bool> thread_got{false};
  std::thread t([lock, &thread_got]() mutable {
    if (lock.acquire(true, 10s)) {
      thread_got = true;
      lock.release();
    }
  });
  ASSERT_TRUE(lock.acquire(true, 10s));
  lock.release();
  t.join();
  EXPECT_TRUE(thread_got);
  p.join();
  EXPECT_EQ(lock.owner_deaths(), 1u);
}

TEST_P(LockTest, NonBlockingAcquireTakesOverFromTheDead) {
  mp::Lock lock;
  mp::Process p(ctx(), acquire_lock_and_die, lock);
  p.start();
  p.join();
  EXPECT_TRUE(eventually([&] { return lock.acquire(false); }, 10s));
  EXPECT_TRUE(lock.previous_owner_died());
  lock.release();
}

TEST_P(LockTest, KillOneOfSeveralContendersMidRun) {
  // kill -9 a worker that spends its time taking the lock: the survivors go on, and the
  // accounting is exact up to the one step the victim may have left half done.
  const int workers = 3;
  mp::Lock lock;
  mp::Event stop;
  mp::Array<int64_t> counts(1 + workers);
  std::vector<mp::Process> ps;
  for (int i = 0; i < workers; ++i)
    ps.emplace_back(ctx(), locked_counter_worker, lock, counts, i, stop);
  for (auto& p : ps) p.start();
  auto survivors = [&] { return counts.to_vector()[2] + counts.to_vector()[3]; };
  ASSERT_TRUE(eventually([&] { return counts.to_vector()[1] > 1000; }, 30s));
  ps[0].kill();
  ASSERT_TRUE(ps[0].join(30s));
  const int64_t before = survivors();
  EXPECT_TRUE(eventually([&] { return survivors() > before + 1000; }, 30s));
  stop.set();
  for (auto& p : ps) ASSERT_TRUE(p.join(30s));
  std::lock_guard g(lock);
  auto c = counts.to_vector();
  int64_t sum = c[1] + c[2] + c[3];
  EXPECT_TRUE(c[0] == sum || (c[0] == sum + 1 && lock.owner_deaths() == 1))
      << "total " << c[0] << " sum " << sum << " deaths " << lock.owner_deaths();
  EXPECT_LE(lock.owner_deaths(), 1u);
}

MP_ALL_START_METHODS(LockTest);

// ================================= RLock =========================================================

TEST(RLock, Recursion) {
  mp::RLock lock;
  EXPECT_TRUE(lock.acquire());
  EXPECT_TRUE(lock.acquire());
  EXPECT_TRUE(lock.acquire(false));
  EXPECT_EQ(lock.depth(), 3u);
  std::thread([lock]() mutable { EXPECT_FALSE(lock.acquire(false)); }).join();
  lock.release();
  lock.release();
  EXPECT_EQ(lock.depth(), 1u);
  lock.release();
  EXPECT_EQ(lock.depth(), 0u);
  EXPECT_THROW(lock.release(), mp::ProcessError);
  {
    std::lock_guard a(lock);
    std::lock_guard b(lock);
    EXPECT_EQ(lock.depth(), 2u);
  }
  std::thread([lock]() mutable {
    EXPECT_TRUE(lock.acquire(false));
    lock.release();
  }).join();
}

TEST(RLock, ReleaseByAnotherThreadThrows) {
  mp::RLock lock;
  lock.acquire();
  std::thread([lock]() mutable { EXPECT_THROW(lock.release(), mp::ProcessError); }).join();
  lock.release();
}

class RLockTest : public StartMethodTest {};

TEST_P(RLockTest, ReleaseByAnotherProcessThrows) {
  mp::RLock lock;
  mp::Value<int> result(0);
  lock.acquire();
  mp::Process p(ctx(), try_release_rlock, lock, result);
  p.start();
  p.join();
  EXPECT_EQ(result.value(), 2);
  EXPECT_EQ(lock.depth(), 1u);
  lock.release();
}

TEST_P(RLockTest, DeadOwnerIsTakenOverAtDepthOne) {
  mp::RLock lock;
  mp::Process p(ctx(), acquire_rlock_twice_and_die, lock);
  p.start();
  p.join();
  ASSERT_TRUE(lock.acquire(true, 10s));
  EXPECT_TRUE(lock.previous_owner_died());
  EXPECT_EQ(lock.owner_deaths(), 1u);
  EXPECT_EQ(lock.depth(), 1u);
  lock.release();
  EXPECT_TRUE(lock.acquire(false));
  lock.release();
}

MP_ALL_START_METHODS(RLockTest);

// ================================= Semaphore =====================================================

TEST(Semaphore, Counts) {
  mp::Semaphore s(2);
  EXPECT_EQ(s.get_value(), 2);
  EXPECT_TRUE(s.acquire());
  EXPECT_EQ(s.get_value(), 1);
  EXPECT_TRUE(s.acquire(false));
  EXPECT_EQ(s.get_value(), 0);
  EXPECT_FALSE(s.acquire(false));
  s.release();
  EXPECT_EQ(s.get_value(), 1);
  s.release(2);
  EXPECT_EQ(s.get_value(), 3);  // a plain Semaphore may go above its initial value
  EXPECT_THROW(mp::Semaphore(-1), mp::ProcessError);
  mp::Semaphore zero(0);
  EXPECT_FALSE(zero.acquire(false));
}

TEST(Semaphore, Timeout) {
  mp::Semaphore s(0);
  auto t0 = Clock::now();
  EXPECT_FALSE(s.acquire(true, 200ms));
  double took = seconds_since(t0);
  EXPECT_GE(took, 0.9 * 0.2);
  EXPECT_LT(took, 3.0);
  EXPECT_FALSE(s.acquire(true, 0s));
  t0 = Clock::now();
  EXPECT_FALSE(s.acquire(false, 1s));  // non-blocking: the timeout is ignored
  EXPECT_LT(seconds_since(t0), 0.5);
  s.release();
  EXPECT_TRUE(s.acquire(true, 200ms));
}

TEST(Semaphore, BoundedOverReleaseThrows) {
  mp::BoundedSemaphore s(2);
  EXPECT_THROW(s.release(), mp::ProcessError);
  EXPECT_EQ(s.get_value(), 2);
  s.acquire();
  s.acquire();
  s.release();
  EXPECT_THROW(s.release(2), mp::ProcessError);
  EXPECT_EQ(s.get_value(), 1);
  s.release();
  EXPECT_EQ(s.get_value(), 2);
  EXPECT_THROW(s.release(), mp::ProcessError);
}

TEST(Semaphore, WakesThreads) {
  mp::Semaphore s(0);
  std::atomic<int> got{0};
  std::vector<std::thread> ts;
  for (int i = 0; i < 4; ++i)
    ts.emplace_back([s, &got]() mutable {
      if (s.acquire(true, 30s)) ++got;
    });
  std::this_thread::sleep_for(20ms);
  s.release(4);
  for (auto& t : ts) t.join();
  EXPECT_EQ(got, 4);
  EXPECT_EQ(s.get_value(), 0);
}

class SemaphoreTest : public StartMethodTest {};

TEST_P(SemaphoreTest, ReleasedByAChild) {
  mp::Semaphore s(0);
  mp::Process p(ctx(), release_semaphore_n, s, 3);
  p.start();
  for (int i = 0; i < 3; ++i) EXPECT_TRUE(s.acquire(true, 30s));
  EXPECT_FALSE(s.acquire(false));
  p.join();
  EXPECT_EQ(s.get_value(), 0);
}

TEST_P(SemaphoreTest, DeadHolderGivesItsUnitsBack) {
  mp::Semaphore s(3);
  mp::Process p(ctx(), acquire_semaphore_and_die, s, 2);
  p.start();
  p.join();
  EXPECT_EQ(p.exitcode(), -SIGKILL);
  EXPECT_EQ(s.get_value(), 1);
  ASSERT_TRUE(s.acquire(true, 10s));
  ASSERT_TRUE(s.acquire(true, 10s));  // needs one recovered unit
  ASSERT_TRUE(s.acquire(true, 10s));  // and the other
  EXPECT_EQ(s.recovered_units(), 2u);
  s.release(3);
  EXPECT_EQ(s.get_value(), 3);
}

TEST_P(SemaphoreTest, BoundedDeadHolderNonBlockingRecovery) {
  mp::BoundedSemaphore s(1);
  mp::Process p(ctx(), acquire_semaphore_and_die, mp::Semaphore(s), 1);
  p.start();
  p.join();
  EXPECT_TRUE(eventually([&] { return s.acquire(false); }, 10s));
  s.release();
  EXPECT_THROW(s.release(), mp::ProcessError);
}

TEST_P(SemaphoreTest, SignallingNeverGainsPhantomUnits) {
  // Semaphore(0) as a signal: the parent releases, a child acquires and exits normally. The
  // child's unit is not "held" in any sense that its exit should give back.
  mp::Semaphore s(0);
  s.release();
  mp::Process p(ctx(), acquire_semaphore_and_exit, s);
  p.start();
  p.join();
  EXPECT_EQ(p.exitcode(), 0);
  EXPECT_FALSE(s.acquire(true, 150ms));  // long enough for a dead-holder scan
  EXPECT_EQ(s.get_value(), 0);
  EXPECT_EQ(s.recovered_units(), 0u);
}

TEST_P(SemaphoreTest, KillOneOfSeveralHoldersMidRun) {
  const int limit = 2;
  mp::BoundedSemaphore s(limit);
  mp::Value<int> over_limit(0);
  std::vector<mp::Process> ps;
  for (int i = 0; i < 3; ++i) ps.emplace_back(ctx(), semaphore_churn, s, over_limit, limit, 150);
  for (auto& p : ps) p.start();
  std::this_thread::sleep_for(30ms);
  ps[0].kill();
  for (auto& p : ps) ASSERT_TRUE(p.join(60s));
  EXPECT_EQ(over_limit.value(), 0);
  // Whatever the victim held comes back: all units can be taken, and no more.
  for (int i = 0; i < limit; ++i) ASSERT_TRUE(s.acquire(true, 10s)) << i;
  EXPECT_FALSE(s.acquire(true, 100ms));
  s.release(limit);
  EXPECT_EQ(s.get_value(), limit);
}

MP_ALL_START_METHODS(SemaphoreTest);

// ================================= Event =========================================================

TEST(Event, SetClearWait) {
  mp::Event e;
  EXPECT_FALSE(e.is_set());
  auto t0 = Clock::now();
  EXPECT_FALSE(e.wait(200ms));
  double took = seconds_since(t0);
  EXPECT_GE(took, 0.9 * 0.2);
  EXPECT_LT(took, 3.0);
  EXPECT_FALSE(e.wait(0s));
  e.set();
  EXPECT_TRUE(e.is_set());
  EXPECT_TRUE(e.wait());
  EXPECT_TRUE(e.wait(0s));
  e.clear();
  EXPECT_FALSE(e.is_set());
  EXPECT_FALSE(e.wait(10ms));
}

class EventTest : public StartMethodTest {};

TEST_P(EventTest, SetByAChild) {
  mp::Event e;
  mp::Process p(ctx(), set_event_later, e);
  p.start();
  EXPECT_TRUE(e.wait(30s));
  EXPECT_TRUE(e.is_set());
  p.join();
}

TEST_P(EventTest, WakesEveryWaitingChild) {
  mp::Event e;
  mp::Queue<int> out;
  std::vector<mp::Process> ps;
  for (int i = 0; i < 3; ++i) ps.emplace_back(ctx(), wait_event_report, e, out);
  for (auto& p : ps) p.start();
  std::this_thread::sleep_for(50ms);
  e.set();
  int sum = 0;
  for (int i = 0; i < 3; ++i) sum += out.get(30s);
  EXPECT_EQ(sum, 3);
  for (auto& p : ps) p.join();
}

MP_ALL_START_METHODS(EventTest);

// ================================= Condition =====================================================

TEST(Condition, RequiresTheLock) {
  mp::Condition cond;
  EXPECT_THROW(cond.notify(), mp::ProcessError);
  EXPECT_THROW(cond.notify_all(), mp::ProcessError);
  EXPECT_THROW(cond.wait(0s), mp::ProcessError);
  std::lock_guard g(cond);
  cond.notify();  // nobody waits: no effect
  cond.notify_all();
}

TEST(Condition, WaitTimeout) {
  mp::Condition cond;
  std::lock_guard g(cond);
  auto t0 = Clock::now();
  EXPECT_FALSE(cond.wait(200ms));
  double took = seconds_since(t0);
  EXPECT_GE(took, 0.9 * 0.2);
  EXPECT_LT(took, 3.0);
  EXPECT_FALSE(cond.wait_for([] { return false; }, 100ms));
  EXPECT_TRUE(cond.wait_for([] { return true; }, 0s));
}

TEST(Condition, WaitRestoresRLockDepth) {
  mp::RLock lock;
  mp::Condition cond(lock);
  lock.acquire();
  lock.acquire();
  std::atomic<bool> waiting{false};
  std::thread notifier([cond, &waiting]() mutable {
    while (!waiting) std::this_thread::yield();
    std::lock_guard g(cond);  // only possible once wait() released both levels
    cond.notify();
  });
  waiting = true;
  EXPECT_TRUE(cond.wait(30s));
  EXPECT_EQ(lock.depth(), 2u);
  lock.release();
  lock.release();
  notifier.join();
}

TEST(Condition, NotifyWakesExactlyN) {
  mp::Condition cond(mp::Lock{});
  std::atomic<int> woken{0};
  std::vector<std::thread> ts;
  mp::Semaphore sleeping(0);
  for (int i = 0; i < 3; ++i)
    ts.emplace_back([cond, sleeping, &woken]() mutable {
      std::unique_lock g(cond);
      sleeping.release();
      if (cond.wait(30s)) ++woken;
    });
  for (int i = 0; i < 3; ++i) sleeping.acquire();
  {
    std::lock_guard g(cond);
    cond.notify(2);
  }
  EXPECT_TRUE(eventually([&] { return woken == 2; }, 10s));
  std::this_thread::sleep_for(50ms);
  EXPECT_EQ(woken, 2);
  {
    std::lock_guard g(cond);
    cond.notify(5);  // more than wait: wakes the one left
  }
  for (auto& t : ts) t.join();
  EXPECT_EQ(woken, 3);
}

class ConditionTest : public StartMethodTest {};

TEST_P(ConditionTest, NotifyWakesTheRightNumberOfChildren) {
  // Python's _TestCondition.test_notify / test_notify_all, with children.
  const int n = 4;
  mp::Condition cond;
  mp::Semaphore sleeping(0), woken(0);
  std::vector<mp::Process> ps;
  for (int i = 0; i < n; ++i) ps.emplace_back(ctx(), condition_sleeper, cond, sleeping, woken);
  for (auto& p : ps) p.start();
  for (int i = 0; i < n; ++i) ASSERT_TRUE(sleeping.acquire(true, 30s));
  // Each child released `sleeping` holding the lock; taking the lock means it is waiting.
  { std::lock_guard g(cond); }
  std::this_thread::sleep_for(20ms);
  EXPECT_EQ(woken.get_value(), 0);

  {
    std::lock_guard g(cond);
    cond.notify();
  }
  EXPECT_TRUE(eventually([&] { return woken.get_value() == 1; }, 10s));
  {
    std::lock_guard g(cond);
    cond.notify(2);
  }
  EXPECT_TRUE(eventually([&] { return woken.get_value() == 3; }, 10s));
  std::this_thread::sleep_for(50ms);
  EXPECT_EQ(woken.get_value(), 3);
  {
    std::lock_guard g(cond);
    cond.notify_all();
  }
  EXPECT_TRUE(eventually([&] { return woken.get_value() == n; }, 10s));
  for (auto& p : ps) {
    p.join();
    EXPECT_EQ(p.exitcode(), 0);
  }
}

TEST_P(ConditionTest, OverALockPassedIn) {
  mp::Lock lock;
  mp::Condition cond(lock);
  mp::Semaphore sleeping(0), woken(0);
  mp::Process p(ctx(), condition_sleeper_lock, cond, sleeping, woken);
  p.start();
  ASSERT_TRUE(sleeping.acquire(true, 30s));
  {
    std::lock_guard g(lock);  // the same lock
    cond.notify_all();
  }
  EXPECT_TRUE(woken.acquire(true, 30s));
  p.join();
  EXPECT_EQ(p.exitcode(), 0);
}

TEST_P(ConditionTest, WaitForPredicate) {
  mp::Condition cond;
  mp::Value<int> state(0);
  mp::Process p(ctx(), bump_state_and_notify, cond, state, 4);
  p.start();
  {
    std::lock_guard g(cond);
    EXPECT_TRUE(cond.wait_for([&] { return state.value() == 4; }, 30s));
    EXPECT_EQ(state.value(), 4);
    EXPECT_FALSE(cond.wait_for([&] { return state.value() == 5; }, 100ms));
  }
  p.join();
}

MP_ALL_START_METHODS(ConditionTest);

// ================================= Barrier =======================================================

TEST(Barrier, SingleParty) {
  mp::Barrier b(1);
  EXPECT_EQ(b.parties(), 1u);
  EXPECT_EQ(b.wait(), 0u);
  EXPECT_EQ(b.wait(), 0u);
  EXPECT_THROW(mp::Barrier(0), mp::ProcessError);
}

TEST(Barrier, TooManyPartiesSaysTheLimit) {
  try {
    mp::Barrier b(SIZE_MAX);
    ADD_FAILURE() << "Barrier(SIZE_MAX) was accepted";
  } catch (const mp::ProcessError& e) {
    const std::string what = e.what();
    EXPECT_EQ(what.find("at least 1"), std::string::npos) << what;
    EXPECT_NE(what.find(std::to_string(UINT32_MAX)), std::string::npos) << what;
  }
  try {
    mp::Barrier b(0);
    ADD_FAILURE() << "Barrier(0) was accepted";
  } catch (const mp::ProcessError& e) {
    EXPECT_NE(std::string(e.what()).find("between 1 and"), std::string::npos) << e.what();
  }
}

TEST(Barrier, TimeoutBreaksItUntilReset) {
  mp::Barrier b(2);
  auto t0 = Clock::now();
  EXPECT_THROW(b.wait(200ms), mp::BrokenBarrierError);
  double took = seconds_since(t0);
  EXPECT_GE(took, 0.9 * 0.2);
  EXPECT_LT(took, 3.0);
  EXPECT_TRUE(b.broken());
  EXPECT_EQ(b.n_waiting(), 0u);
  EXPECT_THROW(b.wait(), mp::BrokenBarrierError);
  b.reset();
  EXPECT_FALSE(b.broken());
  std::thread t([b]() mutable { b.wait(30s); });
  b.wait(30s);
  t.join();
}

TEST(Barrier, DefaultTimeout) {
  mp::Barrier b(2, 100ms);
  EXPECT_THROW(b.wait(), mp::BrokenBarrierError);
  EXPECT_TRUE(b.broken());
}

TEST(Barrier, ManyRoundsWithThreads) {
  const int parties = 4, rounds = 50;
  mp::Barrier b(parties);
  std::atomic<int> phase_sum{0};
  std::vector<std::thread> ts;
  for (int i = 0; i < parties; ++i)
    ts.emplace_back([b, &phase_sum]() mutable {
      for (int r = 0; r < rounds; ++r) {
        phase_sum += static_cast<int>(b.wait(30s));
      }
    });
  for (auto& t : ts) t.join();
  EXPECT_EQ(phase_sum, rounds * (0 + 1 + 2 + 3));
}

class BarrierTest : public StartMethodTest {};

TEST_P(BarrierTest, ChildrenAndParentPassTogether) {
  const int children = 3, rounds = 2;
  mp::Barrier b(children + 1);
  mp::Queue<int> out;
  std::vector<mp::Process> ps;
  for (int i = 0; i < children; ++i) ps.emplace_back(ctx(), barrier_waiter, b, out, rounds);
  for (auto& p : ps) p.start();
  for (int r = 0; r < rounds; ++r) {
    std::multiset<int> indices{static_cast<int>(b.wait(30s))};
    for (int i = 0; i < children; ++i) indices.insert(out.get(30s));
    EXPECT_EQ(indices, (std::multiset<int>{0, 1, 2, 3})) << "round " << r;
  }
  for (auto& p : ps) {
    p.join();
    EXPECT_EQ(p.exitcode(), 0);
  }
  EXPECT_EQ(b.n_waiting(), 0u);
}

TEST_P(BarrierTest, ATimeoutBreaksItForEveryone) {
  mp::Barrier b(3);
  mp::Queue<int> out;
  mp::Process p(ctx(), barrier_expect_broken, b, out);
  p.start();
  ASSERT_TRUE(eventually([&] { return b.n_waiting() == 1; }, 30s));
  EXPECT_THROW(b.wait(100ms), mp::BrokenBarrierError);
  EXPECT_EQ(out.get(30s), 1);
  p.join();
  EXPECT_TRUE(b.broken());
  b.reset();
  EXPECT_FALSE(b.broken());
}

TEST_P(BarrierTest, AbortAndReset) {
  mp::Barrier b(3);
  mp::Queue<int> out;
  std::vector<mp::Process> ps;
  for (int i = 0; i < 2; ++i) ps.emplace_back(ctx(), barrier_expect_broken, b, out);
  for (auto& p : ps) p.start();
  ASSERT_TRUE(eventually([&] { return b.n_waiting() == 2; }, 30s));
  b.abort();
  EXPECT_EQ(out.get(30s) + out.get(30s), 2);
  for (auto& p : ps) p.join();
  EXPECT_THROW(b.wait(), mp::BrokenBarrierError);

  // reset() while a party waits: it gets BrokenBarrierError, and the barrier works again.
  b.reset();
  mp::Process waiter(ctx(), barrier_expect_broken, b, out);
  waiter.start();
  ASSERT_TRUE(eventually([&] { return b.n_waiting() == 1; }, 30s));
  b.reset();
  EXPECT_EQ(out.get(30s), 1);
  waiter.join();
  EXPECT_FALSE(b.broken());
  mp::Process again(ctx(), barrier_waiter, b, out, 1);
  again.start();
  std::thread t([b]() mutable { b.wait(30s); });
  b.wait(30s);
  t.join();
  out.get(30s);
  again.join();
  EXPECT_EQ(again.exitcode(), 0);
}

TEST_P(BarrierTest, ManyRoundsNobodyPassesEarly) {
  // Python's test_thousand, shorter: in every round all parties arrive before any passes.
  const int rounds = 100, children = 2;
  mp::Barrier b(children + 1);
  mp::Array<int> arrived(rounds);
  mp::Value<int> errors(0);
  std::vector<mp::Process> ps;
  for (int i = 0; i < children; ++i)
    ps.emplace_back(ctx(), barrier_rounds, b, arrived, errors, rounds);
  for (auto& p : ps) p.start();
  barrier_rounds(b, arrived, errors, rounds);
  for (auto& p : ps) {
    p.join();
    EXPECT_EQ(p.exitcode(), 0);
  }
  EXPECT_EQ(errors.value(), 0);
  for (int x : arrived.to_vector()) EXPECT_EQ(x, children + 1);
}

MP_ALL_START_METHODS(BarrierTest);

// ================================= lifetime ======================================================

TEST(Synchronize, NoSegmentLeftAfterLastHandle) {
  std::vector<std::string> names;
  {
    mp::Lock a;
    mp::RLock b;
    mp::Semaphore c(2);
    mp::BoundedSemaphore d(1);
    mp::Event e;
    mp::Condition f;
    mp::Barrier g(2);
    for (const std::string* n :
         {&a.name(), &b.name(), &c.name(), &d.name(), &e.name(), &f.name(), &g.name()})
      names.push_back(*n);
    for (auto& n : names) EXPECT_TRUE(shm_exists(n)) << n;
  }
  for (auto& n : names) EXPECT_FALSE(shm_exists(n)) << n;
}

namespace {
void use_everything(mp::Lock a, mp::Condition c, mp::Barrier b) {
  std::lock_guard g(a);
  std::lock_guard h(c);
  c.notify_all();
  b.wait(30s);
}
}  // namespace

class SyncLifetimeTest : public StartMethodTest {};

TEST_P(SyncLifetimeTest, NoSegmentLeftAfterChildrenUsedThem) {
  std::vector<std::string> names;
  {
    mp::Lock a;
    mp::Condition c;
    mp::Barrier b(2);
    names = {a.name(), c.name(), b.name()};
    mp::Process p(ctx(), use_everything, a, c, b);
    p.start();
    b.wait(30s);
    p.join();
    EXPECT_EQ(p.exitcode(), 0);
  }
  for (auto& n : names) EXPECT_FALSE(shm_exists(n)) << n;
}

MP_ALL_START_METHODS(SyncLifetimeTest);
