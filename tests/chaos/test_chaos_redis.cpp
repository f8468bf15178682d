// Chaos on Redis (issue 14): a redis::Pool with three local workers gets waves of map_async and
// apply_async calls for a few seconds while the run SIGKILLs random workers and restarts its
// redis-server (by pid, alternately SIGTERM and SIGKILL, appendfsync always) on the same port and
// folder. Redis is at-least-once: a task may run more than once. Afterwards every item's outcome
// is its right value or WorkerLost (a task whose worker died max_retries times), none is missing,
// nothing hung (every wait is bounded), and once the run's program has ended no process it
// started is left.
//
// Each start method runs as a separate program (this binary again, filtered to
// RedisChaosRun.Pool, with a redis-server of its own), in its own process group, as a child of a
// subreaper, so that what it leaves behind can be seen. The seed (MULTIPROC_CHAOS_SEED to replay
// another) chooses the victims and the delays, and is printed; timing still varies, so a seed
// replays the same schedule, not the same interleaving.
#include <signal.h>

#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <numeric>
#include <random>
#include <string>
#include <thread>
#include <vector>

#include <multiproc/redis.hpp>

#include "chaos.hpp"
#include "redis_server.hpp"

namespace mpr = multiproc::redis;
using namespace std::chrono_literals;

namespace {

constexpr ChaosProgram kRedisChaosRun{.label = "redis chaos",
                                      .binary = "test_chaos_redis",
                                      .suite = "RedisChaos",
                                      .run_test = "RedisChaosRun.Pool",
                                      .method_var = "MULTIPROC_REDIS_CHAOS_METHOD",
                                      .prefix = "rchaos",
                                      .check_segments = false};
constexpr auto kRunFor = 8s;

// Only the run's program needs a server.
[[maybe_unused]] ::testing::Environment* const kRedis =
    chaos_method(kRedisChaosRun) ? ::testing::AddGlobalTestEnvironment(new RedisEnvironment)
                                 : nullptr;

int64_t work(int64_t x) {
  if (x % 7 == 0) std::this_thread::sleep_for(3ms);
  return 3 * x + 1;
}

struct Batch {
  int64_t first;
  mpr::MapResult<int64_t> result;
};

}  // namespace

// The run itself: only in the program that the RedisChaos tests start.
TEST(RedisChaosRun, Pool) {
  const auto method = chaos_method(kRedisChaosRun);
  if (!method) GTEST_SKIP() << "run by the RedisChaos tests, in a program of its own";
  MP_REQUIRE_REDIS();
  const std::string method_name(mp::to_string(*method));
  std::mt19937_64 rng(announce_chaos_seed(kRedisChaosRun, *method));
  auto between = [&rng](int lo_ms, int hi_ms) {
    return std::chrono::milliseconds(lo_ms + static_cast<int>(rng() % (hi_ms - lo_ms + 1)));
  };

  RedisServer* server = RedisServer::instance();
  ASSERT_TRUE(config_fsync_always(*server));
  int kills = 0, restarts = 0;
  int64_t next = 0;
  std::vector<Batch> batches;
  std::vector<std::pair<int64_t, mpr::AsyncResult<int64_t>>> singles;
  {
    mpr::Pool pool(server->url(), {.processes = 3,
                                   .name = "chaos",
                                   .worker_timeout = 1s,
                                   .max_retries = 3,
                                   .unreachable_timeout = 30s,
                                   .context = mp::get_context(*method)});
    const auto start = std::chrono::steady_clock::now();
    auto next_restart = start + between(1000, 2000);
    while (std::chrono::steady_clock::now() - start < kRunFor) {
      std::vector<int64_t> xs(60);
      std::iota(xs.begin(), xs.end(), next);
      batches.push_back({next, pool.map_async(work, xs, 3)});
      next += 60;
      singles.emplace_back(next, pool.apply_async(work, next));
      ++next;
      std::this_thread::sleep_for(between(50, 250));
      const auto pids = pool.worker_pids();
      if (!pids.empty() && rng() % 2 == 0) {
        ::kill(pids[rng() % pids.size()], SIGKILL);
        ++kills;
      }
      if (std::chrono::steady_clock::now() >= next_restart) {
        // From this (the main) thread: the server's parent-death signal follows the thread.
        ASSERT_TRUE(server->restart(restarts % 2 ? SIGKILL : SIGTERM));
        ASSERT_TRUE(config_fsync_always(*server));
        ++restarts;
        next_restart = std::chrono::steady_clock::now() + between(1500, 2500);
      }
    }
    size_t lost = 0, hung = 0, wrong = 0;
    auto check = [&](int64_t x, const mp::Outcome<int64_t>& o) {
      if (o.ok()) {
        if (o.value() != work(x)) ++wrong;
        return;
      }
      try {
        (void)o.value();
      } catch (const mp::WorkerLost&) {
        ++lost;
      } catch (const std::exception& e) {
        ADD_FAILURE() << "item " << x << ": " << e.what();
      }
    };
    for (auto& b : batches) {
      if (!b.result.wait(60s)) {
        ++hung;
        continue;
      }
      const auto outcomes = b.result.outcomes();
      for (size_t i = 0; i < outcomes.size(); ++i)
        check(b.first + static_cast<int64_t>(i), outcomes[i]);
    }
    for (auto& [x, r] : singles) {
      if (!r.wait(60s)) {
        ++hung;
        continue;
      }
      try {
        check(x, mp::Outcome<int64_t>(r.get()));
      } catch (...) {
        check(x, mp::Outcome<int64_t>(std::current_exception()));
      }
    }
    EXPECT_EQ(hung, 0U) << "calls without an outcome after 60 s";
    EXPECT_EQ(wrong, 0U) << "wrong values";
    std::printf("redis chaos %s: %lld items, %d worker kills, %d server restarts, %zu WorkerLost\n",
                method_name.c_str(), static_cast<long long>(next), kills, restarts, lost);
    pool.close();
    pool.join();
  }
  EXPECT_TRUE(mp::active_children().empty());
}

class RedisChaos : public StartMethodTest {};

TEST_P(RedisChaos, PoolAccountsForEveryItemUnderKillsAndServerRestarts) {
  if (RedisServer::binary().empty())
    GTEST_SKIP() << "redis-server is not installed (./run.sh test installs it)";
  run_chaos_program(kRedisChaosRun, method());
}

MP_ALL_START_METHODS(RedisChaos);
