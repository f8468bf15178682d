// redis::Pool's sender thread (apply_async hands its task to it; it pushes what has accumulated in
// one round trip) against a real redis-server started by this binary: submission order is kept;
// close() + join() waits for tasks not yet sent; a server killed while sends are pending (every
// result then succeeds after the reconnect, or fails with a clear error, and none hangs); a server
// that stays down (the results fail with ConnectionError, the pool goes away without waiting on
// it); a pool destroyed right after many apply_async (no crash; every result answered or failed).
#include <signal.h>
#include <unistd.h>

#include <chrono>
#include <cstdint>
#include <filesystem>
#include <fstream>
#include <string>
#include <vector>

#include <multiproc/redis.hpp>

#include "redis_server.hpp"
#include "start_methods.hpp"

namespace mpr = multiproc::redis;
using namespace std::chrono_literals;

namespace {

MP_REDIS_TEST_PROGRAM();

int64_t inc(int64_t x) {
  return x + 1;
}

// Appends x to the file, one line per task: the order in which one worker ran them.
int64_t append(std::string path, int64_t x) {
  std::ofstream(path, std::ios::app) << x << "\n";
  return x;
}

// Whatever happens to the test, the binary's server is up again for the next one.
struct ServerBack {
  ~ServerBack() {
    if (auto* s = RedisServer::instance()) s->restart();
  }
};

// Every result is either its value or a clear error of the pool; none may still be waiting
// `limit` later. Returns how many failed.
size_t settle(std::vector<mpr::AsyncResult<int64_t>>& rs, std::chrono::seconds limit) {
  size_t failed = 0;
  const auto until = std::chrono::steady_clock::now() + limit;
  for (size_t i = 0; i < rs.size(); ++i) {
    const auto left = std::max(until - std::chrono::steady_clock::now(),
                               std::chrono::steady_clock::duration::zero());
    try {
      const int64_t v = rs[i].get(std::chrono::duration<double>(left));
      EXPECT_EQ(v, static_cast<int64_t>(i) + 1);
    } catch (const multiproc::TimeoutError&) {
      ADD_FAILURE() << "result " << i << " still not answered " << limit.count() << " s later";
      return failed + (rs.size() - i);
    } catch (const multiproc::ProcessError& e) {
      ++failed;
      const std::string what = e.what();
      EXPECT_NE(what.find("redis::Pool"), std::string::npos) << what;
    }
  }
  return failed;
}

class RedisPoolSender : public StartMethodTest {};

}  // namespace

TEST_P(RedisPoolSender, TasksOfOneClientAreQueuedInSubmissionOrder) {
  MP_REQUIRE_REDIS();
  const std::string path = std::filesystem::temp_directory_path() /
                           ("mp-redis-order-" + std::to_string(getpid()) + ".txt");
  std::filesystem::remove(path);
  {
    mpr::Pool pool(redis_url(), {.processes = 1, .name = test_pool_name(), .context = ctx()});
    std::vector<mpr::AsyncResult<int64_t>> rs;
    for (int64_t i = 0; i < 500; ++i) rs.push_back(pool.apply_async(append, path, i));
    for (int64_t i = 0; i < 500; ++i) EXPECT_EQ(rs[i].get(60s), i);
  }
  std::ifstream f(path);
  int64_t x = 0, want = 0;
  while (f >> x) EXPECT_EQ(x, want++);
  EXPECT_EQ(want, 500);
  std::filesystem::remove(path);
}

TEST_P(RedisPoolSender, CloseAndJoinWaitForTasksNotSentYet) {
  MP_REQUIRE_REDIS();
  mpr::Pool pool(redis_url(), {.processes = 2, .name = test_pool_name(), .context = ctx()});
  std::vector<mpr::AsyncResult<int64_t>> rs;
  for (int64_t i = 0; i < 3000; ++i) rs.push_back(pool.apply_async(inc, i));
  pool.close();
  pool.join();
  for (size_t i = 0; i < rs.size(); ++i) {
    ASSERT_TRUE(rs[i].ready()) << i;
    EXPECT_EQ(rs[i].get(0s), static_cast<int64_t>(i) + 1);
  }
}

// The server is killed (a crash: what it acknowledged is in its append-only file) while many
// tasks are still to be sent, and is back 300 ms later: the sender reconnects and goes on.
TEST_P(RedisPoolSender, ServerKilledWithSendsPendingResultsSucceedOrFailClearly) {
  MP_REQUIRE_REDIS();
  ServerBack back;
  // A SIGKILLed server with appendfsync everysec may lose a second of pushes it had answered (the
  // README's warning): their results would never come. This test is about the client's side, so
  // the server keeps what it answered.
  ASSERT_TRUE(config_fsync_always(*RedisServer::instance()));
  mpr::Pool pool(redis_url(), {.processes = 2, .name = test_pool_name(), .context = ctx()});
  ASSERT_EQ(pool.apply(inc, 1), 2);
  std::vector<mpr::AsyncResult<int64_t>> rs;
  for (int64_t i = 0; i < 3000; ++i) {
    rs.push_back(pool.apply_async(inc, i));
    if (i == 100) RedisServer::instance()->stop(SIGKILL);
  }
  std::this_thread::sleep_for(300ms);
  ASSERT_TRUE(RedisServer::instance()->start());
  // Back well within unreachable_timeout (10 s): nothing had to fail.
  EXPECT_EQ(settle(rs, 120s), 0U);
  EXPECT_EQ(pool.apply(inc, 41), 42);
}

// The server stays down past unreachable_timeout: apply_async still returns at once, and its
// result fails with a ConnectionError that says what happened; the pool is destroyed without
// waiting on the server.
TEST(RedisPoolSenderDown, ServerDownPastTheTimeoutFailsTheResultsClearly) {
  MP_REQUIRE_REDIS();
  ServerBack back;
  std::vector<mpr::AsyncResult<int64_t>> rs;
  {
    mpr::Pool pool(redis_url(),
                   {.processes = 0, .name = test_pool_name(), .unreachable_timeout = 1s});
    RedisServer::instance()->stop(SIGKILL);
    const auto t0 = std::chrono::steady_clock::now();
    for (int64_t i = 0; i < 100; ++i) rs.push_back(pool.apply_async(inc, i));
    EXPECT_LT(std::chrono::steady_clock::now() - t0, 1s) << "apply_async waited on the server";
    for (auto& r : rs) {
      try {
        (void)r.get(30s);
        ADD_FAILURE() << "a task succeeded with no server";
      } catch (const multiproc::TimeoutError&) {
        ADD_FAILURE() << "a result still waits 30 s after the server went away";
        break;
      } catch (const multiproc::ProcessError& e) {
        // The sender's ConnectionError, or the result thread's BrokenPool: both say why.
        EXPECT_NE(std::string(e.what()).find("cannot reach the server"), std::string::npos)
            << e.what();
      }
    }
  }
}

TEST(RedisPoolSenderDown, APoolDestroyedWhileTheServerIsDownDoesNotWaitForIt) {
  MP_REQUIRE_REDIS();
  ServerBack back;
  std::vector<mpr::AsyncResult<int64_t>> rs;
  std::chrono::steady_clock::time_point t0;
  {
    mpr::Pool pool(redis_url(),
                   {.processes = 0, .name = test_pool_name(), .unreachable_timeout = 30s});
    RedisServer::instance()->stop(SIGKILL);
    for (int64_t i = 0; i < 100; ++i) rs.push_back(pool.apply_async(inc, i));
    t0 = std::chrono::steady_clock::now();
  }
  // Far less than the 30 s the sender would go on retrying.
  EXPECT_LT(std::chrono::steady_clock::now() - t0, 10s);
  for (auto& r : rs) EXPECT_THROW((void)r.get(0s), multiproc::BrokenPool);
}

TEST_P(RedisPoolSender, DestroyedRightAfterManyApplyAsyncEveryResultIsAnsweredOrFails) {
  MP_REQUIRE_REDIS();
  std::vector<mpr::AsyncResult<int64_t>> rs;
  {
    mpr::Pool pool(redis_url(), {.processes = 2, .name = test_pool_name(), .context = ctx()});
    for (int64_t i = 0; i < 5000; ++i) rs.push_back(pool.apply_async(inc, i));
  }
  size_t ok = 0;
  for (size_t i = 0; i < rs.size(); ++i) {
    ASSERT_TRUE(rs[i].ready()) << "result " << i << " left waiting by a pool that is gone";
    try {
      EXPECT_EQ(rs[i].get(0s), static_cast<int64_t>(i) + 1);
      ++ok;
    } catch (const multiproc::BrokenPool& e) {
      EXPECT_NE(std::string(e.what()).find("terminated"), std::string::npos) << e.what();
    }
  }
  RecordProperty("answered_before_terminate", static_cast<int>(ok));
}

MP_ALL_START_METHODS(RedisPoolSender);
