// Timeouts mean what a user means: an infinite or huge timeout (INFINITY, 1e300 s,
// seconds::max(), 1000 years) waits forever, like no timeout at all, instead of returning at once
// as if it had passed; a NaN timeout is an error (ProcessError). Every wait takes its timeout
// through Deadline::after, so one check per kind of wait covers them all.
#include <atomic>
#include <cmath>
#include <string>
#include <thread>
#include <vector>

#include <multiproc/pool.hpp>
#include <multiproc/queues.hpp>

#include "start_methods.hpp"

using namespace std::chrono_literals;

namespace {

std::vector<mp::Timeout> forever_timeouts() {
  return {std::chrono::duration<double>(INFINITY), std::chrono::duration<double>(1e300),
          std::chrono::seconds::max(), std::chrono::years(1000)};
}

const mp::Timeout kNaN = std::chrono::duration<double>(NAN);

// A NaN timeout is refused with a ProcessError that says so (not a timeout's Empty/TimeoutError).
template <class F>
void expect_nan_refused(F f) {
  try {
    f();
    ADD_FAILURE() << "a NaN timeout was accepted";
  } catch (const mp::ProcessError& e) {
    EXPECT_NE(std::string(e.what()).find("NaN"), std::string::npos) << e.what();
  }
}

// Runs wait() in a thread: it must still be waiting after 200 ms, then return true once
// provide() has run.
template <class Wait, class Provide>
void expect_waits_until_provided(Wait wait, Provide provide) {
  std::atomic<int> state{0};  // 0: waiting; 1: got it; 2: returned without it, or threw
  std::thread waiter([&] {
    try {
      state = wait() ? 1 : 2;
    } catch (...) {
      state = 2;
    }
  });
  std::this_thread::sleep_for(200ms);
  EXPECT_EQ(state.load(), 0) << "returned at once, as if the timeout had passed";
  try {
    provide();
  } catch (...) {
  }
  waiter.join();
  EXPECT_EQ(state.load(), 1);
}

TEST(Timeouts, DeadlineOfHugeOrInfiniteTimeoutIsNever) {
  for (const auto& t : forever_timeouts()) EXPECT_TRUE(mp::detail::Deadline::after(t).is_never());
  EXPECT_FALSE(mp::detail::Deadline::after(std::chrono::hours(24 * 365)).is_never());
  EXPECT_TRUE(mp::detail::Deadline::after(-1s).expired());
  EXPECT_TRUE(mp::detail::Deadline::after(std::chrono::duration<double>(-INFINITY)).expired());
  expect_nan_refused([] { mp::detail::Deadline::after(kNaN); });
}

TEST(Timeouts, QueueGetWaitsForever) {
  mp::Queue<int> q;
  for (const auto& t : forever_timeouts())
    expect_waits_until_provided([&] { return q.get(t) == 7; }, [&] { q.put(7); });
  expect_nan_refused([&] { q.get(kNaN); });
}

TEST(Timeouts, LockAcquireWaitsForever) {
  mp::Lock lock;
  for (const auto& t : forever_timeouts()) {
    lock.acquire();
    expect_waits_until_provided(
        [&] {
          const bool got = lock.acquire(true, t);
          if (got) lock.release();
          return got;
        },
        [&] { lock.release(); });
  }
  expect_nan_refused([&] { lock.acquire(true, kNaN); });
}

TEST(Timeouts, EventWaitWaitsForever) {
  for (const auto& t : forever_timeouts()) {
    mp::Event e;
    expect_waits_until_provided([&] { return e.wait(t); }, [&] { e.set(); });
  }
  mp::Event e;
  expect_nan_refused([&] { e.wait(kNaN); });
}

TEST(Timeouts, BarrierWaitWaitsForever) {
  for (const auto& t : forever_timeouts()) {
    mp::Barrier b(2);
    expect_waits_until_provided([&] { return b.wait(t) <= 1; }, [&] { b.wait(); });
    // The same as the barrier's default timeout.
    mp::Barrier d(2, t);
    expect_waits_until_provided([&] { return d.wait() <= 1; }, [&] { d.wait(); });
  }
  expect_nan_refused([] { mp::Barrier(2, kNaN); });
  mp::Barrier b(2);
  expect_nan_refused([&] { b.wait(kNaN); });
}

int wait_for_event(mp::Event e) {
  return e.wait(30s) ? 1 : 0;
}

class TimeoutsPool : public StartMethodTest {};

TEST_P(TimeoutsPool, AsyncResultGetWaitsForever) {
  mp::Pool pool(mp::PoolOptions{.processes = 1, .context = ctx()});
  for (const auto& t : forever_timeouts()) {
    mp::Event e;
    auto r = pool.apply_async(wait_for_event, e);
    expect_waits_until_provided([&] { return r.get(t) == 1; }, [&] { e.set(); });
  }
  mp::Event e;
  e.set();
  auto r = pool.apply_async(wait_for_event, e);
  expect_nan_refused([&] { r.get(kNaN); });
  EXPECT_EQ(r.get(30s), 1);
}

MP_ALL_START_METHODS(TimeoutsPool);

}  // namespace
