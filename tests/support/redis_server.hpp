// A real redis-server for one test binary: started on a free loopback port with a password, an
// append-only file in a temporary folder, stopped by its pid (never by name) and its folder
// removed when the binary's tests end, passed or failed. If the test binary dies, the server gets
// SIGTERM from the kernel (PR_SET_PDEATHSIG). Children forked from the test do not own it.
// Start and restart it from the main thread: the parent-death signal follows the thread that
// forked, so a server started from a short-lived thread would die with that thread.
//   RedisServer& server = RedisServer::global();   // after RedisEnvironment has set it up
#pragma once

#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdlib>
#include <filesystem>
#include <string>
#include <vector>

#include <gtest/gtest.h>
#include <hiredis/hiredis.h>

#include "redis_process.hpp"

class RedisServer {
 public:
  static constexpr const char* kPassword = "mp-test-secret";

  // Empty when no redis-server can be found (the tests then skip with the reason).
  static std::string binary() { return RedisProcess::binary(); }

  bool start() {
    if (dir_.empty()) {
      char tmpl[] = "/tmp/mp-redis-XXXXXX";
      if (!mkdtemp(tmpl)) return false;
      dir_ = tmpl;
    }
    if (port_ == 0) port_ = RedisProcess::free_port();
    std::vector<std::string> options = {"--bind", "127.0.0.1"};
    if (!also_bind_.empty()) options.push_back(also_bind_);
    options.insert(options.end(),
                   {"--requirepass", kPassword, "--appendonly", "yes", "--dir", dir_, "--save", "",
                    "--daemonize", "no", "--logfile", dir_ + "/log", "--protected-mode", "no"});
    if (fsync_always_) options.insert(options.end(), {"--appendfsync", "always"});
    return process_.start(port_, options);
  }

  // SIGTERM: redis flushes its append-only file and exits; SIGKILL: a crash (what it replied to
  // was written to the file before the reply). We wait for it either way.
  void stop(int sig = SIGTERM) { process_.stop(sig); }

  // Same port, same folder: the server reloads the append-only file.
  bool restart(int sig = SIGTERM) {
    stop(sig);
    return start();
  }

  ~RedisServer() {
    stop();
    if (!dir_.empty() && process_.owned()) {
      std::error_code ec;
      std::filesystem::remove_all(dir_, ec);
    }
  }

  // Every later (re)start syncs its file before each answer (appendfsync always; CONFIG SET does
  // not outlive a restart): a SIGKILLed server then keeps all it answered, where everysec may have
  // answered writes it had not written yet.
  void fsync_always() { fsync_always_ = true; }

  // Another address to listen on besides the loopback (before start()): a namespace's veth.
  void also_bind(const std::string& address) { also_bind_ = address; }

  int port() const { return port_; }
  std::string url(const std::string& password = kPassword) const {
    return "redis://:" + password + "@127.0.0.1:" + std::to_string(port_) + "/0";
  }

  static RedisServer*& instance() {
    static RedisServer* s = nullptr;
    return s;
  }

 private:
  RedisProcess process_;
  std::string dir_, also_bind_;
  bool fsync_always_ = false;
  int port_ = 0;
};

// Starts the binary's server before its first test and stops it after the last one.
class RedisEnvironment : public ::testing::Environment {
 public:
  void SetUp() override {
    if (RedisServer::binary().empty()) return;
    server_ = std::make_unique<RedisServer>();
    if (server_->start()) RedisServer::instance() = server_.get();
  }
  void TearDown() override {
    RedisServer::instance() = nullptr;
    server_.reset();
  }

 private:
  std::unique_ptr<RedisServer> server_;
};

// For a test program whose tests use the server: at namespace scope in it,
//   MP_REDIS_TEST_PROGRAM();
// starts the server before the first test and stops it after the last.
#define MP_REDIS_TEST_PROGRAM()                                      \
  [[maybe_unused]] ::testing::Environment* const kRedisEnvironment = \
      ::testing::AddGlobalTestEnvironment(new RedisEnvironment)

// The URL of the program's server (in a test, after MP_REQUIRE_REDIS()).
inline std::string redis_url() {
  return RedisServer::instance()->url();
}

// Tells the running server to sync its file before every answer (CONFIG SET appendfsync always):
// a SIGKILLed server then keeps all it answered. It does not outlive a restart (for that, see
// RedisServer::fsync_always()).
inline ::testing::AssertionResult config_fsync_always(const RedisServer& server) {
  redisContext* c = redisConnect("127.0.0.1", server.port());
  if (!c || c->err) {
    if (c) redisFree(c);
    return ::testing::AssertionFailure() << "cannot connect to redis-server";
  }
  freeReplyObject(redisCommand(c, "AUTH %s", RedisServer::kPassword));
  auto* r = static_cast<redisReply*>(redisCommand(c, "CONFIG SET appendfsync always"));
  auto result = r && r->type == REDIS_REPLY_STATUS
                    ? ::testing::AssertionSuccess()
                    : ::testing::AssertionFailure() << (r && r->str ? r->str : "no reply");
  freeReplyObject(r);
  redisFree(c);
  return result;
}

// How many clients the server has blocked in a command (BLMOVE, BRPOP...) now: INFO clients'
// blocked_clients; -1 when it cannot be asked.
inline int blocked_clients(const RedisServer& server) {
  redisContext* c = redisConnect("127.0.0.1", server.port());
  if (!c || c->err) {
    if (c) redisFree(c);
    return -1;
  }
  freeReplyObject(redisCommand(c, "AUTH %s", RedisServer::kPassword));
  auto* r = static_cast<redisReply*>(redisCommand(c, "INFO clients"));
  int n = -1;
  if (r && r->type == REDIS_REPLY_STRING) {
    const std::string info(r->str, r->len);
    const auto at = info.find("blocked_clients:");
    if (at != std::string::npos) n = std::atoi(info.c_str() + at + 16);
  }
  freeReplyObject(r);
  redisFree(c);
  return n;
}

// One command on a connection of its own (the tests' administrator's, not a client under test):
// the reply as text (a status, a string, an integer's digits, an error's message), or "" when the
// server cannot be reached.
inline std::string admin_command(const RedisServer& server, const std::vector<std::string>& argv) {
  redisContext* c = redisConnect("127.0.0.1", server.port());
  if (!c || c->err) {
    if (c) redisFree(c);
    return {};
  }
  freeReplyObject(redisCommand(c, "AUTH %s", RedisServer::kPassword));
  std::vector<const char*> ptrs;
  std::vector<size_t> lens;
  for (const auto& a : argv) {
    ptrs.push_back(a.data());
    lens.push_back(a.size());
  }
  auto* r = static_cast<redisReply*>(
      redisCommandArgv(c, static_cast<int>(argv.size()), ptrs.data(), lens.data()));
  std::string out;
  if (r && r->type == REDIS_REPLY_INTEGER)
    out = std::to_string(r->integer);
  else if (r && r->str)
    out.assign(r->str, r->len);
  freeReplyObject(r);
  redisFree(c);
  return out;
}

// A number in INFO's text: the line `key:N`, or the field of `key:a=1,field=N,...`; -1 when the
// line or the field is not there (INFO commandstats has no line for a command never called).
inline long long info_number(const std::string& info, const std::string& key,
                             const std::string& field = {}) {
  const std::string line_start = key + ":";
  size_t at = info.rfind(line_start, 0) == 0 ? 0 : info.find("\n" + line_start);
  if (at == std::string::npos) return -1;
  at = info.find(':', at) + 1;
  const size_t end = std::min(info.find('\r', at), info.find('\n', at));
  const std::string line = info.substr(at, end == std::string::npos ? end : end - at);
  if (field.empty()) return std::atoll(line.c_str());
  const std::string f = field + "=";
  size_t pos = line.rfind(f, 0) == 0 ? 0 : line.find("," + f);
  if (pos == std::string::npos) return -1;
  pos = line.find('=', pos) + 1;
  return std::atoll(line.c_str() + pos);
}

// A folder for a test's marker files and logs, removed at the end of the test.
struct TempDir {
  std::string path;
  TempDir() {
    char tmpl[] = "/tmp/mp-redis-test-XXXXXX";
    if (mkdtemp(tmpl)) path = tmpl;
  }
  ~TempDir() {
    std::error_code ec;
    if (!path.empty()) std::filesystem::remove_all(path, ec);
  }
  TempDir(const TempDir&) = delete;
  TempDir& operator=(const TempDir&) = delete;
};

// First line of every test that needs the server.
#define MP_REQUIRE_REDIS()                                                         \
  do {                                                                             \
    if (RedisServer::binary().empty())                                             \
      GTEST_SKIP() << "redis-server is not installed (./run.sh test installs it)"; \
    ASSERT_NE(RedisServer::instance(), nullptr) << "redis-server did not start";   \
  } while (0)

// A queue name of the running test's own (suite, test, `what`, pid; '/' of a parameterized test
// made '_'): other tests and other test programs on the server never meet its keys. `what` tells
// apart the queues of one test.
inline std::string qname(const std::string& what = "q") {
  const auto* info = ::testing::UnitTest::GetInstance()->current_test_info();
  std::string n = std::string(info->test_suite_name()) + "." + info->name() + "." +
                  (what.empty() ? std::string() : what + ".") + std::to_string(getpid());
  for (auto& c : n)
    if (c == '/') c = '_';
  return n;
}

// A redis::Pool name of the running test's own (suite, test, pid): workers of other tests and
// other test programs never take its tasks.
inline std::string test_pool_name() {
  return qname({});
}

// The server's list of a redis::Pool's queued tasks (the layout src/redis/pool.cpp uses).
inline std::string pool_tasks_key(const std::string& pool_name) {
  return "mp:pool:{" + pool_name + "}:tasks";
}
