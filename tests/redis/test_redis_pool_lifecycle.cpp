// redis::Pool around its tasks: progress bars on map/imap/starmap (as the core Pool draws them),
// the keys a pool leaves in Redis (none after its lifetime; a killed client's expire), workers that
// give up on an unreachable server, a client killed in the middle of reaping a dead worker, and
// the tasks a terminated pool had queued (never run) or a joined one (all run).
#include <fcntl.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdint>
#include <filesystem>
#include <fstream>
#include <functional>
#include <iterator>
#include <set>
#include <string>
#include <thread>
#include <vector>

#include <hiredis/hiredis.h>

#include <multiproc/redis.hpp>

#include "descendants.hpp"
#include "redis_server.hpp"
#include "start_methods.hpp"

namespace mpr = multiproc::redis;
using namespace std::chrono_literals;

namespace {

MP_REDIS_TEST_PROGRAM();

int64_t inc(int64_t x) {
  return x + 1;
}
int64_t add(int64_t a, int64_t b) {
  return a + b;
}

int64_t nap(int64_t ms) {
  std::this_thread::sleep_for(std::chrono::milliseconds(ms));
  return ms;
}

// Says it runs, then answers a little later.
int64_t answered_late(std::string running) {
  std::ofstream(running) << "1";
  std::this_thread::sleep_for(300ms);
  return 1;
}

// Runs long the first time (its worker is killed meanwhile), returns at once the next: idempotent
// through its marker files, as a task that may run again must be.
int64_t slow_once(std::string dir) {
  if (!std::filesystem::exists(dir + "/started")) {
    std::ofstream(dir + "/started") << "1";
    std::this_thread::sleep_for(60s);
  }
  std::ofstream(dir + "/again") << "1";
  return 1;
}

// Says it runs (a file named by its pid), then waits until the test lets it go (dir/go).
int64_t gate(std::string dir) {
  std::ofstream(dir + "/started-" + std::to_string(getpid())) << "1";
  for (int i = 0; i < 6000 && !std::filesystem::exists(dir + "/go"); ++i)
    std::this_thread::sleep_for(10ms);
  return 0;
}

// A task whose side effect shows that it ran.
int64_t mark(std::string path) {
  std::ofstream(path) << "ran";
  return 1;
}

// A plain connection to a server of the tests, for looking at the keys.
class Peek {
 public:
  explicit Peek(int port = RedisServer::instance()->port()) : c_(redisConnect("127.0.0.1", port)) {
    if (c_ && !c_->err) freeReplyObject(redisCommand(c_, "AUTH %s", RedisServer::kPassword));
  }
  ~Peek() {
    if (c_) redisFree(c_);
  }
  Peek(const Peek&) = delete;
  Peek& operator=(const Peek&) = delete;
  bool ok() const { return c_ && !c_->err; }
  // Every key of the pool `name`, as SCAN finds them.
  std::vector<std::string> keys(const std::string& name) {
    std::vector<std::string> out;
    const std::string match = "mp:pool:{" + name + "}:*";
    std::string cursor = "0";
    do {
      auto* r = static_cast<redisReply*>(redisCommand(c_, "SCAN %s MATCH %b COUNT 1000",
                                                      cursor.c_str(), match.data(), match.size()));
      if (!r) return out;
      cursor.assign(r->element[0]->str, r->element[0]->len);
      for (size_t i = 0; i < r->element[1]->elements; ++i)
        out.emplace_back(r->element[1]->element[i]->str, r->element[1]->element[i]->len);
      freeReplyObject(r);
    } while (cursor != "0");
    return out;
  }
  long long llen(const std::string& key) {
    auto* r = static_cast<redisReply*>(redisCommand(c_, "LLEN %b", key.data(), key.size()));
    const long long n = r ? r->integer : -1;
    if (r) freeReplyObject(r);
    return n;
  }
  long long pttl(const std::string& key) {
    auto* r = static_cast<redisReply*>(redisCommand(c_, "PTTL %b", key.data(), key.size()));
    const long long t = r ? r->integer : -3;
    if (r) freeReplyObject(r);
    return t;
  }

 private:
  redisContext* c_;
};

// What is left of the pool `name` once its clients are gone: at most the worker heartbeat TTL the
// clients ask for ("ttl"), and that one with an expiry.
std::vector<std::string> lasting_keys(Peek& peek, const std::string& name) {
  std::vector<std::string> out;
  for (auto& k : peek.keys(name))
    if (!(k == "mp:pool:{" + name + "}:ttl" && peek.pttl(k) > 0)) out.push_back(k);
  return out;
}

// A worker of the pool `name` in a forked child of this (single-threaded) test: stopped with
// SIGTERM, or killed, by the test.
struct ForkedWorker {
  pid_t pid;
  explicit ForkedWorker(const std::string& name) {
    pid = fork();
    if (pid == 0) {
      try {
        mpr::run_worker(redis_url(), name);
      } catch (...) {
        _exit(1);
      }
      _exit(0);
    }
  }
  void stop(int sig = SIGTERM) {
    if (pid <= 0) return;
    kill(pid, sig);
    int status;
    waitpid(pid, &status, 0);
    pid = -1;
  }
  ~ForkedWorker() { stop(SIGKILL); }
};

// Files named started-* in dir (a gate task running).
size_t gates_started(const std::string& dir) {
  size_t n = 0;
  for (const auto& e : std::filesystem::directory_iterator(dir))
    n += e.path().filename().string().rfind("started-", 0) == 0 ? 1 : 0;
  return n;
}

// Tasks of dir that ran (files named task-*).
std::vector<std::string> tasks_run(const std::string& dir) {
  std::vector<std::string> out;
  for (const auto& e : std::filesystem::directory_iterator(dir))
    if (e.path().filename().string().rfind("task-", 0) == 0)
      out.push_back(e.path().filename().string());
  std::sort(out.begin(), out.end());
  return out;
}

class RedisPoolLifecycleTest : public StartMethodTest {};

}  // namespace

// ---- progress bars ------------------------------------------------------------------------------

// Each call with MapOptions::progress, and the last line its bar must draw on stderr (not a
// terminal here: plain lines, the last one complete).
TEST_P(RedisPoolLifecycleTest, ProgressBarsOfMapImapAndStarmapReportOnStderr) {
  MP_REQUIRE_REDIS();
  mpr::Pool pool(redis_url(), {.processes = 2, .name = test_pool_name(), .context = ctx()});
  const auto bar = mpr::MapOptions{.chunksize = 7, .progress = true};
  const auto sum = [](auto&& results) {
    int64_t total = 0;
    for (int64_t y : results) total += y;
    return total;
  };
  struct Case {
    const char* line;
    std::function<int64_t()> run;  // the sum of the results
    int64_t expected;
  };
  const std::vector<Case> cases = {
      {"map: 100% |####################| 1000/1000",
       [&] { return sum(pool.map(inc, std::vector<int64_t>(1000, 1), bar)); }, 2000},
      {"imap: 100% |####################| 300/300",
       [&] { return sum(pool.imap(inc, std::views::iota(int64_t{0}, int64_t{300}), bar)); },
       300 * 301 / 2},
      {"imap_unordered: 100% |####################| 40/40",
       [&] {
         return sum(pool.imap_unordered(inc, std::views::iota(int64_t{0}, int64_t{40}),
                                        {.chunksize = 3, .progress = true}));
       },
       40 * 41 / 2},
      {"starmap: 100% |####################| 50/50",
       [&] {
         return sum(pool.starmap(add, std::vector<std::tuple<int64_t, int64_t>>(50, {1, 2}), bar));
       },
       150},
  };
  for (const auto& c : cases) {
    testing::internal::CaptureStderr();
    const int64_t got = c.run();
    const std::string err = testing::internal::GetCapturedStderr();
    EXPECT_EQ(got, c.expected) << c.line;
    EXPECT_NE(err.find(c.line), std::string::npos) << err;
  }
  // Without the option nothing is drawn; a chunk size still goes as a plain number.
  testing::internal::CaptureStderr();
  EXPECT_EQ(pool.map(inc, std::vector<int64_t>(20, 1), 3), std::vector<int64_t>(20, 2));
  const std::string err = testing::internal::GetCapturedStderr();
  EXPECT_EQ(err.find("map:"), std::string::npos) << err;
}

// ---- the keys a pool leaves in Redis -----------------------------------------------------------

TEST_P(RedisPoolLifecycleTest, NoKeyOutlivesAPoolJoinedTerminatedOrDestroyed) {
  MP_REQUIRE_REDIS();
  Peek peek;
  ASSERT_TRUE(peek.ok());
  const std::string name = test_pool_name();
  {
    mpr::Pool pool(redis_url(), {.processes = 2, .name = name, .context = ctx()});
    EXPECT_EQ(pool.map(inc, std::vector<int64_t>(100, 1), 3), std::vector<int64_t>(100, 2));
    EXPECT_FALSE(lasting_keys(peek, name).empty());  // its result list and its liveness key
    pool.close();
    pool.join();
    EXPECT_EQ(lasting_keys(peek, name), std::vector<std::string>{}) << "after join()";
  }
  {
    mpr::Pool pool(redis_url(), {.processes = 1, .name = name, .context = ctx()});
    EXPECT_EQ(pool.apply(inc, 1), 2);
    pool.terminate();
    EXPECT_EQ(lasting_keys(peek, name), std::vector<std::string>{}) << "after terminate()";
  }
  {
    // Destroyed with tasks still running: its workers are killed holding them.
    mpr::Pool pool(redis_url(), {.processes = 2, .name = name, .context = ctx()});
    std::vector<mpr::AsyncResult<int64_t>> rs;
    for (int i = 0; i < 2; ++i) rs.push_back(pool.apply_async(nap, 3000));
    // Both taken (tasks still queued stay in the pool name's shared queue, for its workers).
    EXPECT_TRUE(eventually([&] {
      auto ks = peek.keys(name);
      return std::count(ks.begin(), ks.end(), pool_tasks_key(name)) == 0 &&
             std::count_if(ks.begin(), ks.end(), [](const std::string& k) {
               return k.find("}:proc:") != std::string::npos;
             }) == 2;
    }));
  }
  EXPECT_EQ(lasting_keys(peek, name), std::vector<std::string>{}) << "after the destructor";
}

TEST(RedisPoolLifecycle, TheKeysOfAKilledClientExpire) {
  MP_REQUIRE_REDIS();
  Peek peek;
  ASSERT_TRUE(peek.ok());
  TempDir dir;
  const std::string name = test_pool_name(), running = dir.path + "/running";
  ForkedWorker worker(name);
  int ready[2];
  ASSERT_EQ(pipe(ready), 0);
  const pid_t client = fork();
  if (client == 0) {
    mpr::Pool pool(redis_url(), {.processes = 0, .name = name, .client_timeout = 1s});
    const bool ok = pool.apply_async(inc, 1).get(30s) == 2;
    auto late = pool.apply_async(answered_late, running);  // answered after this client is gone
    while (!std::filesystem::exists(running)) std::this_thread::sleep_for(5ms);
    if (write(ready[1], ok ? "y" : "n", 1) != 1) _exit(1);
    pause();
    _exit(0);
  }
  close(ready[1]);
  char answer = 0;
  ASSERT_EQ(read(ready[0], &answer, 1), 1);
  close(ready[0]);
  EXPECT_EQ(answer, 'y');
  kill(client, SIGKILL);
  int status;
  waitpid(client, &status, 0);
  // The worker answers the late task (its processing list empties), then stops.
  EXPECT_TRUE(eventually([&] {
    for (auto& k : peek.keys(name))
      if (k.find("}:proc:") != std::string::npos || k.find("}:tasks") != std::string::npos)
        return false;
    return true;
  }));
  worker.stop();
  // Nothing renews anything now.
  EXPECT_TRUE(eventually([&] { return peek.keys(name).empty(); }))
      << "left: " << testing::PrintToString(peek.keys(name));
}

// ---- the tasks a pool leaves queued
// --------------------------------------------------------------

// Python's Pool.terminate(): a task not started yet never runs. Every worker busy (a local one,
// killed by terminate(), and an external one that lives on), tasks with a side effect queued
// behind them on the server; once terminate() has returned, the external worker finishes its task
// and must drop those, not run them. A sentinel from another pool, queued after them, tells when
// the worker has gone past them (one worker: it takes the shared queue in order).
TEST_P(RedisPoolLifecycleTest, TasksQueuedBeforeTerminateNeverRun) {
  MP_REQUIRE_REDIS();
  Peek peek;
  ASSERT_TRUE(peek.ok());
  TempDir dir;
  const std::string name = test_pool_name(), tasks = pool_tasks_key(name);
  ForkedWorker worker(name);
  {
    mpr::Pool pool(redis_url(), {.processes = 1, .name = name, .context = ctx()});
    std::vector<mpr::AsyncResult<int64_t>> rs;
    for (int i = 0; i < 2; ++i) rs.push_back(pool.apply_async(gate, dir.path));
    ASSERT_TRUE(eventually([&] { return gates_started(dir.path) == 2; }));
    for (int i = 0; i < 10; ++i)
      rs.push_back(pool.apply_async(mark, dir.path + "/task-" + std::to_string(i)));
    ASSERT_TRUE(eventually([&] { return peek.llen(tasks) == 10; })) << "not all on the server";
    pool.terminate();
    for (auto& r : rs) EXPECT_THROW((void)r.get(30s), multiproc::BrokenPool);
  }
  std::ofstream(dir.path + "/go") << "1";
  mpr::Pool other(redis_url(), {.processes = 0, .name = name});
  EXPECT_EQ(other.apply_async(mark, dir.path + "/sentinel").get(60s), 1);
  EXPECT_EQ(tasks_run(dir.path), std::vector<std::string>{});
  EXPECT_EQ(peek.llen(tasks), 0);
}

// The same with no worker at all while the pool lives: one started after terminate() takes its
// first tasks by the blocking path, and drops those as well.
TEST(RedisPoolLifecycle, AWorkerStartedAfterTerminateDropsTheQueuedTasks) {
  MP_REQUIRE_REDIS();
  Peek peek;
  ASSERT_TRUE(peek.ok());
  TempDir dir;
  const std::string name = test_pool_name(), tasks = pool_tasks_key(name);
  {
    mpr::Pool pool(redis_url(), {.processes = 0, .name = name});
    std::vector<mpr::AsyncResult<int64_t>> rs;
    for (int i = 0; i < 10; ++i)
      rs.push_back(pool.apply_async(mark, dir.path + "/task-" + std::to_string(i)));
    ASSERT_TRUE(eventually([&] { return peek.llen(tasks) == 10; })) << "not all on the server";
  }
  ForkedWorker worker(name);
  mpr::Pool other(redis_url(), {.processes = 0, .name = name});
  EXPECT_EQ(other.apply_async(mark, dir.path + "/sentinel").get(60s), 1);
  EXPECT_EQ(tasks_run(dir.path), std::vector<std::string>{});
}

// close() + join() runs everything queued, however long it waits: a client that is only quiet
// (here for longer than its client_timeout, which its renewals keep off) loses no task.
TEST_P(RedisPoolLifecycleTest, TasksQueuedBeforeCloseAllRunThroughJoin) {
  MP_REQUIRE_REDIS();
  Peek peek;
  ASSERT_TRUE(peek.ok());
  TempDir dir;
  const std::string name = test_pool_name(), tasks = pool_tasks_key(name);
  ForkedWorker worker(name);
  mpr::Pool pool(redis_url(),
                 {.processes = 1, .name = name, .context = ctx(), .client_timeout = 0.5s});
  std::vector<mpr::AsyncResult<int64_t>> rs;
  for (int i = 0; i < 2; ++i) rs.push_back(pool.apply_async(gate, dir.path));
  ASSERT_TRUE(eventually([&] { return gates_started(dir.path) == 2; }));
  std::vector<std::string> expected;
  for (int i = 0; i < 10; ++i) {
    expected.push_back("task-" + std::to_string(i));
    rs.push_back(pool.apply_async(mark, dir.path + "/" + expected.back()));
  }
  std::sort(expected.begin(), expected.end());
  ASSERT_TRUE(eventually([&] { return peek.llen(tasks) == 10; })) << "not all on the server";
  pool.close();
  std::this_thread::sleep_for(1500ms);  // three client_timeouts
  std::ofstream(dir.path + "/go") << "1";
  pool.join();
  for (auto& r : rs) EXPECT_NO_THROW((void)r.get(30s));
  EXPECT_EQ(tasks_run(dir.path), expected);
}

// ---- workers that give up -----------------------------------------------------------------------

TEST(RedisPoolLifecycle, AWorkerGivesUpOnAnUnreachableServerWithAnErrorStatus) {
  MP_REQUIRE_REDIS();
  TempDir dir;
  RedisServer server;
  ASSERT_TRUE(server.start());
  const std::string name = test_pool_name(), log = dir.path + "/worker.log";
  const std::string exe = std::filesystem::read_symlink("/proc/self/exe");
  const pid_t pid = fork();
  if (pid == 0) {
    int fd = open(log.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0600);
    dup2(fd, 2);
    const std::string u = server.url();
    execl(exe.c_str(), exe.c_str(), "--multiproc-worker", u.c_str(), "--pool", name.c_str(),
          "--unreachable-timeout", "0.5", static_cast<char*>(nullptr));
    _exit(127);
  }
  {
    Peek peek(server.port());
    ASSERT_TRUE(peek.ok());
    EXPECT_TRUE(eventually([&] { return !peek.keys(name).empty(); }));  // it has started
  }
  server.stop(SIGKILL);
  int status = 0;
  // Far less than the 10 s it would wait by default.
  const bool exited = eventually([&] { return waitpid(pid, &status, WNOHANG) == pid; }, 8s);
  if (!exited) {
    kill(pid, SIGKILL);
    waitpid(pid, &status, 0);
  }
  EXPECT_TRUE(exited) << "the worker still waits for the server";
  EXPECT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) != 0) << "status " << status;
  std::ifstream f(log);
  const std::string said((std::istreambuf_iterator<char>(f)), std::istreambuf_iterator<char>());
  EXPECT_NE(said.find("giving up"), std::string::npos) << said;
}

TEST_P(RedisPoolLifecycleTest, LocalWorkersGiveUpAfterTheUnreachableTimeout) {
  MP_REQUIRE_REDIS();
  RedisServer server;
  ASSERT_TRUE(server.start());
  testing::internal::CaptureStderr();
  {
    mpr::Pool pool(
        server.url(),
        {.processes = 1, .name = test_pool_name(), .unreachable_timeout = 0.5s, .context = ctx()});
    EXPECT_EQ(pool.apply(inc, 1), 2);
    const pid_t worker = pool.worker_pids().at(0);
    server.stop(SIGKILL);
    EXPECT_TRUE(eventually([&] { return !exists_unreaped(worker); }, 8s))
        << "the local worker still waits for the server";
  }
  const std::string err = testing::internal::GetCapturedStderr();
  // (The forkserver's children write to the forkserver's stderr, not captured here.)
  if (method() != mp::StartMethod::forkserver) {
    EXPECT_NE(err.find("giving up"), std::string::npos) << err;
  }
}

// ---- a client killed while it reaps a dead worker
// ------------------------------------------------

TEST_P(RedisPoolLifecycleTest, TasksHeldByAClientKilledMidReapRunAgain) {
  MP_REQUIRE_REDIS();
  TempDir dir;
  const std::string name = test_pool_name(), paused = dir.path + "/paused";
  ForkedWorker worker(name);
  const pid_t client = fork();
  if (client == 0) {
    // This client's reaper stops (until killed) once it holds the dead worker's tasks.
    setenv("MULTIPROC_REDIS_TEST_REAP_PAUSE", paused.c_str(), 1);
    mpr::Pool pool(redis_url(), {.processes = 0, .name = name, .worker_timeout = 0.5s});
    auto r = pool.apply_async(slow_once, dir.path);
    (void)r.wait(60s);
    _exit(0);
  }
  EXPECT_TRUE(eventually([&] { return std::filesystem::exists(dir.path + "/started"); }));
  worker.stop(SIGKILL);  // dies holding the task
  EXPECT_TRUE(eventually([&] { return std::filesystem::exists(paused); }));
  kill(client, SIGKILL);  // dies holding the task it took from the dead worker
  int status;
  waitpid(client, &status, 0);
  // The next client's reaper finds the task and hands it out again.
  mpr::Pool pool(redis_url(),
                 {.processes = 1, .name = name, .worker_timeout = 0.5s, .context = ctx()});
  EXPECT_TRUE(eventually([&] { return std::filesystem::exists(dir.path + "/again"); }, 30s))
      << "the task held by the killed client was lost";
}

MP_ALL_START_METHODS(RedisPoolLifecycleTest);
