// ThreadPool: the ThreadPool variants of CPython's _TestPool (test_apply, test_map, test_starmap,
// test_async, test_async_timeout, test_imap*, test_terminate, test_empty_iterable, the callbacks,
// test_map_no_failfast...) plus what threads allow that processes cannot: capturing lambdas,
// std::function, member functions, move-only results.
#include <atomic>
#include <chrono>
#include <cstdio>
#include <functional>
#include <future>
#include <memory>
#include <numeric>
#include <optional>
#include <ranges>
#include <set>
#include <stdexcept>
#include <string>
#include <thread>
#include <vector>

#include <gtest/gtest.h>
#include <multiproc/process.hpp>
#include <multiproc/thread_pool.hpp>

#include "exit_three.hpp"

namespace mp = multiproc;
using namespace std::chrono_literals;

namespace {

int sqr(int x) {
  return x * x;
}
int add(int a, int b) {
  return a + b;
}
int sleepy_sqr(int x) {
  std::this_thread::sleep_for(50ms);
  return x * x;
}

struct Counter {
  int base = 100;
  int plus(int x) const { return base + x; }
};

// An input range that throws after `n` items (CPython's SayWhenError iterator).
struct ThrowingRange {
  int n;
  struct iterator {
    using value_type = int;
    using difference_type = std::ptrdiff_t;
    int i = 0, n = 0;
    int operator*() const {
      if (i == n) throw std::runtime_error("input failed");
      return i;
    }
    iterator& operator++() {
      ++i;
      return *this;
    }
    void operator++(int) { ++i; }
    bool operator==(std::default_sentinel_t) const { return i > 2 * n; }
  };
  iterator begin() const { return {0, n}; }
  std::default_sentinel_t end() const { return {}; }
};

// A ThreadPool a forked child inherits (a global): its threads are not in the child.
std::optional<mp::ThreadPool> g_inherited_thread_pool;
// Exits with 128 + a bit per use that was not refused, else through exit(3) (the copy's
// destructor runs).
void use_inherited_thread_pool() {
  auto& pool = *g_inherited_thread_pool;
  int failed = refused([&] { (void)pool.apply_async(sqr, 2).get(5s); });
  failed |= refused([&] { (void)pool.map_async(sqr, std::vector<int>{1, 2}).get(5s); }) << 1;
  failed |= refused([&] { (void)pool.imap(sqr, std::vector<int>{1, 2}).next(5s); }) << 2;
  failed |= refused([&] { pool.close(); }) << 3;
  failed |= refused([&] { pool.join(); }) << 4;
  failed |= refused([&] { pool.terminate(); }) << 5;
  if (failed) std::_Exit(128 | failed);
  exit_three();
}

TEST(ThreadPool, Apply) {
  mp::ThreadPool p(4);
  EXPECT_EQ(p.apply(sqr, 5), 25);
  EXPECT_EQ(p.apply(add, 2, 3), 5);
  int base = 7;
  EXPECT_EQ(p.apply([&](int x) { return base * x; }, 6), 42);  // a capturing lambda
  std::function<std::string(std::string)> shout = [](std::string s) { return s + "!"; };
  EXPECT_EQ(p.apply(shout, std::string("hey")), "hey!");
  Counter c;
  EXPECT_EQ(p.apply(&Counter::plus, &c, 5), 105);  // a member function, object first
  p.apply([] {});                                  // a void task
}

TEST(ThreadPool, ResultsMoveAndExceptionsKeepTheirType) {
  mp::ThreadPool p(2);
  auto up = p.apply([] { return std::make_unique<int>(42); });  // move-only: nothing copied
  ASSERT_TRUE(up);
  EXPECT_EQ(*up, 42);
  auto r =
      p.apply_async([](int x) -> int { throw std::out_of_range("x=" + std::to_string(x)); }, 3);
  EXPECT_THROW(r.get(), std::out_of_range);  // as thrown, not wrapped in RemoteError
  EXPECT_TRUE(r.ready());
  EXPECT_FALSE(r.successful());
  try {
    r.get();
  } catch (const std::out_of_range& e) {
    EXPECT_STREQ(e.what(), "x=3");
  }
}

TEST(ThreadPool, MapAndStarmap) {
  mp::ThreadPool p(4);
  std::vector<int> xs(10);
  std::iota(xs.begin(), xs.end(), 0);
  std::vector<int> want;
  for (int x : xs) want.push_back(x * x);
  EXPECT_EQ(p.map(sqr, xs), want);
  EXPECT_EQ(p.map(sqr, xs, 3), want);  // test_map_chunksize
  std::vector<int> big(100);
  std::iota(big.begin(), big.end(), 0);
  std::vector<int> big_want;
  for (int x : big) big_want.push_back(x * x);
  EXPECT_EQ(p.map(sqr, big, 20), big_want);
  int k = 3;
  EXPECT_EQ(p.map([k](int x) { return x * k; }, std::views::iota(0, 4)),
            (std::vector<int>{0, 3, 6, 9}));
  std::vector<std::pair<int, int>> pairs{{1, 2}, {3, 4}, {5, 6}};
  EXPECT_EQ(p.starmap(add, pairs), (std::vector<int>{3, 7, 11}));
  EXPECT_EQ(p.starmap_async(add, pairs).get(), (std::vector<int>{3, 7, 11}));
  EXPECT_EQ(p.map_async(sqr, xs).get(), want);
  // test_empty_iterable
  EXPECT_TRUE(p.map(sqr, std::vector<int>{}).empty());
  EXPECT_TRUE(p.starmap(add, std::vector<std::pair<int, int>>{}).empty());
  EXPECT_TRUE(p.map_async(sqr, std::vector<int>{}).get().empty());
  EXPECT_FALSE(p.imap(sqr, std::vector<int>{}).next().has_value());
  EXPECT_FALSE(p.imap_unordered(sqr, std::vector<int>{}).next().has_value());
}

TEST(ThreadPool, MapCallbacks) {
  mp::ThreadPool p(2);
  std::vector<std::vector<int>> got;
  std::vector<std::string> errors;
  auto r = p.map_async(mp::callbacks([&](const std::vector<int>& v) { got.push_back(v); },
                                     [&](std::exception_ptr) { errors.push_back("err"); }),
                       sqr, std::vector<int>{1, 2, 3});
  EXPECT_EQ(r.get(), (std::vector<int>{1, 4, 9}));
  ASSERT_EQ(got.size(), 1u);  // the callback ran before the result became ready
  EXPECT_EQ(got[0], (std::vector<int>{1, 4, 9}));
  auto bad = p.map_async(
      mp::callbacks([&](const std::vector<int>& v) { got.push_back(v); },
                    [&](std::exception_ptr) { errors.push_back("err"); }),
      [](int x) -> int {
        if (x == 2) throw std::invalid_argument("two");
        return x;
      },
      std::vector<int>{1, 2, 3});
  EXPECT_THROW(bad.get(), std::invalid_argument);
  EXPECT_EQ(got.size(), 1u);
  EXPECT_EQ(errors.size(), 1u);
  // test_map_no_failfast: every other call still ran, and its outcome is kept.
  auto outs = bad.outcomes();
  ASSERT_EQ(outs.size(), 3u);
  EXPECT_EQ(outs[0].value(), 1);
  EXPECT_FALSE(outs[1].ok());
  EXPECT_EQ(outs[2].value(), 3);
  EXPECT_EQ(bad.failures(), 1u);

  int seen = 0;
  auto a = p.apply_async(mp::callbacks([&](int v) { seen = v; }), sqr, 9);
  EXPECT_EQ(a.get(), 81);
  EXPECT_EQ(seen, 81);
}

TEST(ThreadPool, AsyncAndTimeout) {
  mp::ThreadPool p(2);
  auto r = p.apply_async(sleepy_sqr, 7);
  EXPECT_EQ(r.get(5s), 49);
  std::atomic<bool> release{false};
  auto slow = p.apply_async([&] {
    while (!release.load()) std::this_thread::sleep_for(1ms);
    return 1;
  });
  EXPECT_THROW(slow.get(50ms), mp::TimeoutError);  // test_async_timeout
  EXPECT_FALSE(slow.ready());
  EXPECT_THROW((void)slow.successful(), mp::ProcessError);
  EXPECT_FALSE(slow.wait(10ms));
  release = true;
  EXPECT_TRUE(slow.wait(10s));
  EXPECT_EQ(slow.get(), 1);
}

TEST(ThreadPool, Imap) {
  mp::ThreadPool p(4);
  std::vector<int> got;
  for (int y : p.imap(sqr, std::views::iota(0, 10))) got.push_back(y);
  EXPECT_EQ(got, (std::vector<int>{0, 1, 4, 9, 16, 25, 36, 49, 64, 81}));
  got.clear();
  for (int y : p.imap(sqr, std::views::iota(0, 1000), 100)) got.push_back(y);
  ASSERT_EQ(got.size(), 1000u);
  EXPECT_EQ(got[999], 999 * 999);
  // An endless input is read only as results are taken.
  auto it = p.imap([](int x) { return x + 1; }, std::views::iota(0));
  for (int i = 0; i < 50; ++i) EXPECT_EQ(it.next(), i + 1);

  std::multiset<int> unordered;
  for (int y : p.imap_unordered(sqr, std::views::iota(0, 100), 7)) unordered.insert(y);
  std::multiset<int> want;
  for (int x = 0; x < 100; ++x) want.insert(x * x);
  EXPECT_EQ(unordered, want);
}

// terminate() (or the destructor) while an imap reads an endless input: the readers stop (they used
// to read on for ever once the pool was no longer running, so terminate() never returned), and
// the consumer is told why.
TEST(ThreadPool, TerminateStopsAnEndlessImap) {
  for (int round = 0; round < 20; ++round) {
    mp::ThreadPool p(4);
    auto it = p.imap([](int x) { return x + 1; }, std::views::iota(0));
    for (int i = 0; i < 10; ++i) ASSERT_EQ(it.next(), i + 1);
    p.terminate();
    // Whatever was computed before may still be taken; then the imap fails (BrokenPool, or
    // "not running" when it would have needed a new reader).
    bool broke = false;
    for (int i = 0; i < 1000 && !broke; ++i) {
      try {
        if (!it.next(10s)) break;
      } catch (const mp::ProcessError&) {
        broke = true;
      }
    }
    EXPECT_TRUE(broke);
  }
}

TEST(ThreadPool, ImapHandlesIterableAndTaskExceptions) {
  mp::ThreadPool p(3);
  for (bool ordered : {true, false}) {
    // test_imap_handle_iterable_exception: the items before the failure, then the failure.
    auto r = ordered ? p.imap(sqr, ThrowingRange{5}) : p.imap_unordered(sqr, ThrowingRange{5});
    std::multiset<int> got;
    for (int i = 0; i < 5; ++i) got.insert(*r.next(10s));
    EXPECT_EQ(got, (std::multiset<int>{0, 1, 4, 9, 16}));
    EXPECT_THROW(r.next(10s), std::runtime_error);
    EXPECT_FALSE(r.next(10s).has_value());
  }
  // A task that throws: its position throws, iteration goes on.
  auto r = p.imap(
      [](int x) {
        if (x == 2) throw std::invalid_argument("two");
        return x;
      },
      std::vector<int>{0, 1, 2, 3});
  EXPECT_EQ(r.next(), 0);
  EXPECT_EQ(r.next(), 1);
  EXPECT_THROW(r.next(), std::invalid_argument);
  EXPECT_EQ(r.next(), 3);
  EXPECT_FALSE(r.next().has_value());
}

TEST(ThreadPool, CloseJoinTerminate) {
  EXPECT_THROW(mp::ThreadPool(0), mp::ProcessError);  // test_make_pool
  EXPECT_THROW(mp::ThreadPool(-1), mp::ProcessError);
  {
    mp::ThreadPool p(2);
    EXPECT_THROW(p.join(), mp::ProcessError);  // join before close
    auto r = p.map_async(sleepy_sqr, std::views::iota(0, 6));
    auto lazy = p.imap(sqr, std::views::iota(0, 200));
    p.close();
    EXPECT_THROW(p.apply(sqr, 1), mp::ProcessError);  // not running
    p.join();
    EXPECT_TRUE(r.ready());
    EXPECT_EQ(r.get().size(), 6u);
    int n = 0;
    while (lazy.next(5s)) ++n;  // work submitted before close() completes
    EXPECT_EQ(n, 200);
  }
  {
    // test_terminate: calls not yet started fail with BrokenPool; terminate returns promptly.
    mp::ThreadPool p(1);
    std::atomic<bool> started{false};
    auto running = p.apply_async([&] {
      started = true;
      std::this_thread::sleep_for(100ms);
      return 1;
    });
    while (!started) std::this_thread::sleep_for(1ms);
    auto queued = p.map_async(sleepy_sqr, std::views::iota(0, 100), 1);
    auto t0 = std::chrono::steady_clock::now();
    p.terminate();
    EXPECT_LT(std::chrono::steady_clock::now() - t0, 5s);
    EXPECT_EQ(running.get(), 1);  // a running call is not interrupted
    EXPECT_THROW(queued.get(), mp::BrokenPool);
    p.join();  // after terminate: returns at once
  }
}

TEST(ThreadPool, InitializerAndProgress) {
  std::atomic<int> inits{0};
  {
    mp::ThreadPool p(mp::ThreadPoolOptions{.processes = 3, .initializer = [&] { ++inits; }});
    EXPECT_EQ(p.processes(), 3u);
    EXPECT_EQ(p.map(sqr, std::vector<int>{1, 2}, mp::MapOptions{.chunksize = 1, .progress = true}),
              (std::vector<int>{1, 4}));
    int n = 0;
    for (int y : p.imap(sqr, std::views::iota(0, 5), mp::MapOptions{.progress = true})) n += y > -1;
    EXPECT_EQ(n, 5);
    p.close();
    p.join();
  }
  EXPECT_EQ(inits.load(), 3);
  // An initializer that throws: the pool stops taking calls (ProcessError) and the queued ones
  // fail (BrokenPool, a ProcessError), whichever comes first.
  mp::ThreadPool bad(mp::ThreadPoolOptions{
      .processes = 1, .initializer = [] { throw std::runtime_error("no setup"); }});
  EXPECT_THROW((void)bad.apply_async(sqr, 2).get(10s), mp::ProcessError);
}

TEST(ThreadPool, ReleasesTaskReferences) {
  // test_release_task_refs: a finished task's arguments and closure are not kept.
  mp::ThreadPool p(2);
  auto arg = std::make_shared<int>(5);
  std::weak_ptr<int> w = arg;
  auto r = p.apply_async([](std::shared_ptr<int> x) { return *x; }, std::move(arg));
  EXPECT_EQ(r.get(), 5);
  p.close();
  p.join();
  EXPECT_TRUE(w.expired());
}

}  // namespace

// outcomes() of a map whose results are bool: std::vector<bool> hands out proxies, not references,
// so each outcome must hold its own copy of the value (no reference to a temporary).
TEST(ThreadPool, OutcomesOfBoolResultsAreTheValues) {
  mp::ThreadPool p(2);
  auto is_odd = [](int x) -> bool {
    if (x == 4) throw std::invalid_argument("four");
    return x % 2 == 1;
  };
  auto all_ok = p.map_async(is_odd, std::vector<int>{1, 2, 3});
  auto outs = all_ok.outcomes();
  ASSERT_EQ(outs.size(), 3u);
  EXPECT_TRUE(outs[0].value());
  EXPECT_FALSE(outs[1].value());
  EXPECT_TRUE(outs[2].value());
  auto one_bad = p.map_async(is_odd, std::vector<int>{1, 4, 5, 6});
  auto outs2 = one_bad.outcomes();
  ASSERT_EQ(outs2.size(), 4u);
  EXPECT_TRUE(outs2[0].value());
  EXPECT_FALSE(outs2[1].ok());
  EXPECT_TRUE(outs2[2].value());
  EXPECT_FALSE(outs2[3].value());
}

// The copy a forked child inherits has none of the parent's threads: apply() and map() waited for
// ever for a thread to run them, join(), terminate() and the destructor for threads the child
// does not have. Every use is now a clear error, and the parent's pool goes on.
TEST(ThreadPoolInheritedByFork, UsingItInAForkedChildIsAClearError) {
  g_inherited_thread_pool.emplace(2);
  EXPECT_EQ(g_inherited_thread_pool->apply(sqr, 3), 9);
  mp::Process child(mp::get_context(mp::StartMethod::fork), use_inherited_thread_pool);
  child.start();
  bool ended = child.join(60s);
  if (!ended) child.kill();
  EXPECT_TRUE(ended) << "the child hung using its copy";
  if (ended) {
    EXPECT_TRUE(exited_three(child.exitcode())) << "exit code " << child.exitcode().value_or(-999)
                                                << " (128 + a bit per use that was not refused)";
  }
  EXPECT_EQ(g_inherited_thread_pool->map(sqr, std::vector<int>{1, 2}), (std::vector<int>{1, 4}));
  g_inherited_thread_pool.reset();
}

// A callback runs before its result is ready (as Python's ThreadPool): get() of that result
// inside the callback waited for ever. It has the value (or the error) already, and returns it.
TEST(ThreadPool, GetOfItsOwnResultInsideItsCallbackReturns) {
  mp::ThreadPool pool(2);
  std::atomic<bool> published{false};
  std::optional<mp::ThreadAsyncResult<int>> ok, bad;
  std::optional<mp::ThreadMapResult<int>> mapped;
  std::promise<std::string> said_ok, said_bad, said_map;
  auto tell = [&](std::promise<std::string>& said, auto&& check) {
    while (!published.load()) std::this_thread::yield();
    try {
      check();
      said.set_value("returned");
    } catch (const std::exception& e) {
      said.set_value(std::string("threw: ") + e.what());
    }
  };
  ok.emplace(pool.apply_async(
      mp::callbacks([&](int) {
        tell(said_ok, [&] {
          if (ok->get() != 1) throw std::logic_error("wrong value");
        });
      }),
      [](int x) {
        std::this_thread::sleep_for(100ms);
        return x;
      },
      1));
  bad.emplace(pool.apply_async(
      mp::callbacks(nullptr,
                    [&](std::exception_ptr) {
                      tell(said_bad, [&] {
                        try {
                          (void)bad->get();
                        } catch (const std::invalid_argument&) {
                          return;
                        }
                        throw std::logic_error("no error");
                      });
                    }),
      [](int) -> int {
        std::this_thread::sleep_for(100ms);
        throw std::invalid_argument("bad");
      },
      1));
  mapped.emplace(pool.map_async(mp::callbacks([&](std::vector<int>&) {
                                  tell(said_map, [&] {
                                    if (mapped->get() != std::vector<int>{1, 4, 9})
                                      throw std::logic_error("wrong values");
                                  });
                                }),
                                sleepy_sqr, std::vector<int>{1, 2, 3}));
  published.store(true);
  for (auto* said : {&said_ok, &said_bad, &said_map}) {
    auto answer = said->get_future();
    if (answer.wait_for(30s) != std::future_status::ready) {
      std::fprintf(stderr, "FAILED: get() inside its own callback still waiting after 30 s\n");
      std::_Exit(1);  // the pool's threads cannot be joined
    }
    EXPECT_EQ(answer.get(), "returned");
  }
  EXPECT_EQ(ok->get(10s), 1);
  EXPECT_EQ(mapped->get(10s), (std::vector<int>{1, 4, 9}));
}
