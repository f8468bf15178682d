// redis::Pool around its tasks: progress bars on map/imap/starmap (as the core Pool draws them),
// the keys a pool leaves in Redis (none after its lifetime; a killed client's expire), workers that
// give up on an unreachable server, and a client killed in the middle of reaping a dead worker.
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cstdint>
#include <set>
#include <string>
#include <thread>
#include <vector>

#include <hiredis/hiredis.h>

#include <multiproc/redis.hpp>

#include "redis_server.hpp"
#include "start_methods.hpp"

namespace mpr = multiproc::redis;
using namespace std::chrono_literals;

namespace {

[[maybe_unused]] ::testing::Environment* const kRedis =
    ::testing::AddGlobalTestEnvironment(new RedisEnvironment);

std::string url() {
  return RedisServer::instance()->url();
}

int64_t inc(int64_t x) {
  return x + 1;
}
int64_t add(int64_t a, int64_t b) {
  return a + b;
}

class RedisPoolLifecycleTest : public StartMethodTest {};

}  // namespace

// ---- progress bars ------------------------------------------------------------------------------

TEST_P(RedisPoolLifecycleTest, ProgressBarReportsOnStderr) {
  MP_REQUIRE_REDIS();
  mpr::Pool pool(url(), {.processes = 2, .name = test_pool_name(), .context = ctx()});
  testing::internal::CaptureStderr();
  auto ys = pool.map(inc, std::vector<int64_t>(1000, 1),
                     mpr::MapOptions{.chunksize = 10, .progress = true});
  std::string err = testing::internal::GetCapturedStderr();
  EXPECT_EQ(ys.size(), 1000u);
  // Not a terminal here: plain lines, the last one complete.
  EXPECT_NE(err.find("map: 100% |####################| 1000/1000"), std::string::npos) << err;

  testing::internal::CaptureStderr();
  size_t n = 0;
  for (auto y : pool.imap(inc, std::views::iota(int64_t{0}, int64_t{300}),
                          mpr::MapOptions{.chunksize = 5, .progress = true})) {
    (void)y;
    ++n;
  }
  err = testing::internal::GetCapturedStderr();
  EXPECT_EQ(n, 300u);
  EXPECT_NE(err.find("imap: 100%"), std::string::npos) << err;
  EXPECT_NE(err.find("300/300"), std::string::npos) << err;

  testing::internal::CaptureStderr();
  std::multiset<int64_t> got;
  for (auto y : pool.imap_unordered(inc, std::views::iota(int64_t{0}, int64_t{40}),
                                    {.chunksize = 3, .progress = true}))
    got.insert(y);
  err = testing::internal::GetCapturedStderr();
  EXPECT_EQ(got.size(), 40u);
  EXPECT_NE(err.find("imap_unordered: 100% |####################| 40/40"), std::string::npos)
      << err;

  testing::internal::CaptureStderr();
  std::vector<std::tuple<int64_t, int64_t>> pairs(50, {1, 2});
  auto sums = pool.starmap(add, pairs, mpr::MapOptions{.chunksize = 4, .progress = true});
  err = testing::internal::GetCapturedStderr();
  EXPECT_EQ(sums, std::vector<int64_t>(50, 3));
  EXPECT_NE(err.find("starmap: 100% |####################| 50/50"), std::string::npos) << err;

  // Without the option, nothing is drawn; the chunk size still goes positionally.
  testing::internal::CaptureStderr();
  EXPECT_EQ(pool.map(inc, std::vector<int64_t>(20, 1), 3), std::vector<int64_t>(20, 2));
  err = testing::internal::GetCapturedStderr();
  EXPECT_EQ(err.find("map:"), std::string::npos) << err;
}

MP_ALL_START_METHODS(RedisPoolLifecycleTest);
