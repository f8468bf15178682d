// Python's synchronisation API pieces added for issue 10: Lock::locked() and a Barrier action.
#include <unistd.h>
#include <optional>
#include <stdexcept>
#include <string>

#include <multiproc/sharedctypes.hpp>

#include "start_methods.hpp"

using namespace std::chrono_literals;

namespace {

// Lock::locked() as seen from another process.
void expect_locked(mp::Lock lock, bool expected) {
  std::_Exit(lock.locked() == expected ? 0 : 1);
}

// The barrier action reaches its state through this process's globals, as a Python action does.
std::optional<mp::Value<int>> g_runs;
std::optional<mp::Value<int>> g_runner;

void count_action() {
  g_runs->get_lock().acquire();
  g_runs->set(g_runs->value() + 1);
  g_runs->get_lock().release();
  g_runner->set(static_cast<int>(getpid()));
}

// One party: after wait() the action has run exactly once, by the party that tripped the barrier.
void party(mp::Barrier barrier, mp::Value<int> runs, mp::Value<int> runner) {
  g_runs = runs;
  g_runner = runner;
  size_t index = barrier.wait(30s);
  if (runs.value() != 1) std::_Exit(10);
  bool ran_it = runner.value() == static_cast<int>(getpid());
  if (ran_it != (index == barrier.parties() - 1)) std::_Exit(11);
  std::_Exit(ran_it ? 20 : 21);
}

void throwing_action() {
  throw std::runtime_error("action failed");
}

void party_of_throwing_barrier(mp::Barrier barrier) {
  try {
    barrier.wait(30s);
  } catch (const mp::BrokenBarrierError&) {
    std::_Exit(barrier.broken() ? 21 : 12);
  } catch (const std::runtime_error& e) {
    std::_Exit(std::string(e.what()) == "action failed" && barrier.broken() ? 20 : 13);
  }
  std::_Exit(14);
}

}  // namespace

class SyncApiTest : public StartMethodTest {};

TEST_P(SyncApiTest, LockLocked) {
  mp::Lock lock;
  EXPECT_FALSE(lock.locked());
  ASSERT_TRUE(lock.acquire());
  EXPECT_TRUE(lock.locked());
  mp::Process held(ctx(), expect_locked, lock, true);
  held.start();
  ASSERT_TRUE(held.join(30s));
  EXPECT_EQ(held.exitcode(), 0);
  lock.release();
  EXPECT_FALSE(lock.locked());
  mp::Process freed(ctx(), expect_locked, lock, false);
  freed.start();
  ASSERT_TRUE(freed.join(30s));
  EXPECT_EQ(freed.exitcode(), 0);

  mp::RLock rlock;
  EXPECT_FALSE(rlock.locked());
  rlock.acquire();
  rlock.acquire();
  EXPECT_TRUE(rlock.locked());
  rlock.release();
  EXPECT_TRUE(rlock.locked());
  rlock.release();
  EXPECT_FALSE(rlock.locked());
}

TEST_P(SyncApiTest, BarrierActionRunsOnceByTheTrippingPartyBeforeRelease) {
  mp::Value<int> runs(0);
  mp::Value<int> runner(0);
  mp::Barrier barrier(3, count_action);
  mp::Process parties[3] = {mp::Process(ctx(), party, barrier, runs, runner),
                            mp::Process(ctx(), party, barrier, runs, runner),
                            mp::Process(ctx(), party, barrier, runs, runner)};
  for (auto& p : parties) p.start();
  int ran = 0, released = 0;
  for (auto& p : parties) {
    ASSERT_TRUE(p.join(60s));
    ran += p.exitcode() == 20;
    released += p.exitcode() == 21;
  }
  EXPECT_EQ(ran, 1);
  EXPECT_EQ(released, 2);
  EXPECT_EQ(runs.value(), 1);
  EXPECT_FALSE(barrier.broken());
}

TEST_P(SyncApiTest, ThrowingBarrierActionBreaksTheBarrier) {
  // Python: the exception reaches the party that ran the action; the others get
  // BrokenBarrierError.
  mp::Barrier barrier(3, throwing_action);
  mp::Process parties[3] = {mp::Process(ctx(), party_of_throwing_barrier, barrier),
                            mp::Process(ctx(), party_of_throwing_barrier, barrier),
                            mp::Process(ctx(), party_of_throwing_barrier, barrier)};
  for (auto& p : parties) p.start();
  int threw = 0, broken = 0;
  for (auto& p : parties) {
    ASSERT_TRUE(p.join(60s));
    threw += p.exitcode() == 20;
    broken += p.exitcode() == 21;
  }
  EXPECT_EQ(threw, 1);
  EXPECT_EQ(broken, 2);
  EXPECT_TRUE(barrier.broken());
  barrier.reset();
  EXPECT_FALSE(barrier.broken());
}

MP_ALL_START_METHODS(SyncApiTest);

TEST(SyncApi, BarrierActionWithLambdaAndDefaultTimeout) {
  static int calls = 0;
  calls = 0;
  mp::Barrier one(
      1, [] { ++calls; }, 5s);
  EXPECT_EQ(one.wait(), 0u);
  EXPECT_EQ(one.wait(), 0u);
  EXPECT_EQ(calls, 2);
  mp::Barrier plain(1, 5s);  // a timeout alone is still the default timeout, not an action
  EXPECT_EQ(plain.wait(), 0u);
}
