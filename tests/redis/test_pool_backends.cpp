// One set of Pool test bodies, two backends (CPython runs its pool tests WithProcessesTest and
// WithManagerTest alike): multiproc::Pool and multiproc::redis::Pool against this binary's
// redis-server, each under fork, spawn and forkserver. apply, apply_async with callbacks and
// error callbacks, map/map_async with and without a chunk size, empty input, starmap, imap and
// imap_unordered (an endless input read lazily), task exceptions coming back as their own type
// naming the item, close/join/terminate. What differs between the two is left out here: worker
// names (a redis worker is named by host, pid and id), maxtasksperchild, initializers.
#include <signal.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <memory>
#include <mutex>
#include <numeric>
#include <optional>
#include <ranges>
#include <set>
#include <stdexcept>
#include <string>
#include <thread>
#include <tuple>
#include <vector>

#include <multiproc/redis.hpp>

#include "pool_tasks.hpp"
#include "redis_server.hpp"
#include "start_methods.hpp"

namespace mpr = multiproc::redis;
using namespace std::chrono_literals;

namespace {

MP_REDIS_TEST_PROGRAM();

// Leaves a file: the call ran.
int64_t touch(std::string path) {
  std::ofstream(path) << "ran";
  return 1;
}

size_t files_in(const std::string& dir) {
  size_t n = 0;
  for ([[maybe_unused]] const auto& e : std::filesystem::directory_iterator(dir)) ++n;
  return n;
}

std::vector<std::string> paths(const std::string& dir, const std::string& prefix, int n) {
  std::vector<std::string> out;
  for (int i = 0; i < n; ++i) out.push_back(dir + "/" + prefix + std::to_string(i));
  return out;
}

// Runs f, for calls that used to hang: one still running after `limit` cannot be interrupted,
// so the test program says which and ends.
template <class F>
void within(std::chrono::seconds limit, const char* what, F f) {
  std::mutex mu;
  std::condition_variable cv;
  bool done = false;
  std::thread watchdog([&] {
    std::unique_lock lk(mu);
    if (!cv.wait_for(lk, limit, [&] { return done; })) {
      std::fprintf(stderr, "FAILED: %s: still waiting after %lld s\n", what,
                   static_cast<long long>(limit.count()));
      std::_Exit(1);
    }
  });
  auto finish = [&] {
    {
      std::lock_guard lk(mu);
      done = true;
    }
    cv.notify_all();
    watchdog.join();
  };
  try {
    f();
  } catch (...) {
    finish();
    throw;
  }
  finish();
}

struct CorePool {
  static std::unique_ptr<mp::Pool> make(const mp::Context& ctx, unsigned n) {
    return std::make_unique<mp::Pool>(mp::PoolOptions{.processes = n, .context = ctx});
  }
};

struct RedisPool {
  static std::unique_ptr<mpr::Pool> make(const mp::Context& ctx, unsigned n) {
    return std::make_unique<mpr::Pool>(
        RedisServer::instance()->url(),
        mpr::PoolOptions{.processes = n, .name = test_pool_name(), .context = ctx});
  }
};

// An input item that fails to be made, as a Python generator raising at 50.
int64_t item_failing_at_50(int64_t i) {
  if (i == 50) throw std::runtime_error("input failed at 50");
  return i;
}

template <class Backend>
struct PoolBodies {
  static void apply_and_callbacks(const mp::Context& ctx) {
    auto pool = Backend::make(ctx, 2);
    EXPECT_EQ(pool->apply(sqr, 5), 25);
    EXPECT_EQ(pool->apply(add, 2, 3), 5);
    auto r = pool->apply_async(shout, std::string("hi"));
    EXPECT_EQ(r.get(30s), "hi!");
    EXPECT_TRUE(r.ready());
    EXPECT_TRUE(r.successful());
    pool->apply(nothing);

    std::atomic<int64_t> got{0};
    auto ok = pool->apply_async(mp::callbacks([&got](int64_t v) { got = v; }), sqr, 7);
    EXPECT_TRUE(ok.wait(30s));
    EXPECT_EQ(got.load(), 49);  // the callback ran before the result was ready
    std::atomic<int> errors{0};
    auto on_error = [&errors](std::exception_ptr e) {
      try {
        std::rethrow_exception(e);
      } catch (const std::invalid_argument&) {
        ++errors;
      } catch (...) {
      }
    };
    auto bad = pool->apply_async(mp::callbacks(nullptr, on_error), raise_value_error, 5);
    EXPECT_TRUE(bad.wait(30s));
    EXPECT_EQ(errors.load(), 1);
    EXPECT_FALSE(bad.successful());

    std::atomic<size_t> all{0};
    auto on_all = [&all](std::vector<int64_t>& v) { all = v.size(); };
    auto m = pool->map_async(mp::callbacks(on_all), sqr, std::vector<int64_t>{1, 2, 3});
    EXPECT_EQ(m.get(30s), (std::vector<int64_t>{1, 4, 9}));
    EXPECT_EQ(all.load(), 3U);
    auto failed = pool->map_async(mp::callbacks(nullptr, on_error), raise_value_error,
                                  std::vector<int>{4, 5, 6});
    EXPECT_TRUE(failed.wait(30s));
    EXPECT_EQ(errors.load(), 2);
  }

  static void map_starmap_and_chunksize(const mp::Context& ctx) {
    auto pool = Backend::make(ctx, 2);
    std::vector<int64_t> xs(1000);
    std::iota(xs.begin(), xs.end(), 0);
    auto ys = pool->map(sqr, xs);
    ASSERT_EQ(ys.size(), xs.size());
    for (size_t i = 0; i < xs.size(); ++i) ASSERT_EQ(ys[i], xs[i] * xs[i]);
    EXPECT_EQ(pool->map(sqr, xs, 7), ys);
    EXPECT_EQ(pool->map_async(sqr, std::vector<int64_t>(xs.begin(), xs.begin() + 50), 1).get(30s),
              std::vector<int64_t>(ys.begin(), ys.begin() + 50));
    EXPECT_EQ(pool->map(shout, std::vector<std::string>{"a", "b"}),
              (std::vector<std::string>{"a!", "b!"}));
    // Empty input: an empty result at once, with or without a chunk size.
    EXPECT_TRUE(pool->map(sqr, std::vector<int64_t>{}).empty());
    EXPECT_TRUE(pool->map(sqr, std::vector<int64_t>{}, 1).empty());
    auto empty = pool->map_async(sqr, std::vector<int64_t>{});
    EXPECT_TRUE(empty.wait(5s));
    EXPECT_TRUE(empty.get().empty());
    std::vector<std::tuple<int, int>> pairs{{1, 2}, {3, 4}, {5, 6}};
    EXPECT_EQ(pool->starmap(add, pairs), (std::vector<int>{3, 7, 11}));
    EXPECT_EQ(pool->starmap(add, pairs, 1), (std::vector<int>{3, 7, 11}));
    EXPECT_TRUE(pool->starmap(add, std::vector<std::tuple<int, int>>{}).empty());
  }

  static void imap_ordered_unordered_and_lazy(const mp::Context& ctx) {
    auto pool = Backend::make(ctx, 2);
    std::vector<int64_t> out;
    for (auto y : pool->imap(sqr, std::views::iota(int64_t{0}, int64_t{200}), 7)) out.push_back(y);
    ASSERT_EQ(out.size(), 200U);
    for (int64_t i = 0; i < 200; ++i) ASSERT_EQ(out[static_cast<size_t>(i)], i * i);
    std::multiset<int64_t> unordered;
    for (auto y : pool->imap_unordered(sqr, std::views::iota(int64_t{0}, int64_t{200})))
      unordered.insert(y);
    EXPECT_EQ(unordered, std::multiset<int64_t>(out.begin(), out.end()));
    auto it = pool->imap(sqr, std::views::iota(int64_t{0}));  // endless input
    for (int64_t i = 0; i < 50; ++i) ASSERT_EQ(it.next(30s), i * i);
    int n = 0;
    for ([[maybe_unused]] auto y : pool->imap(sqr, std::vector<int64_t>{})) ++n;
    EXPECT_EQ(n, 0);
  }

  // Python's task handler reads an imap's whole input: close() + join() before reading the
  // results runs every call, and the results are there afterwards (more items than the pool
  // keeps in flight).
  static void imap_not_read_before_close_and_join_runs_every_call(const mp::Context& ctx) {
    auto pool = Backend::make(ctx, 2);
    auto ordered = pool->imap(sqr, std::views::iota(int64_t{0}, int64_t{100}));
    auto unordered = pool->imap_unordered(sqr, std::views::iota(int64_t{0}, int64_t{100}), 3);
    pool->close();
    within(60s, "join() with imap results not read", [&] { pool->join(); });
    int64_t i = 0;
    while (auto y = ordered.next(10s)) {
      EXPECT_EQ(*y, i * i);
      ++i;
    }
    EXPECT_EQ(i, 100);
    std::set<int64_t> seen;
    while (auto y = unordered.next(10s)) seen.insert(*y);
    EXPECT_EQ(seen.size(), 100U);
  }

  // An imap result dropped half way (or never kept) holds nothing back: its remaining calls run,
  // as Python's do, their results dropped, and close() + join() returns.
  static void imap_dropped_half_way_runs_the_rest(const mp::Context& ctx) {
    TempDir dir;
    auto pool = Backend::make(ctx, 2);
    const auto half = paths(dir.path, "half", 100), unkept = paths(dir.path, "unkept", 100);
    {
      auto it = pool->imap(touch, half, 2);
      for (int i = 0; i < 5; ++i) ASSERT_EQ(it.next(30s), 1);
    }
    { (void)pool->imap_unordered(touch, unkept); }
    EXPECT_EQ(pool->apply(sqr, 3), 9);  // the dropped calls hold up no later call
    pool->close();
    within(60s, "join() after imap results were dropped", [&] { pool->join(); });
    EXPECT_EQ(files_in(dir.path), 200U);
  }

  // terminate() and the destructor with imap results not read (kept, dropped half way) return
  // at once; the results kept fail with BrokenPool.
  static void imap_not_read_then_terminate_or_destroy(const mp::Context& ctx) {
    {
      auto pool = Backend::make(ctx, 2);
      auto it = pool->imap(slow_identity, std::views::iota(0, 1000));
      ASSERT_EQ(it.next(30s), 0);
      within(30s, "terminate() with imap results not read", [&] { pool->terminate(); });
      EXPECT_THROW(
          {
            for (int i = 0; i < 1000; ++i) (void)it.next(10s);
          },
          mp::BrokenPool);
    }
    {
      auto pool = Backend::make(ctx, 2);
      {
        auto it = pool->imap(slow_identity, std::views::iota(0, 1000));
        ASSERT_EQ(it.next(30s), 0);
      }
      within(30s, "the destructor after an imap result was dropped", [&] { pool.reset(); });
    }
    {
      auto pool = Backend::make(ctx, 2);
      auto it = pool->imap(slow_identity, std::views::iota(0, 1000));
      ASSERT_EQ(it.next(30s), 0);
      within(30s, "the destructor with imap results not read", [&] { pool.reset(); });
    }
  }

  // The input's exception is the outcome at its place (after the items of its chunk read before
  // it), then the end; the pool goes on.
  static void imap_input_that_throws_surfaces_in_place(const mp::Context& ctx) {
    auto pool = Backend::make(ctx, 2);
    auto it = pool->imap(
        sqr,
        std::views::iota(int64_t{0}, int64_t{1000}) | std::views::transform(item_failing_at_50), 4);
    for (int64_t i = 0; i < 50; ++i) ASSERT_EQ(it.next(30s), i * i);
    try {
      (void)it.next(30s);
      ADD_FAILURE() << "the input's exception did not surface";
    } catch (const std::runtime_error& e) {
      EXPECT_STREQ(e.what(), "input failed at 50");
    }
    EXPECT_EQ(it.next(30s), std::nullopt);
    EXPECT_EQ(pool->apply(sqr, 3), 9);
  }

  static void exceptions_come_back_as_their_type(const mp::Context& ctx) {
    mp::register_exception<RecordError>();
    auto pool = Backend::make(ctx, 2);
    try {
      pool->apply(raise_value_error, 5);
      ADD_FAILURE() << "no exception";
    } catch (const std::invalid_argument& e) {
      EXPECT_EQ(info_of(e).type_name(), "std::invalid_argument");
      EXPECT_EQ(info_of(e).message(), "bad five");
      EXPECT_FALSE(info_of(e).item_index().has_value());
      EXPECT_EQ(dynamic_cast<const mp::ProcessError*>(&e), nullptr);
    }
    try {
      pool->apply(raise_non_std, 1);
      ADD_FAILURE() << "no exception";
    } catch (const mp::RemoteError& e) {
      EXPECT_EQ(e.type_name(), "int");
    }
    try {
      pool->apply(raise_record_error, 3);
      ADD_FAILURE() << "no exception";
    } catch (const RecordError& e) {
      EXPECT_EQ(info_of(e).message(), "bad record 3");
    }
    try {
      pool->map(raise_value_error, std::vector<int>{1, 2, 5, 7}, 1);
      ADD_FAILURE() << "no exception";
    } catch (const std::invalid_argument& e) {
      EXPECT_EQ(info_of(e).item_index(), std::optional<size_t>(2));
      EXPECT_NE(std::string(e.what()).find("item 2"), std::string::npos) << e.what();
    }
    expect_imap_fails_only_at_13(*pool);
    try {
      pool->starmap(domain_error_at_2, std::vector<std::tuple<int, int>>{{1, 1}, {2, 2}, {3, 3}});
      ADD_FAILURE() << "no exception";
    } catch (const std::domain_error& e) {
      EXPECT_EQ(info_of(e).item_index(), std::optional<size_t>(1));
    }
    auto r = pool->map_async(raise_value_error, std::vector<int>{1, 2, 5, 7});
    EXPECT_THROW(r.get(30s), std::invalid_argument);
    EXPECT_FALSE(r.successful());
    auto outcomes = r.outcomes();
    ASSERT_EQ(outcomes.size(), 4U);
    EXPECT_EQ(outcomes[0].value(), 1);
    EXPECT_FALSE(outcomes[2].ok());
    EXPECT_EQ(outcomes[3].value(), 7);
    EXPECT_EQ(pool->apply(sqr, 3), 9);  // the pool goes on
  }

  static void close_join_terminate(const mp::Context& ctx) {
    {
      auto pool = Backend::make(ctx, 1);
      EXPECT_THROW(pool->join(), mp::ProcessError);  // join() before close()
      auto r = pool->map_async(sqr, std::vector<int64_t>{1, 2, 3});
      pool->close();
      EXPECT_THROW(pool->apply(sqr, 1), mp::ProcessError);
      pool->join();
      EXPECT_EQ(r.get(), (std::vector<int64_t>{1, 4, 9}));
    }
    {
      auto pool = Backend::make(ctx, 2);
      auto r = pool->map_async(slow_identity, std::vector<int>(2000, 1), 1);
      std::this_thread::sleep_for(50ms);
      const auto t0 = std::chrono::steady_clock::now();
      pool->terminate();
      EXPECT_LT(std::chrono::steady_clock::now() - t0, 10s);
      EXPECT_THROW(r.get(5s), mp::BrokenPool);
      pool->join();
    }
    EXPECT_TRUE(mp::active_children().empty());
  }
};

class WithCorePool : public StartMethodTest {};
class WithRedisPool : public StartMethodTest {};

// Each body once per backend.
#define MP_POOL_BODY(Test, body)        \
  TEST_P(WithCorePool, Test) {          \
    PoolBodies<CorePool>::body(ctx());  \
  }                                     \
  TEST_P(WithRedisPool, Test) {         \
    MP_REQUIRE_REDIS();                 \
    PoolBodies<RedisPool>::body(ctx()); \
  }

MP_POOL_BODY(ApplyAndCallbacks, apply_and_callbacks)
MP_POOL_BODY(MapStarmapAndChunksize, map_starmap_and_chunksize)
MP_POOL_BODY(ImapOrderedUnorderedAndLazy, imap_ordered_unordered_and_lazy)
MP_POOL_BODY(ExceptionsComeBackAsTheirType, exceptions_come_back_as_their_type)
MP_POOL_BODY(CloseJoinTerminate, close_join_terminate)
MP_POOL_BODY(ImapNotReadBeforeCloseAndJoinRunsEveryCall,
             imap_not_read_before_close_and_join_runs_every_call)
MP_POOL_BODY(ImapDroppedHalfWayRunsTheRest, imap_dropped_half_way_runs_the_rest)
MP_POOL_BODY(ImapInputThatThrowsSurfacesInPlace, imap_input_that_throws_surfaces_in_place)
MP_POOL_BODY(ImapNotReadThenTerminateOrDestroy, imap_not_read_then_terminate_or_destroy)

MP_ALL_START_METHODS(WithCorePool);
MP_ALL_START_METHODS(WithRedisPool);

}  // namespace
