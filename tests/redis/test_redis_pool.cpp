// redis::Pool against a real redis-server started by this binary (tests/support/redis_server.hpp):
// the Pool API with local workers under fork, spawn and forkserver; workers started as separate
// programs (`--multiproc-worker`); a worker killed mid-task (the task runs again, then
// WorkerLost); messages without the auth key, malformed ones, tasks of another build and tasks
// whose invoker is not an entry point of the program.
#include <fcntl.h>
#include <signal.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <set>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include <hiredis/hiredis.h>

#include <multiproc/redis.hpp>

#include "lossy_proxy.hpp"
#include "redis_server.hpp"
#include "start_methods.hpp"

namespace mpr = multiproc::redis;
using namespace std::chrono_literals;

namespace {

MP_REDIS_TEST_PROGRAM();

int square(int x) {
  return x * x;
}
int slowish_square(int x) {
  std::this_thread::sleep_for(std::chrono::milliseconds(2));
  return x * x;
}

int add(int a, int b) {
  return a + b;
}
int fails(int x) {
  if (x == 3) throw std::invalid_argument("three is bad");
  return x;
}
// Idempotent, as a task that may run twice must be: the marker says whether it ran before.
int die_first_time(std::string marker) {
  if (!std::filesystem::exists(marker)) {
    std::ofstream(marker) << "ran";
    raise(SIGKILL);
  }
  return 42;
}
int always_die(int) {
  raise(SIGKILL);
  return 0;
}
void touch(std::string path) {
  std::ofstream(path) << "ran";
}

// An external worker: this very program, started as `--multiproc-worker URL --pool NAME`.
struct ExternalWorker {
  pid_t pid = -1;
  std::string log;
  ExternalWorker(const std::string& name, const std::string& log_path, unsigned processes = 1,
                 const std::string& build_id = {}, const std::string& worker_url = redis_url())
      : log(log_path) {
    const std::string exe = std::filesystem::read_symlink("/proc/self/exe");
    pid = fork();
    if (pid == 0) {
      int fd = open(log_path.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0600);
      dup2(fd, 2);
      if (!build_id.empty()) setenv("MULTIPROC_REDIS_BUILD_ID", build_id.c_str(), 1);
      const std::string n = std::to_string(processes), u = worker_url;
      execl(exe.c_str(), exe.c_str(), "--multiproc-worker", u.c_str(), "--pool", name.c_str(),
            "--processes", n.c_str(), static_cast<char*>(nullptr));
      _exit(127);
    }
  }
  ~ExternalWorker() {
    if (pid > 0) {
      kill(pid, SIGTERM);
      int status;
      waitpid(pid, &status, 0);
    }
  }
  std::string output() const {
    std::ifstream f(log);
    std::stringstream ss;
    ss << f.rdbuf();
    return ss.str();
  }
  // Waits (generously) for `text` in the worker's stderr.
  bool says(const std::string& text) const {
    for (int i = 0; i < 200; ++i) {
      if (output().find(text) != std::string::npos) return true;
      std::this_thread::sleep_for(50ms);
    }
    return false;
  }
};

// `command` (LPUSH, SET) of key and value on the test's server.
void run_command(const char* command, const std::string& key, const std::string& value) {
  redisContext* c = redisConnect("127.0.0.1", RedisServer::instance()->port());
  ASSERT_TRUE(c && !c->err);
  freeReplyObject(redisCommand(c, "AUTH %s", RedisServer::kPassword));
  const std::string format = std::string(command) + " %b %b";
  freeReplyObject(
      redisCommand(c, format.c_str(), key.data(), key.size(), value.data(), value.size()));
  redisFree(c);
}
void lpush(const std::string& key, const std::string& value) {
  run_command("LPUSH", key, value);
}

class RedisPoolTest : public StartMethodTest {};

}  // namespace

// ---- the Pool API with local workers ------------------------------------------------------------

TEST_P(RedisPoolTest, ApplyMapImapStarmapAndCallbacks) {
  MP_REQUIRE_REDIS();
  mpr::Pool pool(redis_url(), {.processes = 2, .name = test_pool_name(), .context = ctx()});
  EXPECT_EQ(pool.apply(square, 7), 49);
  EXPECT_EQ(pool.apply_async(add, 2, 3).get(30s), 5);
  EXPECT_EQ(pool.apply([](int a) { return a + 1; }, 1), 2);

  std::vector<int> xs(100);
  for (int i = 0; i < 100; ++i) xs[i] = i;
  auto ys = pool.map(square, xs);
  ASSERT_EQ(ys.size(), 100U);
  for (int i = 0; i < 100; ++i) EXPECT_EQ(ys[i], i * i);
  EXPECT_EQ(pool.map(square, xs, 7), ys);
  EXPECT_TRUE(pool.map(square, std::vector<int>{}).empty());

  std::vector<int> got;
  for (int y : pool.imap(square, std::views::iota(0, 20), 3)) got.push_back(y);
  ASSERT_EQ(got.size(), 20U);
  for (int i = 0; i < 20; ++i) EXPECT_EQ(got[i], i * i);
  std::multiset<int> unordered;
  for (int y : pool.imap_unordered(square, std::views::iota(0, 20))) unordered.insert(y);
  EXPECT_EQ(unordered, std::multiset<int>(got.begin(), got.end()));

  std::vector<std::tuple<int, int>> pairs{{1, 2}, {3, 4}, {5, 6}};
  EXPECT_EQ(pool.starmap(add, pairs), (std::vector<int>{3, 7, 11}));

  std::atomic<int> seen{0};
  auto on_value = [&seen](int v) { seen = v; };
  auto r = pool.apply_async(mpr::callbacks(on_value), square, 9);
  EXPECT_EQ(r.get(30s), 81);
  EXPECT_EQ(seen.load(), 81);
  std::atomic<bool> errored{false};
  auto on_error = [&errored](std::exception_ptr) { errored = true; };
  auto m = pool.map_async(mpr::callbacks(nullptr, on_error), fails, xs, 10);
  EXPECT_TRUE(m.wait(30s));
  EXPECT_TRUE(errored.load());
  EXPECT_EQ(m.failures(), 1U);
  auto outcomes = m.outcomes();
  EXPECT_TRUE(outcomes[2].ok());
  EXPECT_FALSE(outcomes[3].ok());

  // As in the core pool, a standard exception comes back as its own type, with the remote details.
  try {
    pool.apply(fails, 3);
    FAIL() << "no std::invalid_argument";
  } catch (const std::invalid_argument& e) {
    auto* info = dynamic_cast<const multiproc::RemoteErrorInfo*>(&e);
    ASSERT_NE(info, nullptr);
    EXPECT_EQ(info->type_name(), "std::invalid_argument");
    EXPECT_EQ(info->message(), "three is bad");
  }
  pool.close();
  pool.join();
  EXPECT_THROW((void)pool.apply_async(square, 1), multiproc::ProcessError);
}

TEST_P(RedisPoolTest, LocalWorkersUseTheKeyOfTheOptions) {
  MP_REQUIRE_REDIS();
  mpr::Pool pool(redis_url(), {.processes = 1,
                               .name = test_pool_name(),
                               .authkey = std::string(32, 'k'),
                               .context = ctx()});
  EXPECT_EQ(pool.apply_async(square, 6).get(30s), 36);
}

// ---- workers as separate programs ---------------------------------------------------------------

TEST(RedisPool, ExternalWorkersRunTheTasks) {
  MP_REQUIRE_REDIS();
  TempDir dir;
  const std::string name = test_pool_name();
  ExternalWorker worker(name, dir.path + "/worker.log", 2);
  mpr::Pool pool(redis_url(), {.processes = 0, .name = name});
  std::vector<int> xs(50);
  for (int i = 0; i < 50; ++i) xs[i] = i;
  auto ys = pool.map_async(square, xs, 5).get(60s);
  for (int i = 0; i < 50; ++i) EXPECT_EQ(ys[i], i * i);
  EXPECT_EQ(pool.apply_async(add, 20, 22).get(30s), 42);
}

// ---- a worker lost mid-task ---------------------------------------------------------------------

TEST_P(RedisPoolTest, TaskOfAKilledWorkerRunsAgainThenWorkerLost) {
  MP_REQUIRE_REDIS();
  TempDir dir;
  mpr::Pool pool(redis_url(), {.processes = 2,
                               .name = test_pool_name(),
                               .worker_timeout = 0.5s,
                               .max_retries = 2,
                               .context = ctx()});
  EXPECT_EQ(pool.apply_async(die_first_time, dir.path + "/marker").get(60s), 42);
  try {
    (void)pool.apply_async(always_die, 1).get(60s);
    FAIL() << "no WorkerLost";
  } catch (const multiproc::WorkerLost& e) {
    EXPECT_NE(std::string(e.what()).find("max_retries = 2"), std::string::npos) << e.what();
  }
  EXPECT_EQ(pool.apply(square, 5), 25);  // the pool goes on with replaced workers
}

// ---- trust ------------------------------------------------------------------------------------

TEST(RedisPool, WithoutTheKeyNothingRunsAndJunkIsDropped) {
  MP_REQUIRE_REDIS();
  TempDir dir;
  const std::string name = test_pool_name();
  ExternalWorker worker(name, dir.path + "/worker.log");
  {
    mpr::Pool intruder(redis_url(), {.name = name, .authkey = std::string(32, 'x')});
    auto r = intruder.apply_async(touch, dir.path + "/pwned");
    EXPECT_TRUE(worker.says("dropped a task message: bad signature"));
    EXPECT_FALSE(r.wait(0.5s));
  }
  EXPECT_FALSE(std::filesystem::exists(dir.path + "/pwned"));
  lpush(pool_tasks_key(name), "junk");
  lpush(pool_tasks_key(name), std::string(40, '\0'));
  EXPECT_TRUE(worker.says("too short"));
  mpr::Pool pool(redis_url(), {.name = name});
  EXPECT_EQ(pool.apply_async(square, 4).get(30s), 16);  // the worker lives on
}

TEST(RedisPool, AnotherBuildIsRefusedOnBothSides) {
  MP_REQUIRE_REDIS();
  TempDir dir;
  const std::string name = test_pool_name();
  ExternalWorker worker(name, dir.path + "/worker.log", 1, "another-build");
  mpr::Pool pool(redis_url(), {.name = name});
  try {
    (void)pool.apply_async(square, 3).get(30s);
    FAIL() << "ran a task of another build";
  } catch (const multiproc::ProcessError& e) {
    EXPECT_NE(std::string(e.what()).find("build mismatch"), std::string::npos) << e.what();
  }
  EXPECT_TRUE(worker.says("build mismatch"));
}

TEST(RedisPool, AnInvokerThatIsNoEntryPointIsRefused) {
  MP_REQUIRE_REDIS();
  TempDir dir;
  const std::string name = test_pool_name();
  ExternalWorker worker(name, dir.path + "/worker.log");
  // Signed with the right key, but naming a function that is not a task entry point; from a
  // client that lives (its liveness key: workers drop the tasks of clients gone).
  run_command("SET", "mp:pool:{" + name + "}:client:nobody", "1");
  multiproc::detail::TaskCode code;
  code.invoker = multiproc::detail::encode_code_address(reinterpret_cast<const void*>(&touch));
  std::string code_bytes;
  multiproc::detail::dump(code_bytes, code);
  lpush(pool_tasks_key(name),
        mpr::detail::sign_task(multiproc::process_authkey(), "nobody", 1, code_bytes, "x"));
  EXPECT_TRUE(worker.says("is not a task entry point of this program"));
}

// ---- replies lost in flight
// ---------------------------------------------------------------------- A server killed or
// restarted between running a command and answering it: the command took effect, the client never
// heard. The proxy makes that happen at a chosen command.

TEST(RedisPool, TaskTakenInALostReplyRunsAnyway) {
  MP_REQUIRE_REDIS();
  TempDir dir;
  const std::string name = test_pool_name();
  LossyProxy proxy(RedisServer::instance()->port());
  ExternalWorker worker(name, dir.path + "/worker.log", 1, {}, proxy.url());
  mpr::Pool pool(redis_url(), {.processes = 0, .name = name});
  ASSERT_EQ(pool.apply_async(square, 2).get(30s), 4);
  // The worker's BLMOVE moves the task into its list; the task never reaches the worker.
  proxy.drop_next_reply_to({"BLMOVE"});
  EXPECT_EQ(pool.apply_async(square, 3).get(30s), 9);
  EXPECT_TRUE(proxy.dropped());
}

TEST(RedisPool, ResultTakenInALostReplyIsReadAgain) {
  MP_REQUIRE_REDIS();
  TempDir dir;
  const std::string name = test_pool_name();
  LossyProxy proxy(RedisServer::instance()->port());
  ExternalWorker worker(name, dir.path + "/worker.log");
  mpr::Pool pool(proxy.url(), {.processes = 0, .name = name});
  ASSERT_EQ(pool.apply_async(square, 2).get(30s), 4);
  // The client's read of its results list (whichever command it uses) loses the result.
  proxy.drop_next_reply_to({"BLMOVE", "BRPOP"});
  EXPECT_EQ(pool.apply_async(square, 3).get(30s), 9);
  EXPECT_TRUE(proxy.dropped());
}

TEST(RedisPool, ResultBatchesTakenInLostRepliesAreReadAgain) {
  MP_REQUIRE_REDIS();
  TempDir dir;
  const std::string name = test_pool_name();
  LossyProxy proxy(RedisServer::instance()->port());
  ExternalWorker worker(name, dir.path + "/worker.log", 2);
  mpr::Pool pool(proxy.url(), {.processes = 0, .name = name});
  ASSERT_EQ(pool.apply_async(square, 2).get(30s), 4);
  // With many tasks in flight results are taken in batches, by the script that trims the taken
  // list. Its replies are lost, one after another while the tasks run (some carry results, some
  // none, some are a batch sent again); after each loss some result must come before the next (a
  // server that loses every reply is down). The script goes by its SHA1: its call is told by its
  // argument "512" (the most results a call takes), as the client writes it.
  const std::string results_script_call = "\r\n$3\r\n512\r\n";
  std::vector<mpr::AsyncResult<int>> rs;
  for (int i = 0; i < 200; ++i) rs.push_back(pool.apply_async(slowish_square, i));
  auto ready = [&] {
    size_t n = 0;
    for (auto& r : rs) n += r.ready() ? 1 : 0;
    return n;
  };
  const auto until = std::chrono::steady_clock::now() + 30s;  // bounded: a lost result hangs
  auto waiting = [&] { return ready() < rs.size() && std::chrono::steady_clock::now() < until; };
  while (waiting()) {
    const int drops = proxy.drops();
    proxy.drop_next_reply_to({results_script_call});
    while (proxy.drops() == drops && waiting()) std::this_thread::sleep_for(1ms);
    const size_t got = ready();
    while (ready() == got && waiting()) std::this_thread::sleep_for(1ms);
  }
  proxy.drop_next_reply_to({});
  for (int i = 0; i < 200; ++i) EXPECT_EQ(rs[i].get(30s), i * i) << i;
  EXPECT_GT(proxy.drops(), 1);
}

TEST(RedisPool, TasksOfALostWorkerSurviveALostReplyToTheReaper) {
  MP_REQUIRE_REDIS();
  TempDir dir;
  const std::string name = test_pool_name();
  LossyProxy proxy(RedisServer::instance()->port());
  ExternalWorker worker(name, dir.path + "/worker.log", 2);
  mpr::Pool pool(proxy.url(), {.processes = 0, .name = name, .worker_timeout = 0.5s});
  ASSERT_EQ(pool.apply_async(square, 2).get(30s), 4);
  // The reaper takes the dead worker's list (into "reaping:<worker>"), but does not hear that it
  // did.
  proxy.drop_next_reply_to({"reaping:"});
  EXPECT_EQ(pool.apply_async(die_first_time, dir.path + "/marker").get(30s), 42);
  EXPECT_TRUE(proxy.dropped());
}

MP_ALL_START_METHODS(RedisPoolTest);
