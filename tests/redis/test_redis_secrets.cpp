// Nothing multiproc::redis throws or logs contains the password of its URL: a failed set-up
// command (AUTH with a wrong password, SELECT of a database the server does not have), for the
// default user and for an ACL user, from a Queue, a Pool and a worker (its exception and its
// stderr); and every malformed URL that carries a password. Each error still says what failed and
// where (host:port). Against a real redis-server started by this binary with a password
// (tests/support/redis_server.hpp).
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <string>
#include <vector>

#include <multiproc/redis.hpp>

#include "redis_server.hpp"
#include "start_methods.hpp"

namespace mpr = multiproc::redis;
using namespace std::chrono_literals;

namespace {

MP_REDIS_TEST_PROGRAM();

constexpr const char* kAclUser = "mp-secrets-user";
constexpr const char* kAclPassword = "acl-user-secret-7319";

std::string host_port() {
  return "127.0.0.1:" + std::to_string(RedisServer::instance()->port());
}

std::string url_of(const std::string& credentials, const std::string& db) {
  return "redis://" + credentials + "@" + host_port() + "/" + db;
}

// The message of what `make` throws ("" when it throws nothing, which the caller reports).
template <class F>
std::string error_of(F make) {
  try {
    make();
  } catch (const std::exception& e) {
    return e.what();
  }
  return {};
}

// Runs `body` in a forked child with its stderr captured; returns what the child wrote there,
// then the message of what body threw.
std::string in_child_output(void (*body)(const std::string&), const std::string& url) {
  int fds[2];
  if (pipe(fds) != 0) return "pipe failed";
  pid_t pid = fork();
  if (pid == 0) {
    close(fds[0]);
    dup2(fds[1], 2);
    try {
      body(url);
      std::fputs("body returned\n", stderr);
    } catch (const std::exception& e) {
      std::fprintf(stderr, "threw: %s\n", e.what());
    }
    std::fflush(stderr);
    _exit(0);
  }
  close(fds[1]);
  std::string out;
  char buf[4096];
  ssize_t n;
  while ((n = read(fds[0], buf, sizeof buf)) > 0) out.append(buf, static_cast<size_t>(n));
  close(fds[0]);
  int status = 0;
  waitpid(pid, &status, 0);
  return out;
}

void worker_body(const std::string& url) {
  mpr::run_worker(url, "secrets-test-pool", 1s);
}

class RedisSecrets : public ::testing::Test {
 protected:
  void SetUp() override {
    if (RedisServer::binary().empty()) return;
    if (!RedisServer::instance()) return;
    // An ACL user of our own (Redis 6+), removed again in TearDown.
    acl_ = admin_command(*RedisServer::instance(),
                         {"ACL", "SETUSER", kAclUser, "on", std::string(">") + kAclPassword, "~*",
                          "&*", "+@all"}) == "OK";
  }
  void TearDown() override {
    if (acl_) admin_command(*RedisServer::instance(), {"ACL", "DELUSER", kAclUser});
  }
  bool acl_ = false;
};

#define EXPECT_NO_SECRET(text, secret)                         \
  EXPECT_EQ(std::string(text).find(secret), std::string::npos) \
      << "the password '" << (secret) << "' is in: " << (text)

}  // namespace

TEST_F(RedisSecrets, SelectOfAMissingDatabaseSaysWhatFailedWhereButNotThePassword) {
  MP_REQUIRE_REDIS();
  const std::string url = url_of(std::string(":") + RedisServer::kPassword, "99999");
  const std::string e = error_of([&] { mpr::Queue<int> q(url, qname()); });
  EXPECT_NE(e.find("SELECT 99999 failed"), std::string::npos) << e;
  EXPECT_NE(e.find(host_port()), std::string::npos) << e;
  EXPECT_NO_SECRET(e, RedisServer::kPassword);
}

TEST_F(RedisSecrets, WrongPasswordSaysWhatFailedWhereButNotThePassword) {
  MP_REQUIRE_REDIS();
  const std::string wrong = "wrong-password-5521";
  const std::string e = error_of([&] { mpr::Queue<int> q(url_of(":" + wrong, "0"), qname()); });
  EXPECT_NE(e.find("AUTH failed"), std::string::npos) << e;
  EXPECT_NE(e.find(host_port()), std::string::npos) << e;
  EXPECT_NO_SECRET(e, wrong);
}

TEST_F(RedisSecrets, AclUserErrorsNameTheUserButNotThePassword) {
  MP_REQUIRE_REDIS();
  if (!acl_) GTEST_SKIP() << "this redis-server has no ACL (Redis 6+)";
  const std::string user = kAclUser;
  std::string e =
      error_of([&] { mpr::Queue<int> q(url_of(user + ":" + kAclPassword, "99999"), qname()); });
  EXPECT_NE(e.find("SELECT 99999 failed"), std::string::npos) << e;
  EXPECT_NE(e.find(host_port()), std::string::npos) << e;
  EXPECT_NO_SECRET(e, kAclPassword);
  const std::string wrong = "wrong-acl-password-0417";
  e = error_of([&] { mpr::Queue<int> q(url_of(user + ":" + wrong, "0"), qname()); });
  EXPECT_NE(e.find("AUTH failed"), std::string::npos) << e;
  EXPECT_NE(e.find(user), std::string::npos) << e;
  EXPECT_NO_SECRET(e, wrong);
}

TEST_F(RedisSecrets, PoolAndWorkerErrorsAndLogsHoldNoPassword) {
  MP_REQUIRE_REDIS();
  const std::string bad_db = url_of(std::string(":") + RedisServer::kPassword, "99999");
  std::string e = error_of(
      [&] { mpr::Pool pool(bad_db, {.name = test_pool_name(), .unreachable_timeout = 1s}); });
  EXPECT_NE(e.find("SELECT 99999 failed"), std::string::npos) << e;
  EXPECT_NO_SECRET(e, RedisServer::kPassword);
  const std::string worker_out = in_child_output(worker_body, bad_db);
  EXPECT_NE(worker_out.find("SELECT 99999 failed"), std::string::npos) << worker_out;
  EXPECT_NO_SECRET(worker_out, RedisServer::kPassword);
  const std::string wrong = "wrong-worker-password-9902";
  const std::string auth_out = in_child_output(worker_body, url_of(":" + wrong, "0"));
  EXPECT_NE(auth_out.find("AUTH failed"), std::string::npos) << auth_out;
  EXPECT_NO_SECRET(auth_out, wrong);
}

// A URL that does not parse is quoted in the error with its password masked, whatever is wrong
// with it (even a '/', '?' or '#' in the password, which must be %-escaped).
TEST(RedisUrlSecrets, MalformedUrlErrorsMaskThePassword) {
  const std::string secret = "pw-in-url-3141";
  for (const std::string& bad : {
           "redis://:" + secret + "@h:0",
           "redis://:" + secret + "@h:port",
           "redis://user:" + secret + "@h:1/x",
           "redis://:" + secret + "@h:1/0?ssl=1",
           "redis://:" + secret + "%zz@h:1",
           "redis://:" + secret + "@[::1:1",
           "redis://:" + secret + "@h:",
           "redis://:" + secret + "@",
           "rediss://:" + secret + "@h:6380/0",
           "redis//:" + secret + "@h:1",
           "redis://" + secret + "@h:1/x",
           "redis://:pw-" + secret.substr(0, 5) + "/" + secret.substr(5) + "@h:1/0",
           "redis://:" + secret.substr(0, 5) + "?" + secret.substr(5) + "@h:1/0",
           "redis://:" + secret.substr(0, 5) + "#" + secret.substr(5) + "@h:1/0",
       }) {
    const std::string e = error_of([&] { mpr::detail::parse_url(bad); });
    EXPECT_NE(e.find("redis URL"), std::string::npos) << bad << " -> " << e;
    EXPECT_NO_SECRET(e, secret);
    EXPECT_NO_SECRET(e, secret.substr(0, 5));
    EXPECT_NO_SECRET(e, secret.substr(5));
  }
}
