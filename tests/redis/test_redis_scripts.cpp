// The Redis backend's Lua scripts travel by their SHA1 (EVALSHA), not as text on every call, and
// a server that has lost them (SCRIPT FLUSH, a restart) is given them again on the way: the
// server's own counters (INFO commandstats, errorstats) say which commands ran and that the
// NOSCRIPT path was taken. A binary of its own: its tests reset the server's counters, flush its
// scripts and restart it.
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

int square(int x) {
  return x * x;
}

std::string info(const std::string& section) {
  return admin_command(*RedisServer::instance(), {"INFO", section});
}

// Calls of a command since the last CONFIG RESETSTAT (0 when never called).
long long calls(const std::string& command) {
  return std::max(0LL, info_number(info("commandstats"), "cmdstat_" + command, "calls"));
}

long long noscript_errors() {
  return std::max(0LL, info_number(info("errorstats"), "errorstat_NOSCRIPT", "count"));
}

void reset_stats() {
  ASSERT_EQ(admin_command(*RedisServer::instance(), {"CONFIG", "RESETSTAT"}), "OK");
}

void flush_scripts() {
  ASSERT_EQ(admin_command(*RedisServer::instance(), {"SCRIPT", "FLUSH"}), "OK");
}

std::vector<int> ints(int n) {
  std::vector<int> xs(n);
  for (int i = 0; i < n; ++i) xs[i] = i;
  return xs;
}

std::vector<int> squares(int n) {
  std::vector<int> ys(n);
  for (int i = 0; i < n; ++i) ys[i] = i * i;
  return ys;
}

class RedisScriptsTest : public StartMethodTest {
 protected:
  mpr::PoolOptions options() const {
    return {.processes = 2, .name = test_pool_name(), .context = ctx()};
  }
};

}  // namespace

// Every script call of a pool at work (the workers' take and finish, the client's result reads)
// is an EVALSHA: the text goes to the server only when it lacks the script. It used to send each
// script's text with every call (EVAL): the server hashed the text each time.
TEST_P(RedisScriptsTest, PoolSendsItsScriptsByTheirSha) {
  MP_REQUIRE_REDIS();
  mpr::Pool pool(redis_url(), options());
  ASSERT_EQ(pool.apply_async(square, 3).get(60s), 9);  // workers up
  reset_stats();
  EXPECT_EQ(pool.map(square, ints(40), 1), squares(40));
  std::vector<mpr::AsyncResult<int>> rs;
  for (int i = 0; i < 10; ++i) rs.push_back(pool.apply_async(square, i));
  for (int i = 0; i < 10; ++i) EXPECT_EQ(rs[i].get(60s), i * i);
  EXPECT_GE(calls("evalsha"), 50) << info("commandstats");
  EXPECT_EQ(calls("eval"), 0) << info("commandstats");
  pool.close();
  pool.join();
}

// SCRIPT FLUSH while the pool is idle (its workers waiting in the blocking move, the take script
// pipelined behind it: there NOSCRIPT is the second reply of a pipeline) and again while tasks
// are in flight: every call still gets its answer.
TEST_P(RedisScriptsTest, PoolWorksAcrossScriptFlush) {
  MP_REQUIRE_REDIS();
  mpr::Pool pool(redis_url(), options());
  ASSERT_EQ(pool.apply_async(square, 3).get(60s), 9);
  reset_stats();
  flush_scripts();
  // An idle worker's next take (every 0.2 s) meets the empty cache.
  const auto until = std::chrono::steady_clock::now() + 20s;
  while (noscript_errors() == 0 && std::chrono::steady_clock::now() < until)
    std::this_thread::sleep_for(10ms);
  EXPECT_GT(noscript_errors(), 0) << info("errorstats");
  EXPECT_EQ(pool.map(square, ints(30), 1), squares(30));
  auto m = pool.map_async(square, ints(200), 1);
  flush_scripts();
  std::vector<mpr::AsyncResult<int>> rs;
  for (int i = 0; i < 10; ++i) {
    rs.push_back(pool.apply_async(square, i));
    flush_scripts();
  }
  EXPECT_EQ(m.get(60s), squares(200));
  for (int i = 0; i < 10; ++i) EXPECT_EQ(rs[i].get(60s), i * i);
  pool.close();
  pool.join();
}

// A restarted server has no scripts: the pool's calls load them again.
TEST_P(RedisScriptsTest, PoolWorksAcrossServerRestart) {
  MP_REQUIRE_REDIS();
  mpr::Pool pool(redis_url(), options());
  ASSERT_EQ(pool.apply_async(square, 3).get(60s), 9);
  ASSERT_TRUE(RedisServer::instance()->restart());
  EXPECT_EQ(pool.map(square, ints(30), 1), squares(30));
  EXPECT_EQ(pool.apply_async(square, 7).get(60s), 49);
  EXPECT_GT(noscript_errors(), 0) << info("errorstats");
  // The text goes once per script the server lacks, not per call.
  EXPECT_GT(calls("evalsha"), 2 * calls("eval")) << info("commandstats");
  pool.close();
  pool.join();
}

// The queue's scripts (a bounded queue's put, the reliable get, task_done, shutdown) after a
// SCRIPT FLUSH before each call.
TEST(RedisScripts, QueueWorksAcrossScriptFlush) {
  MP_REQUIRE_REDIS();
  mpr::JoinableQueue<int> q(redis_url(), qname(), 100, {.reliable = true});
  reset_stats();
  for (int i = 0; i < 5; ++i) {
    flush_scripts();
    q.put(i);
  }
  for (int i = 0; i < 5; ++i) {
    flush_scripts();
    EXPECT_EQ(q.get(10s), i);
    flush_scripts();
    q.task_done();
  }
  EXPECT_TRUE(q.join(10s));
  flush_scripts();
  q.shutdown();
  EXPECT_TRUE(q.is_shutdown());
  EXPECT_GE(noscript_errors(), 10) << info("errorstats");
  q.unlink();
}

MP_ALL_START_METHODS(RedisScriptsTest);
