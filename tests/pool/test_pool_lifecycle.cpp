// Pool lifetime and failure paths: input ranges that throw, the destructor, a failing
// initializer (CPython's TestPoolNotLeakOnFailure), the progress bar; each under every start
// method where a process is involved.
#include <sys/wait.h>
#include <atomic>
#include <condition_variable>
#include <cstdio>
#include <future>
#include <mutex>
#include <optional>
#include <ranges>
#include <set>
#include <stdexcept>
#include <string>
#include <thread>

#include <gmock/gmock.h>

#include "exit_three.hpp"
#include "start_methods.hpp"

using namespace std::chrono_literals;

namespace {

int64_t inc(int64_t x) {
  return x + 1;
}
int slow(int x) {
  std::this_thread::sleep_for(200ms);
  return x;
}
void failing_init() {
  throw std::runtime_error("cannot initialise");
}

// Initializers that take shared objects (Python's initargs=(value, queue)).
int g_init_value = 0;
void init_from_value(mp::Value<int> v) {
  g_init_value = v.value();
}
void init_announce(mp::Queue<int> q) {
  q.put(static_cast<int>(getpid()));
}
int read_init_value(int) {
  return g_init_value;
}
int exit_worker(int) {
  std::_Exit(0);
}
// A Pool a forked child inherits (a global, as Python programs keep theirs).
std::optional<mp::Pool> g_inherited_pool;
int apply_on_inherited_pool(int x) {
  return g_inherited_pool->apply(inc, x);
}
// A forked child's uses of the inherited Pool: exits with 128 + a bit per use that was not
// refused, else through exit(3).
void use_inherited_pool() {
  auto& pool = *g_inherited_pool;
  int failed = refused([&] { (void)pool.apply_async(inc, 1).get(5s); });
  failed |= refused([&] { (void)pool.map(inc, std::vector<int64_t>{1, 2}); }) << 1;
  failed |= refused([&] { (void)pool.imap(inc, std::vector<int64_t>{1, 2}).next(5s); }) << 2;
  failed |= refused([&] { (void)pool.worker_pids(); }) << 3;  // the parent's: not to be signalled
  failed |= refused([&] { pool.close(); }) << 4;
  failed |= refused([&] { pool.join(); }) << 5;
  failed |= refused([&] { pool.terminate(); }) << 6;
  if (failed) std::_Exit(128 | failed);
  exit_three();
}
int sleep_seconds(int s) {
  std::this_thread::sleep_for(std::chrono::seconds(s));
  return s;
}

// Pool::join() with a bound, for tests of joins that used to hang. A join still waiting after
// `limit` cannot be interrupted (a concurrent terminate() waits for it): the test program says so
// and ends, and the resource tracker ends the pool's workers.
void join_within(mp::Pool& pool, std::chrono::seconds limit, const char* what) {
  std::promise<void> joined;
  auto done = joined.get_future();
  std::thread joiner([&] {
    pool.join();
    joined.set_value();
  });
  if (done.wait_for(limit) != std::future_status::ready) {
    std::fprintf(stderr, "FAILED: Pool::join() still waiting after %llds: %s\n",
                 static_cast<long long>(limit.count()), what);
    std::_Exit(1);
  }
  joiner.join();
}

// Ends the test program if the guarded section is still running after `limit`: for tests of calls
// that used to hang (a hung call cannot be interrupted; the resource tracker ends the workers).
class Watchdog {
 public:
  Watchdog(std::chrono::seconds limit, const char* what)
      : thread_([this, limit, what] {
          std::unique_lock lk(mu_);
          if (!cv_.wait_for(lk, limit, [this] { return done_; })) {
            std::fprintf(stderr, "FAILED: still waiting after %llds: %s\n",
                         static_cast<long long>(limit.count()), what);
            std::_Exit(1);
          }
        }) {}
  ~Watchdog() {
    {
      std::lock_guard lk(mu_);
      done_ = true;
    }
    cv_.notify_all();
    thread_.join();
  }

 private:
  std::mutex mu_;
  std::condition_variable cv_;
  bool done_ = false;
  std::thread thread_;
};

int raise_after_a_while(int x) {
  std::this_thread::sleep_for(200ms);
  throw std::runtime_error("task failed with " + std::to_string(x));
}
int64_t slow_inc(int64_t x) {
  std::this_thread::sleep_for(200ms);
  return x + 1;
}
int raise_runtime(int x) {
  throw std::runtime_error("task failed with " + std::to_string(x));
}

// What a pool callback that ends its own pool saw: "returned", or the exception's message.
template <class F>
void tell(std::promise<std::string>& said, F&& call) {
  try {
    call();
    said.set_value("returned");
  } catch (const std::exception& e) {
    said.set_value(std::string("threw: ") + e.what());
  }
}

// An input range whose iteration throws at element `at`, like a Python generator raising.
struct ThrowingInput {
  int64_t at;
  struct iterator {
    using value_type = int64_t;
    using difference_type = std::ptrdiff_t;
    int64_t i = 0;
    int64_t at = 0;
    int64_t operator*() const {
      if (i == at) throw std::runtime_error("input failed at " + std::to_string(at));
      return i;
    }
    iterator& operator++() {
      ++i;
      return *this;
    }
    void operator++(int) { ++i; }
    bool operator==(const iterator& o) const { return i == o.i; }
  };
  iterator begin() const { return {0, at}; }
  iterator end() const { return {1000000, at}; }
};

}  // namespace

class PoolLifecycleTest : public StartMethodTest {
 protected:
  mp::PoolOptions options(unsigned n) const {
    return mp::PoolOptions{.processes = n, .context = ctx()};
  }
};

TEST_P(PoolLifecycleTest, InitializerWithSharedObjectsOpensThemInEveryWorker) {
  // Each worker (and each replacement) opens the initializer's Value and Queue; before each launch
  // carried its own references, the first workers to drop theirs destroyed both objects, the
  // third worker could not open them and the pool broke.
  mp::Value<int> v(7);
  {
    mp::Pool pool(
        mp::PoolOptions{.processes = 3, .initializer = {init_from_value, v}, .context = ctx()});
    EXPECT_EQ(pool.map(read_init_value, std::vector<int>(30, 0), 1), std::vector<int>(30, 7));
    // A replacement worker runs the initializer too.
    EXPECT_THROW(pool.apply(exit_worker, 0), mp::WorkerLost);
    EXPECT_EQ(pool.map(read_init_value, std::vector<int>(30, 0), 1), std::vector<int>(30, 7));
  }
  mp::Queue<int> q;
  {
    mp::Pool pool(
        mp::PoolOptions{.processes = 3, .initializer = {init_announce, q}, .context = ctx()});
    std::set<int> pids;
    for (int i = 0; i < 3; ++i) pids.insert(q.get(10s));
    EXPECT_EQ(pids.size(), 3u);
    EXPECT_EQ(pool.map(read_init_value, std::vector<int>(6, 0), 1).size(), 6u);
  }
  v.set(8);  // the parent's objects outlive the pool
  EXPECT_EQ(v.value(), 8);
  q.put(1);
  EXPECT_EQ(q.get(1s), 1);
}

TEST_P(PoolLifecycleTest, ImapInputThatThrowsSurfacesInPlace) {
  mp::Pool pool(options(2));
  auto it = pool.imap(inc, ThrowingInput{50}, 4);
  for (int64_t i = 0; i < 50; ++i) ASSERT_EQ(it.next(30s), i + 1);
  try {
    it.next(30s);
    FAIL() << "the input's exception did not surface";
  } catch (const std::runtime_error& e) {
    EXPECT_STREQ(e.what(), "input failed at 50");
  }
  EXPECT_EQ(it.next(30s), std::nullopt);
  EXPECT_EQ(pool.apply(inc, 1), 2);  // the pool is still usable
}

// More chunks than the pool has task slots (16384): the last ones are sent by a feed that runs
// after close(), the same feed that queues the workers' stop sentinels. The sentinels used to
// go ahead of those chunks: the workers left, join() returned, and get() never saw the result.
TEST_P(PoolLifecycleTest, MapAsyncOfMoreChunksThanSlotsThenCloseAndJoinCompletes) {
  mp::Pool pool(options(2));
  auto result = pool.map_async(inc, std::views::iota(int64_t{0}, int64_t{20000}), 1);
  pool.close();
  join_within(pool, 60s, "it waited for chunks queued behind the stop sentinels");
  auto values = result.get(10s);
  ASSERT_EQ(values.size(), 20000u);
  EXPECT_EQ(values.back(), 20000);
}

// Python's task handler reads an imap's whole input: close() + join() before reading the
// results runs every call, and the results are there afterwards. The lazy input used to wait for
// a consumer that was itself waiting for join(): the join never returned.
TEST_P(PoolLifecycleTest, ImapNotReadBeforeCloseAndJoinRunsEveryCall) {
  mp::Pool pool(options(2));
  auto ordered = pool.imap(inc, std::views::iota(int64_t{0}, int64_t{100}));
  auto unordered = pool.imap_unordered(inc, std::views::iota(int64_t{0}, int64_t{100}), 3);
  pool.close();
  join_within(pool, 30s, "it waited for imap results nobody had read yet");
  int64_t expect = 0;
  for (int64_t y : ordered) EXPECT_EQ(y, ++expect);
  EXPECT_EQ(expect, 100);
  std::set<int64_t> seen;
  for (int64_t y : unordered) seen.insert(y);
  EXPECT_EQ(seen.size(), 100u);
}

// An imap result dropped half way (or never read) holds nothing back: its remaining calls run
// (as in Python) with their results discarded, and close() + join() returns.
TEST_P(PoolLifecycleTest, ImapDroppedHalfWayLetsCloseAndJoinReturn) {
  mp::Pool pool(options(2));
  {
    auto it = pool.imap(inc, std::views::iota(int64_t{0}, int64_t{200}), 2);
    for (int64_t i = 0; i < 5; ++i) ASSERT_EQ(it.next(30s), i + 1);
  }
  { (void)pool.imap_unordered(inc, std::views::iota(int64_t{0}, int64_t{200})); }
  EXPECT_EQ(pool.apply(inc, 1), 2);  // the dropped jobs do not hold up later calls
  pool.close();
  join_within(pool, 30s, "it waited for dropped imap results");
}

// Python's terminate() from one thread makes another thread's join() return. Both ended by
// joining the pool's threads, and joined the same std::thread twice: the second hung.
TEST_P(PoolLifecycleTest, TerminateWhileAnotherThreadJoinsEndsBoth) {
  // Either call may be the one that hangs: a watchdog ends the test program instead.
  std::atomic<bool> finished{false};
  std::thread watchdog([&] {
    for (int i = 0; i < 400; ++i) {
      if (finished.load()) return;
      std::this_thread::sleep_for(100ms);
    }
    std::fprintf(stderr, "FAILED: terminate() or a concurrent join() still waiting after 40 s\n");
    std::_Exit(1);
  });
  mp::Pool pool(options(2));
  auto long_call = pool.apply_async(sleep_seconds, 60);
  pool.close();
  std::thread joiner([&] { pool.join(); });
  std::this_thread::sleep_for(300ms);
  pool.terminate();
  joiner.join();
  finished.store(true);
  watchdog.join();
  EXPECT_THROW(long_call.get(10s), mp::BrokenPool);
}

// A forked child that calls exit() destroys its copy of a global Pool. That copy used to end the
// parent's pool: it removed the pool's shared memory (the parent's next call failed with "cannot
// open shared memory segment ... No such file or directory").
TEST(PoolInheritedByFork, ChildThatExitsLeavesTheParentsPoolIntact) {
  g_inherited_pool.emplace(
      mp::PoolOptions{.processes = 2, .context = mp::get_context(mp::StartMethod::fork)});
  auto workers = g_inherited_pool->worker_pids();
  mp::Process child(mp::get_context(mp::StartMethod::fork), exit_three);
  child.start();
  ASSERT_TRUE(child.join(30s));
  EXPECT_TRUE(exited_three(child.exitcode())) << child.exitcode().value_or(-999);
  EXPECT_EQ(g_inherited_pool->apply(inc, 41), 42);
  EXPECT_EQ(g_inherited_pool->worker_pids(), workers);
  g_inherited_pool.reset();
}

// A task that uses its own pool through an inherited global: a clear error in the task (Python's
// copy would wait for ever on handler threads the child does not have); it used to crash the
// worker (SIGSEGV) or hang.
TEST(PoolInheritedByFork, UsingItInAForkedWorkerIsAClearError) {
  g_inherited_pool.emplace(
      mp::PoolOptions{.processes = 2, .context = mp::get_context(mp::StartMethod::fork)});
  auto r = g_inherited_pool->apply_async(apply_on_inherited_pool, 1);
  try {
    r.get(30s);
    ADD_FAILURE() << "no error";
  } catch (const mp::TimeoutError&) {
    ADD_FAILURE() << "the task hung";
  } catch (const std::exception& e) {
    EXPECT_THAT(e.what(), ::testing::HasSubstr("cannot use its copy"));
  }
  EXPECT_EQ(g_inherited_pool->apply(inc, 1), 2);
  g_inherited_pool.reset();
}

// Every use of the copy a forked child inherits is the same clear error; worker_pids() used to
// hand the child the parent's workers (to signal them, as ProcessPoolExecutor's
// terminate_workers() does).
TEST(PoolInheritedByFork, EveryUseInAForkedChildIsAClearError) {
  g_inherited_pool.emplace(
      mp::PoolOptions{.processes = 2, .context = mp::get_context(mp::StartMethod::fork)});
  auto workers = g_inherited_pool->worker_pids();
  mp::Process child(mp::get_context(mp::StartMethod::fork), use_inherited_pool);
  child.start();
  bool ended = child.join(60s);
  if (!ended) child.kill();
  EXPECT_TRUE(ended) << "the child hung using its copy";
  if (ended) {
    EXPECT_TRUE(exited_three(child.exitcode())) << "exit code " << child.exitcode().value_or(-999)
                                                << " (128 + a bit per use that was not refused)";
  }
  EXPECT_EQ(g_inherited_pool->apply(inc, 41), 42);
  EXPECT_EQ(g_inherited_pool->worker_pids(), workers);
  g_inherited_pool.reset();
}

// Pool callbacks run in the pool's result thread, which join() waits for: join() from a callback
// is a clear error (Python raises RuntimeError "cannot join current thread"), where it used to be
// a std::system_error "Resource deadlock avoided"; the pool then still joins from elsewhere.
TEST_P(PoolLifecycleTest, JoinFromACallbackIsAClearError) {
  mp::Pool pool(options(2));
  std::promise<std::string> said;
  auto r = pool.apply_async(mp::callbacks([&](int) {
                              try {
                                pool.close();
                                pool.join();
                                said.set_value("returned");
                              } catch (const std::exception& e) {
                                said.set_value(e.what());
                              }
                            }),
                            slow, 1);
  auto answer = said.get_future();
  ASSERT_EQ(answer.wait_for(30s), std::future_status::ready);
  EXPECT_THAT(answer.get(), ::testing::HasSubstr("callback"));
  EXPECT_EQ(r.get(10s), 1);
  join_within(pool, 30s, "after a join() refused in a callback");
}

// terminate() from a callback, which runs in the pool's own result thread (Python's
// _terminate_pool does not join the result handler when called from it): the pool ends, the call
// returns, later calls fail as after any terminate(), and the destructor completes. It used to
// join the very thread it ran in: std::system_error "Resource deadlock avoided" half way through
// terminate(), and the destructor then destroyed the still joinable thread (std::terminate).
TEST_P(PoolLifecycleTest, TerminateFromACallbackEndsThePool) {
  // 0: apply_async's callback, 1: its error_callback, 2: map_async's callback.
  for (int how = 0; how < 3; ++how) {
    SCOPED_TRACE(how);
    Watchdog watchdog(60s, "terminate() from a pool callback");
    std::vector<pid_t> pids;
    mp::AsyncResult<int> pending;
    {
      mp::Pool pool(options(2));
      pids = pool.worker_pids();
      pending = pool.apply_async(sleep_seconds, 60);  // fails with BrokenPool
      std::promise<std::string> said;
      auto end_pool = [&] { tell(said, [&] { pool.terminate(); }); };
      std::optional<mp::AsyncResult<int>> own;
      std::optional<mp::MapResult<int64_t>> own_map;
      if (how == 0)
        own = pool.apply_async(mp::callbacks([&](int) { end_pool(); }), slow, 1);
      else if (how == 1)
        own = pool.apply_async(mp::callbacks(nullptr, [&](std::exception_ptr) { end_pool(); }),
                               raise_runtime, 1);
      else
        own_map = pool.map_async(mp::callbacks([&](std::vector<int64_t>&) { end_pool(); }), inc,
                                 std::vector<int64_t>{1, 2, 3});
      auto answer = said.get_future();
      ASSERT_EQ(answer.wait_for(30s), std::future_status::ready);
      EXPECT_EQ(answer.get(), "returned");
      // The callback's own call completed before terminate() (its result is ready once the
      // callback returns).
      if (how == 0) {
        EXPECT_EQ(own->get(10s), 1);
      } else if (how == 1) {
        EXPECT_THROW(own->get(10s), std::runtime_error);
      } else {
        EXPECT_EQ(own_map->get(10s), (std::vector<int64_t>{2, 3, 4}));
      }
      EXPECT_THROW(pending.get(10s), mp::BrokenPool);
      EXPECT_THROW(pool.apply_async(inc, 1), mp::ProcessError);
      EXPECT_THROW(pool.map(inc, std::vector<int64_t>{1}), mp::ProcessError);
      pool.terminate();  // again, from here: nothing left to do
      pool.join();       // after terminate(): returns at once
    }                    // the destructor completes
    for (pid_t pid : pids)
      EXPECT_TRUE(eventually([&] { return ::kill(pid, 0) != 0; })) << "worker " << pid << " lives";
  }
}

// A callback that called terminate() may still be running when the program moves on: join() and
// the destructor wait for it to return (it may use what the Pool's owner is about to destroy).
// Both returned at once, the callback still running (an executor destroyed that way had its
// counters decremented after it was gone, and the next executor at the same address hung).
TEST_P(PoolLifecycleTest, JoinAndDestructorWaitForACallbackThatTerminatedThePool) {
  for (bool by_join : {true, false}) {
    SCOPED_TRACE(by_join);
    Watchdog watchdog(60s, "join() or ~Pool after terminate() in a callback");
    std::atomic<bool> callback_done{false};
    std::promise<void> terminated;
    {
      mp::Pool pool(options(2));
      auto r = pool.apply_async(mp::callbacks([&](int64_t) {
                                  pool.terminate();
                                  terminated.set_value();
                                  std::this_thread::sleep_for(300ms);
                                  callback_done.store(true);
                                }),
                                inc, 1);
      ASSERT_EQ(terminated.get_future().wait_for(30s), std::future_status::ready);
      if (by_join) {
        pool.join();
        EXPECT_TRUE(callback_done.load()) << "join() returned before the callback";
      }
    }
    EXPECT_TRUE(callback_done.load()) << "~Pool returned before the callback";
  }
}

// The same from the pool's other thread, the worker monitor: it fails every call with BrokenPool
// when the pool breaks (here: workers whose initializer fails, over and over), running their
// error callbacks.
TEST_P(PoolLifecycleTest, TerminateFromACallbackOfABrokenPoolEndsThePool) {
  Watchdog watchdog(120s, "terminate() from a callback of a broken pool");
  {
    mp::Pool pool(mp::PoolOptions{.processes = 2, .initializer = failing_init, .context = ctx()});
    std::promise<std::string> said;
    auto r = pool.apply_async(
        mp::callbacks(nullptr, [&](std::exception_ptr) { tell(said, [&] { pool.terminate(); }); }),
        inc, 1);
    auto answer = said.get_future();
    ASSERT_EQ(answer.wait_for(100s), std::future_status::ready);
    EXPECT_EQ(answer.get(), "returned");
    EXPECT_THROW(r.get(10s), mp::BrokenPool);
    EXPECT_THROW(pool.apply_async(inc, 1), mp::ProcessError);
  }
  EXPECT_TRUE(eventually([] { return mp::active_children().empty(); }));
}

// A callback runs before its own result is marked ready (as Python's): get() of that result
// inside the callback waited for ever. It has the value (or the error) already, and returns it.
TEST_P(PoolLifecycleTest, GetOfItsOwnResultInsideItsCallbackReturns) {
  Watchdog watchdog(60s, "get() of a result inside its own callback");
  mp::Pool pool(options(2));
  std::atomic<bool> published{false};
  std::optional<mp::AsyncResult<int>> ok, bad;
  std::optional<mp::MapResult<int64_t>> mapped;
  std::promise<std::string> said_ok, said_bad, said_map;
  ok.emplace(pool.apply_async(mp::callbacks([&](int) {
                                tell(said_ok, [&] {
                                  while (!published.load()) std::this_thread::yield();
                                  if (ok->get() != 1) throw std::logic_error("wrong value");
                                });
                              }),
                              slow, 1));
  bad.emplace(pool.apply_async(mp::callbacks(nullptr,
                                             [&](std::exception_ptr) {
                                               tell(said_bad, [&] {
                                                 while (!published.load())
                                                   std::this_thread::yield();
                                                 try {
                                                   (void)bad->get();
                                                 } catch (const std::runtime_error&) {
                                                   return;
                                                 }
                                                 throw std::logic_error("no error");
                                               });
                                             }),
                               raise_after_a_while, 1));
  mapped.emplace(pool.map_async(mp::callbacks([&](std::vector<int64_t>&) {
                                  tell(said_map, [&] {
                                    while (!published.load()) std::this_thread::yield();
                                    if (mapped->get().size() != 3) throw std::logic_error("size");
                                  });
                                }),
                                slow_inc, std::vector<int64_t>{1, 2, 3}));
  published.store(true);
  for (auto* said : {&said_ok, &said_bad, &said_map}) {
    auto answer = said->get_future();
    ASSERT_EQ(answer.wait_for(30s), std::future_status::ready);
    EXPECT_EQ(answer.get(), "returned");
  }
  EXPECT_EQ(ok->get(10s), 1);
}

// A callback may wait on other results of its own pool: the waiting callback processes them
// itself (a nested pump), so get(), map() and imap() there return.
TEST_P(PoolLifecycleTest, CallbackWaitingOnOtherResultsOfItsPoolGetsThem) {
  Watchdog watchdog(60s, "a callback waiting on other results of its pool");
  mp::Pool pool(options(2));
  std::promise<std::string> said;
  auto own = pool.apply_async(
      mp::callbacks([&](int) {
        tell(said, [&] {
          if (pool.apply_async(inc, 41).get(30s) != 42) throw std::logic_error("apply");
          if (pool.map(inc, std::vector<int64_t>{5, 6}) != std::vector<int64_t>{6, 7})
            throw std::logic_error("map");
          std::vector<int64_t> got;
          for (int64_t y : pool.imap(inc, std::vector<int64_t>{1, 2, 3})) got.push_back(y);
          if (got != std::vector<int64_t>{2, 3, 4}) throw std::logic_error("imap");
        });
      }),
      slow, 1);
  auto answer = said.get_future();
  ASSERT_EQ(answer.wait_for(30s), std::future_status::ready);
  EXPECT_EQ(answer.get(), "returned");
  EXPECT_EQ(own.get(10s), 1);
}

// A Pool destroyed in its own callback (the callback owns it): the destructor terminates the pool
// from the pool's own thread, and the pool's engine goes once that thread is done with it. The
// engine used to be destroyed under the running thread (a still joinable std::thread: the program
// ended).
TEST_P(PoolLifecycleTest, DestroyingThePoolInItsOwnCallbackEndsIt) {
  // 0: apply_async's callback (the result thread), 1: the error callback of a call on a pool that
  // broke (the worker monitor).
  for (int how = 0; how < 2; ++how) {
    SCOPED_TRACE(how);
    Watchdog watchdog(120s, "destroying the pool in its own callback");
    std::optional<mp::Pool> pool;
    if (how == 0)
      pool.emplace(options(2));
    else
      pool.emplace(mp::PoolOptions{.processes = 2, .initializer = failing_init, .context = ctx()});
    std::promise<std::string> said;
    auto drop = [&] { tell(said, [&] { pool.reset(); }); };
    std::optional<mp::AsyncResult<int>> pending, own;
    if (how == 0) {
      auto pids = pool->worker_pids();
      pending = pool->apply_async(sleep_seconds, 60);
      own = pool->apply_async(mp::callbacks([&](int) { drop(); }), slow, 1);
      auto answer = said.get_future();
      ASSERT_EQ(answer.wait_for(30s), std::future_status::ready);
      EXPECT_EQ(answer.get(), "returned");
      EXPECT_EQ(own->get(10s), 1);
      EXPECT_THROW(pending->get(10s), mp::BrokenPool);
      for (pid_t pid : pids)
        EXPECT_TRUE(eventually([&] { return ::kill(pid, 0) != 0; })) << "worker " << pid;
    } else {
      own = pool->apply_async(mp::callbacks(nullptr, [&](std::exception_ptr) { drop(); }), slow, 1);
      auto answer = said.get_future();
      ASSERT_EQ(answer.wait_for(100s), std::future_status::ready);
      EXPECT_EQ(answer.get(), "returned");
      EXPECT_THROW(own->get(10s), mp::BrokenPool);
    }
    EXPECT_TRUE(eventually([] { return mp::active_children().empty(); }));
  }
}

// close() from a callback only stops new calls: what was submitted still runs, and join() from
// another thread returns.
TEST_P(PoolLifecycleTest, CloseFromACallbackLetsTheRestFinish) {
  Watchdog watchdog(60s, "close() from a pool callback");
  mp::Pool pool(options(2));
  std::promise<std::string> said;
  auto own =
      pool.apply_async(mp::callbacks([&](int) { tell(said, [&] { pool.close(); }); }), slow, 1);
  auto answer = said.get_future();
  auto later = pool.map_async(inc, std::vector<int64_t>{1, 2, 3, 4}, 1);
  ASSERT_EQ(answer.wait_for(30s), std::future_status::ready);
  EXPECT_EQ(answer.get(), "returned");
  EXPECT_THROW(pool.apply_async(inc, 1), mp::ProcessError);
  pool.join();
  EXPECT_EQ(own.get(10s), 1);
  EXPECT_EQ(later.get(10s), (std::vector<int64_t>{2, 3, 4, 5}));
}

TEST_P(PoolLifecycleTest, MapInputThatThrowsReachesTheCaller) {
  mp::Pool pool(options(2));
  EXPECT_THROW(pool.map(inc, ThrowingInput{10}), std::runtime_error);
  EXPECT_EQ(pool.map(inc, std::vector<int64_t>{1, 2}), (std::vector<int64_t>{2, 3}));
}

TEST_P(PoolLifecycleTest, DestructorTerminatesLikePythonsWith) {
  mp::AsyncResult<int> pending;
  std::vector<pid_t> pids;
  {
    mp::Pool pool(options(2));
    pids = pool.worker_pids();
    pending = pool.apply_async(slow, 1);
  }  // ~Pool() = terminate(): the pending task fails, the workers are gone
  EXPECT_THROW(pending.get(10s), mp::BrokenPool);
  // Reaped, not merely killed: the workers are no longer children of ours (no zombies).
  for (pid_t pid : pids) {
    if (method() == mp::StartMethod::forkserver) continue;  // children of the fork server
    EXPECT_EQ(::waitpid(pid, nullptr, WNOHANG), -1) << "worker " << pid << " not reaped";
  }
}

TEST_P(PoolLifecycleTest, FailingInitializerBreaksThePoolWithoutLeaks) {
  int fds = count_open_fds();
  {
    mp::Pool pool(mp::PoolOptions{.processes = 2, .initializer = failing_init, .context = ctx()});
    auto r = pool.apply_async(inc, 1);
    try {
      r.get(120s);
      FAIL() << "a pool whose initializer always fails ran a task";
    } catch (const mp::BrokenPool& e) {
      EXPECT_NE(std::string(e.what()).find("cannot initialise"), std::string::npos) << e.what();
    }
    EXPECT_THROW(pool.apply_async(inc, 1), mp::BrokenPool);
  }
  EXPECT_TRUE(mp::active_children().empty());
  EXPECT_LE(count_open_fds(), fds + 2);
}

TEST_P(PoolLifecycleTest, ProgressBarReportsOnStderr) {
  mp::Pool pool(options(2));
  testing::internal::CaptureStderr();
  auto ys = pool.map(inc, std::vector<int64_t>(1000, 1),
                     mp::MapOptions{.chunksize = 10, .progress = true});
  std::string err = testing::internal::GetCapturedStderr();
  EXPECT_EQ(ys.size(), 1000u);
  // Not a terminal here: plain lines, the last one complete.
  EXPECT_NE(err.find("map: 100% |####################| 1000/1000"), std::string::npos) << err;
  testing::internal::CaptureStderr();
  size_t n = 0;
  for (auto y : pool.imap(inc, std::views::iota(int64_t{0}, int64_t{300}),
                          mp::MapOptions{.chunksize = 5, .progress = true})) {
    (void)y;
    ++n;
  }
  err = testing::internal::GetCapturedStderr();
  EXPECT_EQ(n, 300u);
  EXPECT_NE(err.find("imap: 100%"), std::string::npos) << err;
  EXPECT_NE(err.find("300/300"), std::string::npos) << err;
}

MP_ALL_START_METHODS(PoolLifecycleTest);

TEST(AsyncResult, EmptyOneSaysSo) {
  mp::AsyncResult<int> empty;
  EXPECT_FALSE(empty.ready());
  EXPECT_THROW(empty.get(), mp::ProcessError);
  EXPECT_THROW(empty.wait(), mp::ProcessError);
}

TEST(ProgressBar, RendersCountsRateAndEta) {
  multiproc::detail::ProgressBar bar("imap", 200);
  std::string line = bar.render(50);
  EXPECT_NE(line.find("imap: 25% |#####"), std::string::npos) << line;
  EXPECT_NE(line.find("50/200"), std::string::npos) << line;
  EXPECT_NE(line.find("/s]"), std::string::npos) << line;
  multiproc::detail::ProgressBar unknown("imap_unordered", 0);
  EXPECT_EQ(unknown.render(7).rfind("imap_unordered: 7 [", 0), 0u) << unknown.render(7);
}
