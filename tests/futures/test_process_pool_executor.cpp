// ProcessPoolExecutor under fork, spawn and forkserver: CPython's test_concurrent_futures
// executor tests (submit, map with timeout and chunksize, shutdown with cancel_futures, the
// initializer, max_tasks_per_child) and test_deadlock / test_process_pool's worker death - where
// Python's executor becomes BrokenProcessPool for good, here only the dead worker's futures fail.
#include <dirent.h>
#include <fcntl.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <csignal>
#include <cstdio>
#include <future>
#include <memory>
#include <optional>
#include <set>
#include <stdexcept>
#include <string>
#include <thread>
#include <vector>

#include <gmock/gmock.h>

#include "answered_within.hpp"
#include "exit_three.hpp"
#include "start_methods.hpp"

#include <multiproc/futures.hpp>

using namespace std::chrono_literals;

namespace {

int mul(int a, int b) {
  return a * b;
}
int sqr(int x) {
  return x * x;
}
int sleep_then(int ms, int v) {
  std::this_thread::sleep_for(std::chrono::milliseconds(ms));
  return v;
}
int raise_at_two(int x) {
  if (x == 2) throw std::invalid_argument("two");
  return x;
}
int die(int) {
  ::kill(getpid(), SIGKILL);
  return 0;
}
// Appends i to the file at `path` after a while (a slow call whose running a test checks).
int append_later(std::string path, int i) {
  std::this_thread::sleep_for(150ms);
  int fd = ::open(path.c_str(), O_WRONLY | O_APPEND | O_CREAT, 0600);
  if (fd < 0) return -1;
  char c = static_cast<char>('0' + i);
  ssize_t n = ::write(fd, &c, 1);
  ::close(fd);
  return n == 1 ? i : -1;
}
int my_pid(int) {
  return static_cast<int>(getpid());
}
int hang(int) {
  for (;;) ::pause();
}
int g_init = 0;
void set_init(int v) {
  g_init = v;
}
int read_init() {
  return g_init;
}

// An argument whose encoding fails: a call with it fails when the executor hands it to the pool,
// in the executor's own thread.
struct Unsendable {
  int v = 0;
  template <class Archive>
  void save(Archive&) const {
    throw std::runtime_error("Unsendable cannot be sent");
  }
  template <class Archive>
  void load(Archive&) {}
};
int take_unsendable(Unsendable u) {
  return u.v;
}

// An executor a forked child inherits (a global).
std::optional<mp::ProcessPoolExecutor> g_inherited_executor;

// A forked child's uses of the inherited executor: each must throw the clear error (none may hang
// or reach the parent's pool). Exits with 128 + a bit per use that did not, else through exit(3)
// (the copy's destructor runs).
void use_inherited_executor() {
  auto& ex = *g_inherited_executor;
  int failed = refused([&] { (void)ex.submit(sqr, 2).result(5s); });
  failed |= refused([&] {
              for (int v : ex.map(sqr, std::vector<int>{1, 2})) (void)v;
            })
            << 1;
  failed |=
      refused([&] {
        for (int v : ex.map(sqr, std::vector<int>{1, 2}, mp::ExecutorMapOptions{.chunksize = 2}))
          (void)v;
      })
      << 2;
  failed |= refused([&] { (void)ex.worker_pids(); }) << 3;
  failed |= refused([&] { ex.shutdown(/*wait=*/false); }) << 4;
  failed |= refused([&] { ex.terminate_workers(); }) << 5;
  failed |= refused([&] { ex.shutdown(/*wait=*/true); }) << 6;
  if (failed) std::_Exit(128 | failed);
  exit_three();
}

class ProcessPoolExecutorTest : public StartMethodTest {
 protected:
  mp::ProcessPoolExecutorOptions opts(unsigned n) {
    return mp::ProcessPoolExecutorOptions{.max_workers = n, .mp_context = ctx()};
  }
};

TEST_P(ProcessPoolExecutorTest, SubmitAndMap) {
  mp::ProcessPoolExecutor ex(opts(2));
  auto f = ex.submit(mul, 6, 7);
  EXPECT_EQ(f.result(20s), 42);
  EXPECT_TRUE(f.done());
  EXPECT_FALSE(f.running());
  auto bad = ex.submit(raise_at_two, 2);
  EXPECT_THROW(bad.result(20s), std::exception);
  EXPECT_NE(bad.exception(), nullptr);

  std::vector<int> got;
  for (int v : ex.map(mul, std::vector<int>{1, 2, 3}, std::vector<int>{4, 5, 6})) got.push_back(v);
  EXPECT_EQ(got, (std::vector<int>{4, 10, 18}));
  got.clear();
  std::vector<int> xs(50);
  for (int i = 0; i < 50; ++i) xs[i] = i;
  for (int v : ex.map(sqr, xs, mp::ExecutorMapOptions{.chunksize = 7})) got.push_back(v);
  ASSERT_EQ(got.size(), 50u);
  EXPECT_EQ(got[49], 49 * 49);
  // test_map_exception, with and without chunks
  for (size_t cs : {1, 3}) {
    auto m =
        ex.map(raise_at_two, std::vector<int>{0, 1, 2, 3}, mp::ExecutorMapOptions{.chunksize = cs});
    EXPECT_EQ(m.next(), 0);
    EXPECT_EQ(m.next(), 1);
    EXPECT_THROW(m.next(), std::exception);
  }
  // test_map_timeout
  auto slow = ex.map(sleep_then, std::vector<int>{0, 1500}, std::vector<int>{1, 2},
                     mp::ExecutorMapOptions{.timeout = 300ms});
  EXPECT_EQ(slow.next(), 1);
  EXPECT_THROW(slow.next(), mp::TimeoutError);
}

TEST_P(ProcessPoolExecutorTest, AsCompletedAndWait) {
  mp::ProcessPoolExecutor ex(opts(2));
  auto slow = ex.submit(sleep_then, 800, 1);
  auto quick = ex.submit(sleep_then, 0, 2);
  auto [done, not_done] = mp::wait(std::vector{slow, quick}, 20s, mp::FIRST_COMPLETED);
  ASSERT_EQ(done.size(), 1u);
  EXPECT_EQ(done[0].result(), 2);
  std::vector<int> order;
  for (auto& f : mp::as_completed(std::vector{slow, quick}, 20s)) order.push_back(f.result());
  EXPECT_EQ(order, (std::vector<int>{2, 1}));
}

TEST_P(ProcessPoolExecutorTest, WorkerDeathFailsOnlyItsFutureAndTheExecutorHeals) {
  mp::ProcessPoolExecutor ex(opts(2));
  auto before = ex.worker_pids();
  std::vector<mp::Future<int>> ok;
  for (int i = 0; i < 6; ++i) ok.push_back(ex.submit(sqr, i));
  auto dead = ex.submit(die, 0);
  EXPECT_THROW(dead.result(30s), mp::WorkerLost);
  for (int i = 0; i < 6; ++i) EXPECT_EQ(ok[i].result(30s), i * i);
  // The executor goes on: new calls run on the replacement worker.
  for (int i = 0; i < 4; ++i) EXPECT_EQ(ex.submit(mul, i, 2).result(30s), 2 * i);
  EXPECT_TRUE(eventually([&] { return ex.worker_pids().size() == 2; }));
}

TEST_P(ProcessPoolExecutorTest, ShutdownCancelFutures) {
  mp::ProcessPoolExecutor ex(opts(1));
  auto first = ex.submit(sleep_then, 600, 1);
  std::vector<mp::Future<int>> rest;
  for (int i = 0; i < 10; ++i) rest.push_back(ex.submit(sleep_then, 0, i));
  EXPECT_TRUE(eventually([&] { return first.running(); }));
  ex.shutdown(/*wait=*/true, /*cancel_futures=*/true);
  EXPECT_EQ(first.result(), 1);
  // At most max_workers + 1 calls were handed to the pool; every other one is cancelled.
  size_t n_cancelled = 0;
  for (auto& f : rest) {
    EXPECT_TRUE(f.done());
    n_cancelled += f.cancelled();
  }
  EXPECT_GE(n_cancelled, 9u);
  EXPECT_THROW(ex.submit(sqr, 1), mp::ProcessError);  // test_run_after_shutdown
}

// Python's `with ProcessPoolExecutor() as ex: ex.map(f, items, chunksize=2)` without reading the
// results: leaving the block waits for every call and returns. The chunked map runs on the pool's
// lazy imap, whose unread results used to hold its input back: shutdown() waited for ever.
TEST_P(ProcessPoolExecutorTest, ChunkedMapNotReadDoesNotHoldUpShutdown) {
  mp::ProcessPoolExecutor ex(opts(2));
  auto kept = ex.map(sqr, std::vector<int>(50, 3), mp::ExecutorMapOptions{.chunksize = 2});
  { (void)ex.map(sqr, std::vector<int>(50, 4), mp::ExecutorMapOptions{.chunksize = 3}); }
  std::promise<void> finished;
  auto done = finished.get_future();
  std::thread shutter([&] {
    ex.shutdown(/*wait=*/true);
    finished.set_value();
  });
  if (done.wait_for(60s) != std::future_status::ready) {
    std::fprintf(stderr, "FAILED: shutdown() still waiting after 60 s for an unread chunked map\n");
    std::_Exit(1);  // the resource tracker ends the workers
  }
  shutter.join();
  int sum = 0, n = 0;
  for (int y : kept) sum += y, ++n;
  EXPECT_EQ(n, 50);
  EXPECT_EQ(sum, 450);
}

// shutdown(wait=true) from a done callback: Python raises (RuntimeError, "cannot join current
// thread") and the executor stops taking calls. It used to wait for the callback's own call,
// which finishes only once the callback returns: the program hung.
TEST_P(ProcessPoolExecutorTest, ShutdownWaitFromADoneCallbackIsAnError) {
  auto ex = std::make_unique<mp::ProcessPoolExecutor>(opts(2));
  std::promise<std::string> said;
  auto f = ex->submit(sleep_then, 300, 9);  // not done yet when the callback is added
  f.add_done_callback([&](const mp::Future<int>&) {
    try {
      ex->shutdown(/*wait=*/true);
      said.set_value("returned");
    } catch (const mp::ProcessError& e) {
      said.set_value(e.what());
    }
  });
  auto answer = said.get_future();
  if (answer.wait_for(60s) != std::future_status::ready) {
    std::fprintf(stderr,
                 "FAILED: shutdown(wait=true) in a done callback still waiting after 60 s\n");
    std::_Exit(1);
  }
  EXPECT_THAT(answer.get(), ::testing::HasSubstr("done callback"));
  EXPECT_EQ(f.result(10s), 9);
  EXPECT_THROW(ex->submit(sqr, 1), mp::ProcessError);  // it has stopped taking calls
  ex.reset();                                          // the destructor waits, from here
}

// What a done callback that ends its own executor saw: "returned", or the exception's message.
template <class F>
void tell(std::promise<std::string>& said, F&& call) {
  try {
    call();
    said.set_value("returned");
  } catch (const std::exception& e) {
    said.set_value(std::string("threw: ") + e.what());
  }
}

// shutdown(wait=false, cancel_futures=true) from a done callback (run by the pool's result
// thread): the executor stops taking calls, the calls not started are cancelled, the one running
// completes, and the destructor (from here) completes.
TEST_P(ProcessPoolExecutorTest, ShutdownNoWaitCancelFromADoneCallback) {
  auto ex = std::make_unique<mp::ProcessPoolExecutor>(opts(1));
  std::promise<std::string> said;
  auto first = ex->submit(sleep_then, 300, 1);
  auto running = ex->submit(sleep_then, 600, 2);  // handed to the pool (max_workers + 1)
  std::vector<mp::Future<int>> waiting;
  for (int i = 0; i < 5; ++i) waiting.push_back(ex->submit(sleep_then, 0, i));
  std::thread::id ran_in;
  first.add_done_callback([&](const mp::Future<int>&) {
    ran_in = std::this_thread::get_id();
    tell(said, [&] { ex->shutdown(/*wait=*/false, /*cancel_futures=*/true); });
  });
  auto answer = said.get_future();
  answered_within(answer, 60s, "shutdown(false, true) in a done callback");
  EXPECT_EQ(answer.get(), "returned");
  EXPECT_NE(ran_in, std::this_thread::get_id());  // the pool's thread, not this one
  EXPECT_EQ(first.result(10s), 1);
  EXPECT_EQ(running.result(30s), 2);
  for (auto& f : waiting) EXPECT_TRUE(f.cancelled());
  EXPECT_THROW(ex->submit(sqr, 1), mp::ProcessError);
  std::promise<std::string> destroyed;
  std::thread destroyer([&] { tell(destroyed, [&] { ex.reset(); }); });
  auto gone = destroyed.get_future();
  answered_within(gone, 60s, "the executor's destructor after shutdown in a done callback");
  destroyer.join();
  EXPECT_EQ(gone.get(), "returned");
}

// terminate_workers() (Python 3.14: the executor's terminate()) from a done callback, which runs
// in the pool's result thread: the workers end, the call running on them fails, the waiting
// calls are cancelled, and the destructor completes.
TEST_P(ProcessPoolExecutorTest, TerminateWorkersFromADoneCallback) {
  auto ex = std::make_unique<mp::ProcessPoolExecutor>(opts(2));
  auto pids = ex->worker_pids();
  std::promise<std::string> said;
  auto first = ex->submit(sleep_then, 300, 1);
  auto stuck = ex->submit(hang, 0);
  std::vector<mp::Future<int>> waiting;
  for (int i = 0; i < 5; ++i) waiting.push_back(ex->submit(sleep_then, 0, i));
  std::thread::id ran_in;
  first.add_done_callback([&](const mp::Future<int>&) {
    ran_in = std::this_thread::get_id();
    tell(said, [&] { ex->terminate_workers(); });
  });
  auto answer = said.get_future();
  answered_within(answer, 60s, "terminate_workers() in a done callback");
  EXPECT_EQ(answer.get(), "returned");
  EXPECT_NE(ran_in, std::this_thread::get_id());  // the pool's thread, not this one
  EXPECT_EQ(first.result(10s), 1);
  EXPECT_THROW(stuck.result(30s), mp::ProcessError);
  for (auto& f : waiting) EXPECT_TRUE(f.wait(30s));
  EXPECT_THROW(ex->submit(sqr, 1), mp::ProcessError);
  for (pid_t p : pids)
    EXPECT_TRUE(eventually([&] { return ::kill(p, 0) != 0; })) << "worker " << p << " lives";
  std::promise<std::string> destroyed;
  std::thread destroyer([&] { tell(destroyed, [&] { ex.reset(); }); });
  auto gone = destroyed.get_future();
  answered_within(gone, 60s, "the executor's destructor after terminate_workers() in a callback");
  destroyer.join();
  EXPECT_EQ(gone.get(), "returned");
}

// terminate_workers()/kill_workers() whose cancelled futures' done callback drops the executor:
// the destructor (run inside terminate_workers(), on the caller's thread) shut the executor down
// gracefully, waiting for the running call, before the workers were killed; with a call that
// never ends, terminate_workers() never returned. It stays a terminate: the call running fails,
// the waiting ones are cancelled, the workers end.
TEST_P(ProcessPoolExecutorTest, TerminateWorkersWhoseCancelledCallbackDropsTheExecutor) {
  for (int sig : {SIGTERM, SIGKILL}) {
    SCOPED_TRACE(sig);
    auto ex = std::make_unique<mp::ProcessPoolExecutor>(opts(1));
    auto pids = ex->worker_pids();
    auto stuck = ex->submit(hang, 0);
    ASSERT_TRUE(eventually([&] { return stuck.running(); }));
    std::vector<mp::Future<int>> waiting;
    for (int i = 0; i < 4; ++i) waiting.push_back(ex->submit(sqr, i));
    bool dropped = false;
    waiting.back().add_done_callback([&](const mp::Future<int>&) {
      ex.reset();
      dropped = true;
    });
    std::promise<std::string> said;
    std::thread ender([&] {
      tell(said, [&] {
        if (sig == SIGTERM)
          ex->terminate_workers();
        else
          ex->kill_workers();
      });
    });
    auto answer = said.get_future();
    answered_within(answer, 60s, "terminate_workers() whose cancelled callback drops the executor");
    ender.join();
    EXPECT_EQ(answer.get(), "returned");
    EXPECT_TRUE(dropped);
    EXPECT_FALSE(ex);
    EXPECT_THROW(stuck.result(30s), mp::ProcessError);
    EXPECT_TRUE(waiting.back().cancelled());
    for (auto& f : waiting) EXPECT_TRUE(f.wait(30s));
    for (pid_t p : pids)
      EXPECT_TRUE(eventually([&] { return ::kill(p, 0) != 0; })) << "worker " << p << " lives";
    EXPECT_TRUE(eventually([] { return mp::active_children().empty(); }));
  }
}

// The executor dropped in a done callback of its own future, with slow calls still waiting, in a
// process that then exits normally (exit(0), as a return from main): the thread left to finish
// the calls was detached, nothing waited for it, and exit ended the workers, so none of the calls
// ran and nothing was said. As Python joins its executors' threads at exit, every submitted call
// still runs. Each call appends its number to a file; the process is a forked child of the test.
TEST_P(ProcessPoolExecutorTest, DroppedInACallbackItsCallsStillRunAtExit) {
  const std::string path = "/tmp/s8fut2_ran_" + std::to_string(::getpid()) + "_" +
                           std::to_string(static_cast<int>(GetParam()));
  ::unlink(path.c_str());
  pid_t child = ::fork();
  ASSERT_GE(child, 0);
  if (child == 0) {
    auto ex = std::make_unique<mp::ProcessPoolExecutor>(opts(2));
    auto first = ex->submit(sleep_then, 200, 0);
    for (int i = 0; i < 6; ++i) (void)ex->submit(append_later, path, i);
    std::promise<void> dropped;
    first.add_done_callback([&](const mp::Future<int>&) {
      ex.reset();
      dropped.set_value();
    });
    if (dropped.get_future().wait_for(30s) != std::future_status::ready) std::_Exit(3);
    std::exit(0);
  }
  int status = -1;
  bool ended = eventually([&] { return ::waitpid(child, &status, WNOHANG) == child; }, 60s);
  if (!ended) {
    ::kill(child, SIGKILL);
    ::waitpid(child, &status, 0);
  }
  std::string ran;
  if (FILE* f = std::fopen(path.c_str(), "r")) {
    for (int c; (c = std::fgetc(f)) != EOF;) ran.push_back(static_cast<char>(c));
    std::fclose(f);
  }
  ::unlink(path.c_str());
  ASSERT_TRUE(ended) << "the child did not exit";
  EXPECT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 0) << status;
  std::sort(ran.begin(), ran.end());
  EXPECT_EQ(ran, "012345");
}

// A call that cannot be handed to the pool (its argument fails to encode) fails in the executor's
// own thread, which then runs its done callbacks. terminate_workers() there joined that very
// thread (std::system_error "Resource deadlock avoided", the workers left running), and
// shutdown(wait=true) waited for ever for the call being failed.
TEST_P(ProcessPoolExecutorTest, EndingTheExecutorFromACallbackOfACallThatCouldNotStart) {
  for (int how = 0; how < 2; ++how) {  // 0: terminate_workers(), 1: shutdown(wait=true)
    SCOPED_TRACE(how);
    auto ex = std::make_unique<mp::ProcessPoolExecutor>(opts(1));
    auto busy = ex->submit(sleep_then, 1000, 1);
    auto next = ex->submit(sleep_then, 0, 2);  // handed to the pool too (max_workers + 1)
    auto bad = ex->submit(take_unsendable, Unsendable{});  // waits in the executor meanwhile
    std::promise<std::string> said;
    std::thread::id ran_in;
    bad.add_done_callback([&](const mp::Future<int>&) {
      ran_in = std::this_thread::get_id();
      tell(said, [&] {
        if (how == 0)
          ex->terminate_workers();
        else
          ex->shutdown(/*wait=*/true);
      });
    });
    auto answer = said.get_future();
    answered_within(answer, 60s, "ending the executor in a done callback of its own thread");
    EXPECT_NE(ran_in, std::this_thread::get_id());
    if (how == 0) {
      EXPECT_EQ(answer.get(), "returned");
    } else {
      EXPECT_THAT(answer.get(), ::testing::HasSubstr("done callback"));
    }
    EXPECT_THROW(bad.result(10s), std::runtime_error);
    EXPECT_THROW(ex->submit(sqr, 1), mp::ProcessError);
    std::promise<std::string> destroyed;
    std::thread destroyer([&] { tell(destroyed, [&] { ex.reset(); }); });
    auto gone = destroyed.get_future();
    answered_within(gone, 60s, "the executor's destructor after ending it in a callback");
    destroyer.join();
    EXPECT_EQ(gone.get(), "returned");
    if (how == 1) {
      EXPECT_EQ(busy.result(10s), 1);
    }
  }
}

// What one wait in a done callback did: "returned", or "threw: " and the ProcessError's text.
template <class Wait>
std::string outcome_of(Wait&& wait) {
  try {
    wait();
    return "returned";
  } catch (const mp::ProcessError& e) {
    return std::string("threw: ") + e.what();
  }
}

// A done callback runs in the thread that completes the executor's calls: waiting there, without
// a timeout, for another call of the same executor waited for ever (that call's result could only
// be processed once the callback returned). It is a clear error now; a wait with a timeout just
// times out.
TEST_P(ProcessPoolExecutorTest, WaitingInADoneCallbackForAnotherCallIsAClearError) {
  mp::ProcessPoolExecutor ex(opts(2));
  auto first = ex.submit(sleep_then, 300, 1);
  auto second = ex.submit(sleep_then, 1500, 2);
  std::promise<std::vector<std::string>> said;
  first.add_done_callback([&](const mp::Future<int>&) {
    std::vector<std::string> out;
    auto note = [&](auto&& wait) { out.push_back(outcome_of(wait)); };
    note([&] { (void)second.result(); });
    note([&] { (void)second.exception(); });
    note([&] { (void)second.wait(); });
    note([&] { (void)mp::wait(std::vector{first, second}); });
    note([&] { (void)mp::wait(std::vector{second}, std::nullopt, mp::FIRST_COMPLETED); });
    note([&] {
      for (auto& f : mp::as_completed(std::vector{first, second})) (void)f;
    });
    note([&] { (void)second.then([](int v) { return v; }).result(); });
    note([&] { (void)mp::when_all(std::vector{first, second}).result(); });
    note([&] { (void)mp::when_any(std::vector{second}).result(); });
    // Not waiting for ever: these return.
    note([&] {
      if (second.wait(50ms)) throw mp::ProcessError("done already?");
    });
    note([&] { (void)mp::wait(std::vector{first, second}, 50ms); });
    note([&] { (void)first.result(); });  // its own call: done
    said.set_value(out);
  });
  auto answer = said.get_future();
  if (answer.wait_for(60s) != std::future_status::ready) {
    std::fprintf(stderr, "FAILED: a wait in a done callback still waiting after 60 s\n");
    std::_Exit(1);
  }
  auto out = answer.get();
  ASSERT_EQ(out.size(), 12u);
  for (size_t i = 0; i < 9; ++i) EXPECT_THAT(out[i], ::testing::HasSubstr("done callback")) << i;
  for (size_t i = 9; i < 12; ++i) EXPECT_EQ(out[i], "returned") << i;
  EXPECT_EQ(second.result(30s), 2);
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
// The /dev/shm files this process made (named "<prefix><pid>_...").
int own_segments() {
  return count_shm_files(std::to_string(getpid()) + "_");
}

// The executor destroyed in a done callback of its own future (the callback resets the owner's
// unique_ptr, holds the last shared_ptr, or resets a std::optional), as Python's executor can be
// dropped there: its destructor shuts it down as shutdown(wait=true) would, but cannot wait for
// the thread it runs on (the pool's result thread, or the executor's own for a call that could not
// start); every call still runs, then the executor's threads, workers and segments go. It used to
// end the program (std::terminate: the destructor's shutdown threw, then a joinable std::thread
// was destroyed).
TEST_P(ProcessPoolExecutorTest, DestroyedInItsOwnDoneCallbackShutsDown) {
  // 0: the owner's unique_ptr reset by a callback the pool's result thread runs; 1: the callback
  // holds the last shared_ptr; 2: a std::optional reset by the callback of a call that could not
  // be handed to the pool (run by the executor's own thread); 3: as 0, after terminate_workers()
  // in the same callback (the executor's thread has ended already).
  for (int how = 0; how < 4; ++how) {
    SCOPED_TRACE(how);
    const size_t threads_before = thread_count();
    const int segments_before = own_segments();
    std::unique_ptr<mp::ProcessPoolExecutor> owner;
    std::shared_ptr<mp::ProcessPoolExecutor> shared;
    std::optional<mp::ProcessPoolExecutor> optional;
    mp::ProcessPoolExecutor* ex = nullptr;
    if (how == 0 || how == 3)
      ex = (owner = std::make_unique<mp::ProcessPoolExecutor>(opts(1))).get();
    if (how == 1) ex = (shared = std::make_shared<mp::ProcessPoolExecutor>(opts(1))).get();
    if (how == 2) ex = &optional.emplace(opts(1));
    auto pids = ex->worker_pids();
    auto first = ex->submit(sleep_then, 500, 1);
    auto second = ex->submit(sleep_then, 300, 2);  // handed to the pool too (max_workers + 1)
    std::optional<mp::Future<int>> bad;
    if (how == 2) bad = ex->submit(take_unsendable, Unsendable{});  // waits in the executor
    std::vector<mp::Future<int>> waiting;
    for (int i = 0; i < 4; ++i) waiting.push_back(ex->submit(sleep_then, 10, i));
    auto said = std::make_shared<std::promise<std::string>>();
    auto answer = said->get_future();
    std::thread::id ran_in;
    auto& watched = how == 2 ? *bad : first;
    if (how == 1) {
      watched.add_done_callback([&ran_in, said, keep = shared](const mp::Future<int>&) mutable {
        ran_in = std::this_thread::get_id();
        tell(*said, [&] { keep.reset(); });
      });
      shared.reset();  // the callback's copy is the last
    } else {
      watched.add_done_callback([&](const mp::Future<int>&) {
        ran_in = std::this_thread::get_id();
        tell(*said, [&] {
          if (how == 3) owner->terminate_workers();
          if (how == 2)
            optional.reset();
          else
            owner.reset();
        });
      });
    }
    answered_within(answer, 60s, "destroying the executor in its own done callback");
    EXPECT_EQ(answer.get(), "returned");
    EXPECT_NE(ran_in, std::this_thread::get_id());  // the executor's thread, not this one
    EXPECT_EQ(first.result(30s), 1);
    if (how == 3) {
      EXPECT_THROW(second.result(30s), mp::ProcessError);
      for (auto& f : waiting) EXPECT_TRUE(f.cancelled());
    } else {
      EXPECT_EQ(second.result(30s), 2);
      for (int i = 0; i < 4; ++i) EXPECT_EQ(waiting[static_cast<size_t>(i)].result(30s), i) << i;
    }
    if (bad) {
      EXPECT_THROW(bad->result(30s), std::runtime_error);
    }
    for (pid_t p : pids)
      EXPECT_TRUE(eventually([&] { return ::kill(p, 0) != 0; })) << "worker " << p << " lives";
    EXPECT_TRUE(eventually([] { return mp::active_children().empty(); }));
    EXPECT_TRUE(eventually([&] { return thread_count() <= threads_before; }))
        << thread_count() << " threads, " << threads_before << " before";
    EXPECT_TRUE(eventually([&] { return own_segments() <= segments_before; }))
        << own_segments() << " segments, " << segments_before << " before";
  }
}

// share()'s handle waited, without a timeout, in a done callback for a call of the same executor
// that only that callback's thread could complete: a std::shared_future (what share() returned)
// waited for ever there, where every other wait of the executor's futures throws ProcessError.
// share() now returns a SharedFuture, whose waits are the Future's; it still converts to the
// standard type. A wait with a timeout times out; a shared future of the callback's own call,
// which is done, returns its value.
TEST_P(ProcessPoolExecutorTest, SharedFutureWaitedInADoneCallbackIsAClearError) {
  mp::ProcessPoolExecutor ex(opts(2));
  auto first = ex.submit(sleep_then, 300, 1);
  auto second = ex.submit(sleep_then, 1500, 2);
  auto shared = second.share();
  auto shared_first = first.share();
  std::promise<std::vector<std::string>> said;
  first.add_done_callback([&](const mp::Future<int>&) {
    std::vector<std::string> out;
    auto note = [&](auto&& wait) { out.push_back(outcome_of(wait)); };
    note([&] { (void)shared.get(); });
    note([&] { shared.wait(); });
    note([&] {
      auto copy = shared;
      (void)copy.get();
    });
    note([&] { (void)second.share().get(); });  // one shared in the callback
    // Not waiting for ever: these return.
    note([&] {
      if (shared.wait_for(50ms) != std::future_status::timeout) throw mp::ProcessError("ready?");
    });
    note([&] {
      if (shared.wait_until(std::chrono::steady_clock::now() + 50ms) != std::future_status::timeout)
        throw mp::ProcessError("ready?");
    });
    note([&] {
      if (shared_first.get() != 1) throw mp::ProcessError("not its value");
    });
    said.set_value(out);
  });
  auto answer = said.get_future();
  answered_within(answer, 60s, "a shared future waited in a done callback");
  auto out = answer.get();
  ASSERT_EQ(out.size(), 7u);
  for (size_t i = 0; i < 4; ++i) EXPECT_THAT(out[i], ::testing::HasSubstr("done callback")) << i;
  for (size_t i = 4; i < 7; ++i) EXPECT_EQ(out[i], "returned") << i;
  EXPECT_EQ(shared.get(), 2);
  EXPECT_EQ(shared.wait_for(0s), std::future_status::ready);
  std::shared_future<int> standard = second.share();  // the standard type, where one is needed
  EXPECT_EQ(standard.get(), 2);
  std::shared_future<int> converted = second;
  EXPECT_EQ(converted.get(), 2);
}

TEST_P(ProcessPoolExecutorTest, CancelAWaitingCall) {
  mp::ProcessPoolExecutor ex(opts(1));
  auto busy = ex.submit(sleep_then, 1000, 0);
  auto second = ex.submit(sleep_then, 0, 0);  // handed to the pool (max_workers + 1)
  auto waiting = ex.submit(sqr, 3);
  EXPECT_TRUE(waiting.cancel());
  EXPECT_TRUE(waiting.cancelled());
  EXPECT_THROW(waiting.result(), mp::CancelledError);
  EXPECT_EQ(busy.result(20s), 0);
  EXPECT_EQ(second.result(20s), 0);
}

TEST_P(ProcessPoolExecutorTest, InitializerAndMaxTasksPerChild) {
  {
    auto o = opts(2);
    o.initializer = mp::Initializer(set_init, 17);
    mp::ProcessPoolExecutor ex(o);
    EXPECT_EQ(ex.submit(read_init).result(30s), 17);
  }
  {
    auto o = opts(1);
    o.max_tasks_per_child = 2;
    mp::ProcessPoolExecutor ex(o);
    std::set<int> pids;
    for (int i = 0; i < 6; ++i) pids.insert(ex.submit(my_pid, i).result(30s));
    EXPECT_GE(pids.size(), 3u);  // a fresh worker every two calls
  }
}

TEST_P(ProcessPoolExecutorTest, TerminateAndKillWorkers) {
  for (bool kill : {false, true}) {
    mp::ProcessPoolExecutor ex(opts(2));
    std::vector<mp::Future<int>> running;
    for (int i = 0; i < 2; ++i) running.push_back(ex.submit(hang, i));
    EXPECT_TRUE(eventually([&] { return running[0].running() && running[1].running(); }));
    std::vector<mp::Future<int>> waiting;
    for (int i = 0; i < 5; ++i) waiting.push_back(ex.submit(sqr, i));
    auto pids = ex.worker_pids();
    if (kill)
      ex.kill_workers();
    else
      ex.terminate_workers();
    for (auto& f : running) EXPECT_THROW(f.result(20s), mp::ProcessError);
    for (auto& f : waiting) EXPECT_TRUE(f.wait(20s));
    for (pid_t p : pids)
      EXPECT_TRUE(eventually([&] { return ::kill(p, 0) != 0; })) << "worker " << p << " lives";
    EXPECT_THROW(ex.submit(sqr, 1), mp::ProcessError);
  }
}

// A forked child that calls exit() destroys its copy of a global executor. The copy's
// shutdown(wait=true) waited for the parent's manager thread, which the child does not have:
// the child never ended (join() timed out).
TEST(ProcessPoolExecutorInheritedByFork, ChildThatExitsEndsAndLeavesTheParentsExecutor) {
  g_inherited_executor.emplace(mp::ProcessPoolExecutorOptions{
      .max_workers = 2, .mp_context = mp::get_context(mp::StartMethod::fork)});
  EXPECT_EQ(g_inherited_executor->submit(sqr, 2).result(30s), 4);
  mp::Process child(mp::get_context(mp::StartMethod::fork), exit_three);
  child.start();
  bool ended = child.join(30s);
  if (!ended) child.kill();
  EXPECT_TRUE(ended) << "the child hung in its copy's destructor";
  if (ended) {
    EXPECT_TRUE(exited_three(child.exitcode())) << child.exitcode().value_or(-999);
  }
  EXPECT_EQ(g_inherited_executor->submit(sqr, 3).result(30s), 9);
  g_inherited_executor.reset();
}

// The copy a forked child inherits has neither the parent's manager thread nor its pool: submit()
// returned a future that never completed, shutdown(wait=true) and terminate_workers() waited for
// ever on the parent's threads. Every use is now a clear error, and the parent's executor is
// untouched.
TEST(ProcessPoolExecutorInheritedByFork, UsingItInAForkedChildIsAClearError) {
  g_inherited_executor.emplace(mp::ProcessPoolExecutorOptions{
      .max_workers = 2, .mp_context = mp::get_context(mp::StartMethod::fork)});
  EXPECT_EQ(g_inherited_executor->submit(sqr, 2).result(30s), 4);
  auto workers = g_inherited_executor->worker_pids();
  mp::Process child(mp::get_context(mp::StartMethod::fork), use_inherited_executor);
  child.start();
  bool ended = child.join(60s);
  if (!ended) child.kill();
  EXPECT_TRUE(ended) << "the child hung using its copy";
  if (ended) {
    EXPECT_TRUE(exited_three(child.exitcode())) << "exit code " << child.exitcode().value_or(-999)
                                                << " (128 + a bit per use that was not refused)";
  }
  EXPECT_EQ(g_inherited_executor->submit(sqr, 3).result(30s), 9);
  EXPECT_EQ(g_inherited_executor->worker_pids(), workers);
  g_inherited_executor.reset();
}

MP_ALL_START_METHODS(ProcessPoolExecutorTest);

}  // namespace
