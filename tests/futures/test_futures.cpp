// Future, wait(), as_completed(), then/when_all/when_any/share/co_await and ThreadPoolExecutor:
// the thread-only parts of CPython's Lib/test/test_concurrent_futures/ (test_future, test_wait,
// test_as_completed, test_shutdown, executor.map) - no process is started here, but for the forked
// child that finds a ThreadPoolExecutor it inherited.
#include <dirent.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <coroutine>
#include <cstdio>
#include <future>
#include <optional>
#include <set>
#include <stdexcept>
#include <string>
#include <thread>
#include <vector>

#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <multiproc/futures.hpp>
#include <multiproc/process.hpp>

#include "answered_within.hpp"
#include "exit_three.hpp"
#include "start_methods.hpp"

namespace mp = multiproc;
using namespace std::chrono_literals;

namespace {

// Python's PENDING_FUTURE, SUCCESSFUL_FUTURE, EXCEPTION_FUTURE, CANCELLED_FUTURE.
mp::Future<int> pending() {
  return mp::Future<int>(std::make_shared<mp::detail::FutureState<int>>());
}
mp::Future<int> successful(int v) {
  auto st = std::make_shared<mp::detail::FutureState<int>>();
  st->set_value(v);
  return mp::Future<int>(st);
}
mp::Future<int> failed() {
  auto st = std::make_shared<mp::detail::FutureState<int>>();
  st->set_error(std::make_exception_ptr(std::runtime_error("boom")));
  return mp::Future<int>(st);
}
mp::Future<int> cancelled() {
  auto f = pending();
  f.cancel();
  return f;
}

// A gate a task waits on, so a test decides when it ends.
struct Gate {
  std::mutex mu;
  std::condition_variable cv;
  bool open = false;
  void release() {
    std::lock_guard lk(mu);
    open = true;
    cv.notify_all();
  }
  void wait() {
    std::unique_lock lk(mu);
    cv.wait(lk, [&] { return open; });
  }
};

// A ThreadPoolExecutor a forked child inherits (a global): its threads are not in the child.
std::optional<mp::ThreadPoolExecutor> g_inherited_thread_executor;
int twice(int x) {
  return 2 * x;
}
// Exits with 128 + a bit per use that was not refused, else through exit(3) (the copy's
// destructor runs).
void use_inherited_thread_executor() {
  auto& ex = *g_inherited_thread_executor;
  int failed = refused([&] { (void)ex.submit(twice, 2).result(5s); });
  failed |= refused([&] {
              for (int v : ex.map(twice, std::vector<int>{1, 2})) (void)v;
            })
            << 1;
  failed |= refused([&] { ex.shutdown(/*wait=*/false); }) << 2;
  failed |= refused([&] { ex.shutdown(/*wait=*/true); }) << 3;
  if (failed) std::_Exit(128 | failed);
  exit_three();
}

TEST(Future, States) {  // test_future: FutureTests
  auto p = pending();
  EXPECT_FALSE(p.done());
  EXPECT_FALSE(p.running());
  EXPECT_FALSE(p.cancelled());
  EXPECT_THROW(p.result(10ms), mp::TimeoutError);
  EXPECT_THROW(p.exception(10ms), mp::TimeoutError);
  EXPECT_TRUE(p.cancel());
  EXPECT_TRUE(p.cancelled());
  EXPECT_TRUE(p.done());
  EXPECT_THROW(p.result(), mp::CancelledError);
  EXPECT_THROW(p.exception(), mp::CancelledError);
  EXPECT_TRUE(p.cancel());  // cancelling again: still cancelled

  auto ok = successful(42);
  EXPECT_EQ(ok.result(), 42);
  EXPECT_EQ(ok.exception(), nullptr);
  EXPECT_FALSE(ok.cancel());  // a finished call cannot be cancelled
  EXPECT_THROW(failed().result(), std::runtime_error);
  EXPECT_NE(failed().exception(), nullptr);

  auto running = pending();
  running.shared_state()->set_running();
  EXPECT_TRUE(running.running());
  EXPECT_FALSE(running.cancel());
}

TEST(Future, DoneCallbacks) {  // test_done_callback_*
  std::vector<int> seen;
  auto f = pending();
  f.add_done_callback([&](const mp::Future<int>& d) { seen.push_back(d.result()); });
  f.add_done_callback([&](const mp::Future<int>&) { throw std::runtime_error("ignored"); });
  f.add_done_callback([&](const mp::Future<int>& d) { seen.push_back(d.result() + 1); });
  EXPECT_TRUE(seen.empty());
  f.shared_state()->set_value(5);
  EXPECT_EQ(seen, (std::vector<int>{5, 6}));  // in order; one that throws does not stop the rest
  bool already = false;
  f.add_done_callback([&](const mp::Future<int>&) { already = true; });  // done: runs at once
  EXPECT_TRUE(already);
  bool was_cancelled = false;
  auto c = pending();
  c.add_done_callback([&](const mp::Future<int>& d) { was_cancelled = d.cancelled(); });
  c.cancel();
  EXPECT_TRUE(was_cancelled);
}

TEST(Futures, Wait) {  // test_wait
  auto ex_f = failed();
  {  // test_first_completed
    mp::ThreadPoolExecutor ex(2);
    Gate g;
    auto slow = ex.submit([&] {
      g.wait();
      return 1;
    });
    auto quick = ex.submit([] { return 2; });
    auto [done, not_done] = mp::wait(std::vector{slow, quick}, 10s, mp::FIRST_COMPLETED);
    ASSERT_EQ(done.size(), 1u);
    EXPECT_EQ(done[0].result(), 2);
    ASSERT_EQ(not_done.size(), 1u);
    g.release();
  }
  {  // test_first_completed_some_already_completed
    auto [done, not_done] =
        mp::wait(std::vector{cancelled(), successful(1), pending()}, 10s, mp::FIRST_COMPLETED);
    EXPECT_EQ(done.size(), 2u);
    EXPECT_EQ(not_done.size(), 1u);
  }
  {  // test_first_exception: returns at the first failure, not waiting for the slow one
    mp::ThreadPoolExecutor ex(3);
    Gate g;
    auto ok = ex.submit([] { return 1; });
    // Done before the failure, as CPython's (whose failing call sleeps first): otherwise the
    // failure may come first and `ok` still be running (seen under TSan).
    ASSERT_EQ(ok.result(), 1);
    auto bad = ex.submit([]() -> int { throw std::invalid_argument("x"); });
    auto slow = ex.submit([&] {
      g.wait();
      return 3;
    });
    auto [done, not_done] = mp::wait(std::vector{ok, bad, slow}, 10s, mp::FIRST_EXCEPTION);
    EXPECT_EQ(done.size(), 2u);
    EXPECT_EQ(not_done.size(), 1u);
    g.release();
  }
  {  // test_first_exception_one_already_failed
    auto [done, not_done] = mp::wait(std::vector{ex_f, pending()}, 10s, mp::FIRST_EXCEPTION);
    EXPECT_EQ(done.size(), 1u);
    EXPECT_EQ(not_done.size(), 1u);
  }
  {  // test_all_completed
    auto [done, not_done] =
        mp::wait(std::vector{successful(1), failed(), cancelled()}, 10s, mp::ALL_COMPLETED);
    EXPECT_EQ(done.size(), 3u);
    EXPECT_TRUE(not_done.empty());
  }
  {  // test_timeout: no exception, the pending one is in not_done
    auto t0 = std::chrono::steady_clock::now();
    auto [done, not_done] = mp::wait(std::vector{successful(1), pending()}, 100ms);
    EXPECT_GE(std::chrono::steady_clock::now() - t0, 90ms);
    EXPECT_EQ(done.size(), 1u);
    EXPECT_EQ(not_done.size(), 1u);
  }
}

// An empty Future among those given to wait(), as_completed(), when_all() or when_any() is the
// caller's mistake and a clear error; they used to reach through its null state (undefined
// behaviour: a SIGSEGV, or a std::system_error from a mutex at a null address).
TEST(Futures, EmptyFutureGivenToTheModuleFunctionsIsAClearError) {
  mp::ThreadPoolExecutor ex(1);
  std::vector<mp::Future<int>> fs{ex.submit([] { return 1; }), mp::Future<int>()};
  auto says_empty = [](auto&& call) {
    try {
      call();
      return std::string("no error");
    } catch (const mp::ProcessError& e) {
      return std::string(e.what());
    } catch (const std::exception& e) {
      return std::string("not a ProcessError: ") + e.what();
    }
  };
  EXPECT_THAT(says_empty([&] { mp::wait(fs, 0s); }), ::testing::HasSubstr("future 1 is empty"));
  EXPECT_THAT(says_empty([&] { mp::as_completed(fs, 0s); }), ::testing::HasSubstr("is empty"));
  EXPECT_THAT(says_empty([&] { mp::when_all(fs); }), ::testing::HasSubstr("future 1 is empty"));
  EXPECT_THAT(says_empty([&] { mp::when_any(fs); }), ::testing::HasSubstr("future 1 is empty"));
  EXPECT_EQ(fs[0].result(10s), 1);
}

TEST(Futures, AsCompleted) {  // test_as_completed
  mp::ThreadPoolExecutor ex(2);
  {  // test_no_timeout: every future, done ones included
    auto f1 = ex.submit([] { return 1; });
    auto f2 = ex.submit([] { return 2; });
    std::set<int> got;
    for (auto& f : mp::as_completed(std::vector{f1, f2, successful(3), failed()})) {
      if (!f.exception()) got.insert(f.result());
    }
    EXPECT_EQ(got, (std::set<int>{1, 2, 3}));
  }
  {  // test_future_times_out: the done ones first, then TimeoutError
    auto done = successful(7);
    auto never = pending();
    auto ac = mp::as_completed(std::vector{done, never}, 100ms);
    auto first = ac.next();
    ASSERT_TRUE(first);
    EXPECT_EQ(first->result(), 7);
    EXPECT_THROW(ac.next(), mp::TimeoutError);
  }
  {  // test_duplicate_futures: yielded once
    auto f = ex.submit([] { return 4; });
    int n = 0;
    for (auto& d : mp::as_completed(std::vector{f, f, f})) n += d.result() == 4;
    EXPECT_EQ(n, 1);
  }
  {  // completion order
    Gate g;
    auto slow = ex.submit([&] {
      g.wait();
      return 1;
    });
    auto quick = ex.submit([] { return 2; });
    auto ac = mp::as_completed(std::vector{slow, quick}, 10s);
    EXPECT_EQ(ac.next()->result(), 2);
    g.release();
    EXPECT_EQ(ac.next()->result(), 1);
    EXPECT_FALSE(ac.next());
  }
}

TEST(ThreadPoolExecutor, SubmitAndMap) {
  mp::ThreadPoolExecutor ex(3);
  int base = 10;
  EXPECT_EQ(ex.submit([&](int x) { return base + x; }, 5).result(), 15);  // captures allowed
  EXPECT_THROW(ex.submit([]() -> int { throw std::out_of_range("o"); }).result(),
               std::out_of_range);
  std::vector<int> got;
  for (int v : ex.map([](int a, int b) { return a * b; }, std::vector<int>{1, 2, 3},
                      std::vector<int>{4, 5, 6, 7}))  // zip: the shortest ends it
    got.push_back(v);
  EXPECT_EQ(got, (std::vector<int>{4, 10, 18}));
  // test_map_exception: results up to the failure, then the failure.
  auto m = ex.map(
      [](int x) {
        if (x == 2) throw std::invalid_argument("two");
        return x;
      },
      std::vector<int>{0, 1, 2, 3});
  EXPECT_EQ(m.next(), 0);
  EXPECT_EQ(m.next(), 1);
  EXPECT_THROW(m.next(), std::invalid_argument);
  // test_map_timeout
  Gate g;
  auto slow = ex.map(
      [&](int x) {
        if (x == 1) g.wait();
        return x;
      },
      std::vector<int>{0, 1, 2}, mp::ExecutorMapOptions{.timeout = 100ms});
  EXPECT_EQ(slow.next(), 0);
  EXPECT_THROW(slow.next(), mp::TimeoutError);
  g.release();
}

TEST(ThreadPoolExecutor, Shutdown) {  // test_shutdown
  {
    mp::ThreadPoolExecutor ex(1);
    ex.shutdown();
    EXPECT_THROW(ex.submit([] { return 1; }), mp::ProcessError);  // test_run_after_shutdown
  }
  {  // test_cancel_futures: the call running completes, the waiting ones are cancelled
    mp::ThreadPoolExecutor ex(1);
    Gate g;
    std::atomic<bool> started{false};
    auto first = ex.submit([&] {
      started = true;
      g.wait();
      return 1;
    });
    std::vector<mp::Future<int>> rest;
    for (int i = 0; i < 10; ++i) rest.push_back(ex.submit([i] { return i; }));
    while (!started) std::this_thread::sleep_for(1ms);
    std::thread releaser([&] {
      std::this_thread::sleep_for(50ms);
      g.release();
    });
    ex.shutdown(/*wait=*/true, /*cancel_futures=*/true);
    releaser.join();
    EXPECT_EQ(first.result(), 1);
    for (auto& f : rest) EXPECT_TRUE(f.cancelled());
  }
  {  // shutdown(wait=false) returns at once; the calls still run; the destructor waits
    std::atomic<int> ran{0};
    {
      mp::ThreadPoolExecutor ex(2);
      for (int i = 0; i < 6; ++i)
        (void)ex.submit([&] {
          std::this_thread::sleep_for(10ms);
          ++ran;
        });
      ex.shutdown(false);
    }
    EXPECT_EQ(ran.load(), 6);
  }
}

// Threads of this process (/proc/self/task).
size_t thread_count() {
  size_t n = 0;
  if (DIR* d = opendir("/proc/self/task")) {
    while (dirent* e = readdir(d))
      if (e->d_name[0] != '.') ++n;
    closedir(d);
  }
  return n;
}

// An executor destroyed in a done callback of its own future, which runs in one of its threads:
// the callback holds the last handle (a shared_ptr it captured) or resets the owner's. The
// destructor shuts it down as shutdown(wait=true) would, except that it cannot wait for the thread
// it runs on: every call still runs and that thread ends once the queue is drained. The core was
// destroyed under the running thread: with one thread the calls still queued failed (BrokenPool),
// and the thread went on in freed memory.
TEST(ThreadPoolExecutor, DestroyedInItsOwnDoneCallbackShutsDown) {
  for (unsigned workers : {1u, 3u}) {
    for (int how = 0; how < 2; ++how) {  // 0: the owner's unique_ptr reset, 1: the last shared_ptr
      SCOPED_TRACE("workers " + std::to_string(workers) + ", how " + std::to_string(how));
      const size_t threads_before = thread_count();
      auto owner = std::make_unique<mp::ThreadPoolExecutor>(workers);
      std::shared_ptr<mp::ThreadPoolExecutor> shared = std::move(owner);
      auto gate = std::make_shared<Gate>();
      auto first = shared->submit([gate] {
        gate->wait();
        return 100;
      });
      std::vector<mp::Future<int>> rest;
      for (int i = 0; i < 6; ++i)
        rest.push_back(shared->submit([gate, i] {
          gate->wait();
          std::this_thread::sleep_for(2ms);
          return i;
        }));
      auto said = std::make_shared<std::promise<std::string>>();
      auto told = said->get_future();
      std::thread::id ran_in;
      if (how == 0) {
        first.add_done_callback([&](const mp::Future<int>&) {
          ran_in = std::this_thread::get_id();
          shared.reset();
          said->set_value("returned");
        });
      } else {
        first.add_done_callback([&ran_in, said, keep = shared](const mp::Future<int>&) mutable {
          ran_in = std::this_thread::get_id();
          keep.reset();
          said->set_value("returned");
        });
        shared.reset();  // the callback's copy is the last
      }
      gate->release();
      ASSERT_EQ(told.wait_for(30s), std::future_status::ready);
      EXPECT_EQ(told.get(), "returned");
      EXPECT_NE(ran_in, std::this_thread::get_id());
      EXPECT_EQ(first.result(10s), 100);
      for (int i = 0; i < 6; ++i) EXPECT_EQ(rest[static_cast<size_t>(i)].result(10s), i) << i;
      EXPECT_TRUE(eventually([&] { return thread_count() <= threads_before; }))
          << thread_count() << " threads, " << threads_before << " before";
    }
  }
}

// shutdown(cancel_futures=true) whose cancelled future's done callback drops the executor: the
// destructor (run inside that shutdown, on its thread) took the shutdown lock that shutdown held
// and waited for ever, and shutdown would then have gone on in the freed executor. Called from
// the owner's thread (wait=true) and from a done callback of the executor's own future, which
// runs in its thread (wait=false: the combination the README promises works). The call running
// completes, the waiting one is cancelled, and the executor's threads end.
TEST(ThreadPoolExecutor, DroppedByACallbackThatShutdownWithCancelRuns) {
  for (int from_callback = 0; from_callback < 2; ++from_callback) {
    SCOPED_TRACE(from_callback);
    const size_t threads_before = thread_count();
    auto ex = std::make_unique<mp::ThreadPoolExecutor>(1);
    auto gate = std::make_shared<Gate>();
    std::promise<void> started;
    auto first = ex->submit([gate, &started] {
      started.set_value();
      gate->wait();
      return 7;
    });
    started.get_future().wait();
    auto second = ex->submit([] { return 8; });
    std::promise<void> dropped;
    second.add_done_callback([&](const mp::Future<int>&) {
      ex.reset();
      dropped.set_value();
    });
    std::promise<void> shut;
    std::thread owner;
    if (from_callback) {
      first.add_done_callback([&](const mp::Future<int>&) {
        ex->shutdown(/*wait=*/false, /*cancel_futures=*/true);
        shut.set_value();
      });
      gate->release();
    } else {
      owner = std::thread([&] {
        ex->shutdown(/*wait=*/true, /*cancel_futures=*/true);
        shut.set_value();
      });
      auto d = dropped.get_future();
      answered_within(d, 30s, "the executor dropped by a cancelled future's callback");
      gate->release();
    }
    auto s = shut.get_future();
    answered_within(s, 30s, "shutdown(cancel_futures=true) whose callback drops the executor");
    if (owner.joinable()) owner.join();
    EXPECT_FALSE(ex);
    EXPECT_TRUE(second.cancelled());
    EXPECT_EQ(first.result(10s), 7);
    EXPECT_TRUE(eventually([&] { return thread_count() <= threads_before; }))
        << thread_count() << " threads, " << threads_before << " before";
  }
}

// An executor dropped in a done callback of its own future, with slow calls still queued, in a
// process that then exits normally (exit(0), as a return from main): the thread left to finish
// the calls was detached and nothing waited for it, so the process ended with the calls unrun and
// no word. As Python joins its executors' threads at exit, every submitted call still runs. Each
// call writes its number to a pipe; the process is a forked child of the test.
TEST(ThreadPoolExecutor, DroppedInACallbackItsCallsStillRunAtExit) {
  for (unsigned workers : {1u, 2u}) {
    SCOPED_TRACE(workers);
    int fds[2];
    ASSERT_EQ(::pipe(fds), 0);
    pid_t child = ::fork();
    ASSERT_GE(child, 0);
    if (child == 0) {
      ::close(fds[0]);
      auto ex = std::make_unique<mp::ThreadPoolExecutor>(workers);
      auto gate = std::make_shared<Gate>();
      auto first = ex->submit([gate] {
        gate->wait();
        return 0;
      });
      for (int i = 0; i < 6; ++i)
        (void)ex->submit([fd = fds[1], i] {
          std::this_thread::sleep_for(100ms);
          char c = static_cast<char>('0' + i);
          if (::write(fd, &c, 1) != 1) std::_Exit(2);
        });
      std::promise<void> dropped;
      first.add_done_callback([&](const mp::Future<int>&) {
        ex.reset();
        dropped.set_value();
      });
      gate->release();
      dropped.get_future().wait();
      std::exit(0);
    }
    ::close(fds[1]);
    int status = -1;
    bool ended = eventually([&] { return ::waitpid(child, &status, WNOHANG) == child; }, 30s);
    if (!ended) {
      ::kill(child, SIGKILL);
      ::waitpid(child, &status, 0);
    }
    std::string ran;
    char buf[64];
    for (ssize_t n; ended && (n = ::read(fds[0], buf, sizeof buf)) > 0;)
      ran.append(buf, static_cast<size_t>(n));
    ::close(fds[0]);
    ASSERT_TRUE(ended) << "the child did not exit";
    EXPECT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 0) << status;
    std::sort(ran.begin(), ran.end());
    EXPECT_EQ(ran, "012345");
  }
}

// ---- what C++ adds ----

TEST(Future, ThenWhenAllWhenAnyShare) {
  mp::ThreadPoolExecutor ex(2);
  auto f = ex.submit([] { return 20; });
  auto g = f.then([](int v) { return v + 1; }).then([](int v) { return std::to_string(v); });
  EXPECT_EQ(g.result(10s), "21");
  auto bad = ex.submit([]() -> int { throw std::invalid_argument("x"); }).then([](int v) {
    return v * 2;
  });  // not called: the error passes on
  EXPECT_THROW(bad.result(10s), std::invalid_argument);
  EXPECT_THROW(cancelled().then([](int v) { return v; }).result(), mp::CancelledError);
  auto v = ex.submit([] {}).then([] { return 3; });
  EXPECT_EQ(v.result(10s), 3);

  std::vector<mp::Future<int>> fs;
  for (int i = 0; i < 5; ++i) fs.push_back(ex.submit([i] { return i * i; }));
  EXPECT_EQ(mp::when_all(fs).result(10s), (std::vector<int>{0, 1, 4, 9, 16}));
  EXPECT_THROW(mp::when_all(std::vector{successful(1), failed()}).result(10s), std::runtime_error);
  EXPECT_TRUE(mp::when_all(std::vector<mp::Future<int>>{}).result().empty());
  EXPECT_EQ(mp::when_any(std::vector{pending(), successful(2)}).result(10s), 1u);

  std::shared_future<int> sf = ex.submit([] { return 8; });
  EXPECT_EQ(sf.get(), 8);
  std::shared_future<int> sfe = failed().share();
  EXPECT_THROW(sfe.get(), std::runtime_error);
  // share() itself: std::shared_future's calls on the future's state.
  mp::SharedFuture<int> shared = ex.submit([] { return 9; }).share();
  auto copy = shared;
  EXPECT_EQ(shared.get(), 9);
  EXPECT_EQ(&copy.get(), &shared.get());  // one value, as a std::shared_future's
  EXPECT_EQ(copy.wait_for(0s), std::future_status::ready);
  mp::SharedFuture<void> nothing = ex.submit([] {}).share();
  nothing.wait();
  nothing.get();
  EXPECT_THROW(failed().share().get(), std::runtime_error);
  EXPECT_THROW(cancelled().share().get(), mp::CancelledError);
  EXPECT_EQ(pending().share().wait_for(10ms), std::future_status::timeout);
  EXPECT_EQ(pending().share().wait_until(std::chrono::system_clock::now() - 1s),
            std::future_status::timeout);
  EXPECT_FALSE(mp::SharedFuture<int>().valid());
  EXPECT_THROW((void)mp::Future<int>().share(), mp::ProcessError);
}

// A minimal coroutine type: runs eagerly, records its result.
struct Task {
  struct promise_type {
    std::shared_ptr<std::promise<int>> out = std::make_shared<std::promise<int>>();
    Task get_return_object() { return Task{out->get_future()}; }
    std::suspend_never initial_suspend() noexcept { return {}; }
    std::suspend_never final_suspend() noexcept { return {}; }
    void return_value(int v) { out->set_value(v); }
    void unhandled_exception() { out->set_exception(std::current_exception()); }
  };
  std::future<int> result;
};

Task add_two(mp::ThreadPoolExecutor& ex, int x) {
  int a = co_await ex.submit([x] {
    std::this_thread::sleep_for(10ms);
    return x + 1;
  });
  int b = co_await successful(1);  // done already: no suspension
  co_return a + b;
}
Task awaits_failure() {
  co_return co_await failed();
}

TEST(Future, CoAwait) {
  mp::ThreadPoolExecutor ex(2);
  auto t = add_two(ex, 5);
  ASSERT_EQ(t.result.wait_for(10s), std::future_status::ready);
  EXPECT_EQ(t.result.get(), 7);
  EXPECT_THROW(awaits_failure().result.get(), std::runtime_error);
}

// The copy a forked child inherits has none of the parent's threads: submit() returned a future
// that never completed, shutdown(wait=true) and the destructor waited for ever for threads the
// child does not have. Every use is now a clear error, and the parent's executor goes on.
TEST(ThreadPoolExecutorInheritedByFork, UsingItInAForkedChildIsAClearError) {
  g_inherited_thread_executor.emplace(2);
  EXPECT_EQ(g_inherited_thread_executor->submit(twice, 2).result(10s), 4);
  mp::Process child(mp::get_context(mp::StartMethod::fork), use_inherited_thread_executor);
  child.start();
  bool ended = child.join(60s);
  if (!ended) child.kill();
  EXPECT_TRUE(ended) << "the child hung using its copy";
  if (ended) {
    EXPECT_TRUE(exited_three(child.exitcode())) << "exit code " << child.exitcode().value_or(-999)
                                                << " (128 + a bit per use that was not refused)";
  }
  EXPECT_EQ(g_inherited_thread_executor->submit(twice, 3).result(10s), 6);
  g_inherited_thread_executor.reset();
}

}  // namespace
