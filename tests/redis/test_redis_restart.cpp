// redis::Pool while its Redis server goes away: stopped by pid (SIGTERM: it writes its
// append-only file; SIGKILL with appendfsync always: a crash that loses nothing it answered) and
// started again on the same port and folder with a map and single tasks in flight. Every result
// arrives (a task may run twice: the pool is at-least-once), workers and client reconnect; and a
// server that stays down past unreachable_timeout fails the pending results with BrokenPool
// instead of a hang. A binary of its own: restarting the server would disturb other tests.
#include <signal.h>
#include <unistd.h>

#include <chrono>
#include <string>
#include <thread>
#include <vector>

#include <multiproc/redis.hpp>

#include "redis_server.hpp"
#include "start_methods.hpp"

namespace mpr = multiproc::redis;
using namespace std::chrono_literals;

namespace {

MP_REDIS_TEST_PROGRAM();

// Slow enough that the batch is still running when the server goes away.
int slow_square(int x) {
  std::this_thread::sleep_for(10ms);
  return x * x;
}

// A SIGKILLed server keeps what it answered only when it syncs its file before every answer: the
// running server is told so, and its restarts are started so.
void fsync_always() {
  RedisServer::instance()->fsync_always();
  ASSERT_TRUE(config_fsync_always(*RedisServer::instance()));
}

class RedisRestartTest : public StartMethodTest {
 protected:
  // A batch in flight while the server is stopped with `sig` and started again.
  void run_through_restart(int sig) {
    MP_REQUIRE_REDIS();
    if (sig == SIGKILL) fsync_always();
    mpr::Pool pool(redis_url(), {.processes = 2,
                                 .name = test_pool_name(),
                                 .worker_timeout = 2s,
                                 .unreachable_timeout = 30s,
                                 .context = ctx()});
    ASSERT_EQ(pool.apply_async(slow_square, 2).get(60s), 4);  // workers are up
    std::vector<int> xs(120);
    for (int i = 0; i < 120; ++i) xs[i] = i;
    auto m = pool.map_async(slow_square, xs, 2);
    std::vector<mpr::AsyncResult<int>> singles;
    for (int i = 0; i < 10; ++i) singles.push_back(pool.apply_async(slow_square, 1000 + i));
    std::this_thread::sleep_for(100ms);
    ASSERT_FALSE(m.ready()) << "the batch ended before the restart: make the tasks slower";
    // Three times: each is a chance to lose a reply in flight (a task moved to a worker's list
    // or a result taken by the client, the answer never sent).
    for (int k = 0; k < 3; ++k) {
      ASSERT_TRUE(RedisServer::instance()->restart(sig));
      // Submitting while the clients may still be reconnecting.
      for (int i = 0; i < 5; ++i)
        singles.push_back(pool.apply_async(slow_square, 1000 + static_cast<int>(singles.size())));
      std::this_thread::sleep_for(100ms);
    }
    auto ys = m.get(90s);
    ASSERT_EQ(ys.size(), xs.size());
    for (int i = 0; i < 120; ++i) EXPECT_EQ(ys[i], i * i) << i;
    for (size_t i = 0; i < singles.size(); ++i) {
      const int x = 1000 + static_cast<int>(i);
      EXPECT_EQ(singles[i].get(60s), x * x) << i;
    }
    EXPECT_EQ(pool.map(slow_square, std::vector<int>{5, 6}), (std::vector<int>{25, 36}));
    pool.close();
    pool.join();
  }
};

}  // namespace

TEST_P(RedisRestartTest, BatchInFlightSurvivesAStoppedServer) {
  run_through_restart(SIGTERM);
}

TEST_P(RedisRestartTest, BatchInFlightSurvivesAKilledServer) {
  run_through_restart(SIGKILL);
}

// A server that stays down: the pending results fail with BrokenPool naming the server, after
// about unreachable_timeout, and the pool refuses new work with a clear error.
TEST(RedisRestart, ServerDownPastTheTimeoutIsAnErrorNotAHang) {
  MP_REQUIRE_REDIS();
  auto* server = RedisServer::instance();
  mpr::Pool pool(redis_url(),
                 {.processes = 1, .name = test_pool_name(), .unreachable_timeout = 1s});
  ASSERT_EQ(pool.apply_async(slow_square, 3).get(60s), 9);
  std::vector<int> xs(200, 1);
  auto m = pool.map_async(slow_square, xs, 1);
  server->stop(SIGTERM);
  const auto t0 = std::chrono::steady_clock::now();
  try {
    (void)m.get(60s);
    ADD_FAILURE() << "the batch finished without a server";
  } catch (const multiproc::BrokenPool& e) {
    EXPECT_NE(std::string(e.what()).find("cannot reach"), std::string::npos) << e.what();
  } catch (const multiproc::TimeoutError&) {
    ADD_FAILURE() << "hung past 60 s with the server down";
  }
  EXPECT_LT(std::chrono::steady_clock::now() - t0, 30s);
  EXPECT_THROW((void)pool.apply_async(slow_square, 1), multiproc::ProcessError);
  pool.terminate();
  ASSERT_TRUE(server->start());  // for the tests that follow
}

MP_ALL_START_METHODS(RedisRestartTest);
