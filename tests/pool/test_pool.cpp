// Pool: CPython's _TestPool / _TestPoolWorkerErrors / _TestPoolWorkerLifetime semantics plus the
// worker-death guarantees Python lacks; each body under fork, spawn and forkserver.
#include <unistd.h>
#include <algorithm>
#include <csignal>
#include <cstdlib>
#include <numeric>
#include <optional>
#include <ranges>
#include <set>
#include <stdexcept>
#include <thread>
#include <tuple>

#include "pool_tasks.hpp"
#include "start_methods.hpp"

using namespace std::chrono_literals;

namespace {

struct NotRegistered : std::runtime_error {
  using std::runtime_error::runtime_error;
};
int raise_not_registered(int) {
  throw NotRegistered("nobody knows me");
}
// Whether `worker` names one of the pool's workers ("ForkPoolWorker-1 (pid 123)").
bool names_a_worker(const std::string& worker, const std::vector<pid_t>& pids) {
  if (worker.find("PoolWorker-") == std::string::npos) return false;
  for (pid_t p : pids)
    if (worker.find("(pid " + std::to_string(p) + ")") != std::string::npos) return true;
  return false;
}
int64_t die_on_multiples_of_100(int64_t x) {
  if (x % 100 == 7) ::kill(getpid(), SIGKILL);
  return x + 1;
}
int crash_with(int how) {
  switch (how) {
    case 0:
      ::kill(getpid(), SIGKILL);
      break;
    case 1:
      ::raise(SIGSEGV);
      break;
    case 2:
      std::abort();
    case 3:
      std::_Exit(3);
  }
  return how;
}
pid_t my_pid(int) {
  std::this_thread::sleep_for(1ms);
  return getpid();
}
void put_to_queue(mp::Queue<int> q, int x) {
  q.put(x * 10);
}

int g_initialized_value = 0;
void set_global(int v) {
  g_initialized_value = v;
}
int read_global(int) {
  return g_initialized_value;
}

}  // namespace

class PoolTest : public StartMethodTest {
 protected:
  mp::PoolOptions options(unsigned n) const {
    return mp::PoolOptions{.processes = n, .context = ctx()};
  }
};

TEST_P(PoolTest, ApplyAndApplyAsync) {
  mp::Pool pool(options(2));
  EXPECT_EQ(pool.apply(sqr, 5), 25);
  EXPECT_EQ(pool.apply(add, 2, 3), 5);
  auto r = pool.apply_async(shout, std::string("hi"));
  EXPECT_EQ(r.get(30s), "hi!");
  EXPECT_TRUE(r.ready());
  EXPECT_TRUE(r.successful());
  pool.apply(nothing);
}

TEST_P(PoolTest, MapAndStarmapInOrder) {
  mp::Pool pool(options(2));
  std::vector<int64_t> xs(1000);
  std::iota(xs.begin(), xs.end(), 0);
  auto ys = pool.map(sqr, xs);
  ASSERT_EQ(ys.size(), xs.size());
  for (size_t i = 0; i < xs.size(); ++i) ASSERT_EQ(ys[i], xs[i] * xs[i]);
  EXPECT_EQ(pool.map(sqr, std::vector<int64_t>{}, 1).size(), 0u);
  std::vector<std::tuple<int, int>> pairs{{1, 2}, {3, 4}, {5, 6}};
  EXPECT_EQ(pool.starmap(add, pairs), (std::vector<int>{3, 7, 11}));
  EXPECT_EQ(pool.map(sqr, xs, 1), ys);
}

// Both workers put a result per item into one queue, so its put lock keeps changing hands
// between biased holders (queue_core_bias.cpp): a revocation that raced with its holder's next
// bias once let both put at the same place, and a map then waited forever for a lost result.
TEST(Pool, ManyOneItemTasksFromTwoWorkersAllArrive) {
  mp::Pool pool(2);
  std::vector<int64_t> xs(100000);
  std::iota(xs.begin(), xs.end(), 0);
  for (int round = 0; round < 20; ++round) {
    std::vector<int64_t> ys;
    ASSERT_NO_THROW(ys = pool.map_async(sqr, xs, mp::MapOptions{1}).get(60s))
        << "round " << round << ": results lost";
    ASSERT_EQ(ys.size(), xs.size());
    for (size_t i = 0; i < xs.size(); ++i) ASSERT_EQ(ys[i], xs[i] * xs[i]);
  }
}

TEST_P(PoolTest, ImapOrderedAndUnordered) {
  mp::Pool pool(options(2));
  std::vector<int64_t> out;
  for (auto y : pool.imap(sqr, std::views::iota(int64_t{0}, int64_t{200}), 7)) out.push_back(y);
  ASSERT_EQ(out.size(), 200u);
  for (int64_t i = 0; i < 200; ++i) ASSERT_EQ(out[i], i * i);
  std::multiset<int64_t> unordered;
  for (auto y : pool.imap_unordered(sqr, std::views::iota(int64_t{0}, int64_t{200})))
    unordered.insert(y);
  std::multiset<int64_t> expected;
  for (int64_t i = 0; i < 200; ++i) expected.insert(i * i);
  EXPECT_EQ(unordered, expected);
}

TEST_P(PoolTest, ImapReadsUnboundedInputLazily) {
  mp::Pool pool(options(2));
  auto it = pool.imap(sqr, std::views::iota(int64_t{0}));  // infinite input
  for (int64_t i = 0; i < 100; ++i) ASSERT_EQ(it.next(30s), i * i);
}

TEST_P(PoolTest, TaskStandardExceptionIsThrownAsItsOwnType) {
  mp::Pool pool(options(2));
  const auto pids = pool.worker_pids();
  try {
    pool.apply(raise_value_error, 5);
    FAIL() << "no exception";
  } catch (const std::invalid_argument& e) {
    const auto& info = info_of(e);
    EXPECT_EQ(info.type_name(), "std::invalid_argument");
    EXPECT_EQ(info.message(), "bad five");
    EXPECT_TRUE(names_a_worker(info.worker(), pids)) << info.worker();
    EXPECT_FALSE(info.item_index().has_value());
    EXPECT_EQ(std::string(e.what()), "bad five (raised in " + info.worker() + ")");
  }
  try {
    pool.apply(raise_value_error, 5);
    FAIL() << "no exception";
  } catch (const std::exception& e) {  // one std::exception base: catchable as that too
    EXPECT_NE(dynamic_cast<const std::invalid_argument*>(&e), nullptr);
    EXPECT_EQ(dynamic_cast<const mp::ProcessError*>(&e), nullptr);
  }
  try {
    pool.apply(raise_non_std, 1);
    FAIL() << "no exception";
  } catch (const mp::RemoteError& e) {
    EXPECT_EQ(e.type_name(), "int");
    EXPECT_TRUE(names_a_worker(e.worker(), pids)) << e.worker();
  }
  try {
    pool.apply(raise_not_registered, 1);
    FAIL() << "no exception";
  } catch (const mp::RemoteError& e) {  // a type nobody registered stays RemoteError
    EXPECT_NE(e.type_name().find("NotRegistered"), std::string::npos) << e.type_name();
    EXPECT_EQ(e.message(), "nobody knows me");
    EXPECT_NE(std::string(e.what()).find(e.worker()), std::string::npos) << e.what();
  }
  // map, imap and starmap name the failing item.
  try {
    pool.map(raise_value_error, std::vector<int>{1, 2, 5, 7}, 1);
    FAIL() << "no exception";
  } catch (const std::invalid_argument& e) {
    EXPECT_EQ(info_of(e).item_index(), std::optional<size_t>(2));
    EXPECT_NE(std::string(e.what()).find("item 2"), std::string::npos) << e.what();
  }
  expect_imap_fails_only_at_13(pool);
  try {
    std::vector<std::tuple<int, int>> pairs{{1, 1}, {2, 2}, {3, 3}};
    pool.starmap(domain_error_at_2, pairs);
    FAIL() << "no exception";
  } catch (const std::domain_error& e) {
    EXPECT_EQ(info_of(e).item_index(), std::optional<size_t>(1));
  }
  auto r = pool.map_async(raise_value_error, std::vector<int>{1, 2, 5, 7});
  EXPECT_THROW(r.get(30s), std::invalid_argument);
  EXPECT_FALSE(r.successful());
  auto outcomes = r.outcomes();
  ASSERT_EQ(outcomes.size(), 4u);
  EXPECT_EQ(outcomes[0].value(), 1);
  EXPECT_FALSE(outcomes[2].ok());
  EXPECT_EQ(outcomes[3].value(), 7);
  EXPECT_EQ(pool.apply(sqr, 3), 9);  // the pool goes on
}

TEST_P(PoolTest, RegisteredExceptionIsThrownAsItsOwnType) {
  mp::register_exception<RecordError>();
  mp::Pool pool(options(2));
  try {
    pool.map(raise_record_error, std::vector<int>{1, 2, 3, 4}, 1);
    FAIL() << "no exception";
  } catch (const RecordError& e) {
    EXPECT_EQ(info_of(e).item_index(), std::optional<size_t>(2));
    EXPECT_EQ(info_of(e).message(), "bad record 3");
    EXPECT_TRUE(names_a_worker(info_of(e).worker(), pool.worker_pids())) << info_of(e).worker();
  }
}

TEST_P(PoolTest, WorkerDeathFailsOnlyItsTask) {
  mp::Pool pool(options(2));
  for (int how = 0; how < 4; ++how) {
    try {
      pool.apply(crash_with, how);
      FAIL() << "no exception for " << how;
    } catch (const mp::WorkerLost& e) {
      int expect = how == 0 ? -SIGKILL : how == 1 ? -SIGSEGV : how == 2 ? -SIGABRT : 3;
      EXPECT_EQ(e.exitcode(), expect) << e.what();
      EXPECT_GT(e.pid(), 0);
    }
    EXPECT_EQ(pool.apply(sqr, 4), 16);
  }
}

TEST_P(PoolTest, ThousandItemMapWithTenKills) {
  mp::Pool pool(options(2));
  std::vector<int64_t> xs(1000);
  std::iota(xs.begin(), xs.end(), 0);
  auto r = pool.map_async(die_on_multiples_of_100, xs, 1);
  EXPECT_THROW(r.get(120s), mp::WorkerLost);
  auto outcomes = r.outcomes();
  size_t lost = 0;
  for (size_t i = 0; i < xs.size(); ++i) {
    if (xs[i] % 100 == 7) {
      EXPECT_FALSE(outcomes[i].ok());
      EXPECT_THROW(std::rethrow_exception(outcomes[i].error()), mp::WorkerLost);
      ++lost;
    } else {
      ASSERT_TRUE(outcomes[i].ok()) << i;
      EXPECT_EQ(outcomes[i].value(), xs[i] + 1);
    }
  }
  EXPECT_EQ(lost, 10u);
  EXPECT_EQ(r.failures(), 10u);
  // The pool then serves 1,000 more tasks.
  auto ys = pool.map(sqr, xs);
  EXPECT_EQ(ys[999], 999 * 999);
}

TEST_P(PoolTest, QueueArgumentCreatedAfterPoolStarted) {
  mp::Pool pool(options(2));
  mp::Queue<int> q;  // made after the workers started: it still reaches them
  std::vector<std::tuple<mp::Queue<int>, int>> args;
  for (int i = 0; i < 10; ++i) args.emplace_back(q, i);
  pool.starmap(put_to_queue, args);
  std::multiset<int> got;
  for (int i = 0; i < 10; ++i) got.insert(q.get(30s));
  EXPECT_EQ(got, (std::multiset<int>{0, 10, 20, 30, 40, 50, 60, 70, 80, 90}));
}

TEST_P(PoolTest, MaxTasksPerChildRecyclesWorkers) {
  mp::Pool pool(mp::PoolOptions{.processes = 2, .maxtasksperchild = 5, .context = ctx()});
  std::vector<int> xs(40);
  auto pids = pool.map(my_pid, xs, 1);
  std::set<pid_t> distinct(pids.begin(), pids.end());
  EXPECT_GE(distinct.size(), 8u);  // 40 tasks, at most 5 per worker
}

TEST_P(PoolTest, CloseEarlyStillCompletesWithMaxTasks) {
  // CPython #10332: closing before tasks finish must not hang with maxtasksperchild.
  mp::Pool pool(mp::PoolOptions{.processes = 2, .maxtasksperchild = 2, .context = ctx()});
  auto r = pool.map_async(slow_identity, std::vector<int>(20, 1), 1);
  pool.close();
  pool.join();
  EXPECT_EQ(r.get(1s), std::vector<int>(20, 1));
}

TEST_P(PoolTest, InitializerRunsInEveryWorker) {
  mp::Pool pool(mp::PoolOptions{.processes = 2, .initializer = {set_global, 42}, .context = ctx()});
  auto vals = pool.map(read_global, std::vector<int>(10, 0), 1);
  EXPECT_EQ(vals, std::vector<int>(10, 42));
}

TEST_P(PoolTest, TerminateWithManyPendingReturnsPromptly) {
  int fds_before = count_open_fds();
  {
    mp::Pool pool(options(2));
    auto r = pool.map_async(slow_identity, std::vector<int>(10000, 1), 1);
    std::this_thread::sleep_for(50ms);
    auto t0 = std::chrono::steady_clock::now();
    pool.terminate();
    EXPECT_LT(std::chrono::steady_clock::now() - t0, 10s);
    EXPECT_THROW(r.get(5s), mp::BrokenPool);
    pool.join();
  }
  EXPECT_TRUE(mp::active_children().empty());
  EXPECT_LE(count_open_fds(), fds_before + 2);
}

TEST_P(PoolTest, CallbacksRun) {
  mp::Pool pool(options(2));
  std::atomic<int> got{0};
  std::atomic<int> errors{0};
  auto r = pool.apply_async(mp::callbacks([&](int v) { got = v; }), sqr, 7);
  r.wait(30s);
  EXPECT_EQ(got.load(), 49);
  auto e = pool.apply_async(mp::callbacks(nullptr, [&](std::exception_ptr) { ++errors; }),
                            raise_value_error, 5);
  e.wait(30s);
  EXPECT_EQ(errors.load(), 1);
}

TEST_P(PoolTest, CloseThenJoinFinishesWork) {
  mp::Pool pool(options(2));
  auto r = pool.map_async(sqr, std::vector<int64_t>{1, 2, 3});
  pool.close();
  EXPECT_THROW(pool.apply(sqr, 1), mp::ProcessError);
  pool.join();
  EXPECT_EQ(r.get(), (std::vector<int64_t>{1, 4, 9}));
}

TEST_P(PoolTest, JoinWithoutCloseIsAnError) {
  mp::Pool pool(options(1));
  EXPECT_THROW(pool.join(), mp::ProcessError);
}

MP_ALL_START_METHODS(PoolTest);
