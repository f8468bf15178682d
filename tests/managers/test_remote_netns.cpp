// Remote use (CPython's _TestRemoteManager) across two network namespaces this test makes: a
// server in one, joined to the other by a veth pair, serves on TCP; a client in the other
// connects by address and key and finds objects by name, a registered user type included. The
// namespaces live in a forked child of the test (never the test binary), which exits with 77
// when they cannot be made here (no user namespaces, no `ip`): the test is then skipped.
#include <gtest/gtest.h>

#include <fcntl.h>
#include <sched.h>
#include <sys/wait.h>
#include <unistd.h>
#include <cstdio>
#include <cstdlib>
#include <string>

#include <multiproc/managers.hpp>

#include "netns.hpp"
#include "start_methods.hpp"

namespace {

constexpr int kSkip = kNetnsSkip;
constexpr const char* kKey = "netns key";

class Tally {
 public:
  void add(std::string who) { seen_ += who + ";"; }
  std::string seen() const { return seen_; }

 private:
  std::string seen_;
};
using TallyProxy = mp::Proxy<Tally, &Tally::add, &Tally::seen>;

bool read_byte(int fd, char& c) {
  return ::read(fd, &c, 1) == 1;
}

// The client's namespace: configured once the server's side has moved the veth end here.
[[noreturn]] void client_side(int to_server, int from_server) {
  char c = 0;
  if (!enter_new_netns(false)) _exit(kSkip);
  if (::write(to_server, "r", 1) != 1 || !read_byte(from_server, c) || c != 'm') _exit(2);
  if (!run_quiet("ip link set lo up") || !run_quiet("ip addr add 10.231.7.2/24 dev mpv1") ||
      !run_quiet("ip link set mpv1 up"))
    _exit(3);
  if (::write(to_server, "c", 1) != 1) _exit(4);
  std::string port;
  while (read_byte(from_server, c) && c != '\n') port.push_back(c);
  // The result goes back as a byte; this namespace (and with it the veth pair and the server's
  // address) stays until the server's side has finished its own calls and closes the pipe.
  auto report = [&](int code) {
    const char b = static_cast<char>(code);
    if (::write(to_server, &b, 1) == 1)
      while (read_byte(from_server, c)) {
      }
    _exit(code);
  };
  try {
    mp::Manager m = mp::Manager::connect("10.231.7.1:" + port, kKey);
    m.dict<std::string, int>("results").set("client", 42);
    m.make_named<TallyProxy>("Tally", "tally").call<&Tally::add>(std::string("client"));
    mp::AcquirerProxy lock = m.Lock("lock");
    if (!lock.acquire(true, std::chrono::seconds(10))) report(5);
    lock.release();
    bool refused = false;
    try {
      mp::Manager::connect("10.231.7.1:" + port, "wrong key");
    } catch (const mp::AuthenticationError&) {
      refused = true;
    }
    report(refused ? 0 : 6);
  } catch (const std::exception& e) {
    std::fprintf(stderr, "client: %s\n", e.what());
    report(7);
  }
  _exit(8);
}

// The server's namespace: makes the veth pair, moves one end to the client's namespace, serves.
[[noreturn]] void server_side(const mp::Context& ctx) {
  if (!enter_new_netns(true)) _exit(kSkip);
  if (!run_quiet("ip link add mpv0 type veth peer name mpv1")) _exit(kSkip);
  int up[2], down[2];
  // Close-on-exec, and each side closes the other's ends: the client waits for EOF on `down`.
  if (::pipe2(up, O_CLOEXEC) != 0 || ::pipe2(down, O_CLOEXEC) != 0) _exit(10);
  pid_t client = ::fork();
  if (client == 0) {
    ::close(up[0]);
    ::close(down[1]);
    client_side(up[1], down[0]);
  }
  ::close(up[1]);
  ::close(down[0]);
  int code = 11;
  char c = 0;
  auto finish = [&](int rc) {
    ::close(down[1]);
    int status = 0;
    ::waitpid(client, &status, 0);
    if (rc == 0) rc = WIFEXITED(status) ? WEXITSTATUS(status) : 12;
    _exit(rc);
  };
  if (!read_byte(up[0], c) || c != 'r') finish(13);
  if (!run_quiet("ip link set mpv1 netns " + std::to_string(client)) ||
      !run_quiet("ip link set lo up") || !run_quiet("ip addr add 10.231.7.1/24 dev mpv0") ||
      !run_quiet("ip link set mpv0 up"))
    finish(kSkip);
  if (::write(down[1], "m", 1) != 1 || !read_byte(up[0], c) || c != 'c') finish(14);
  try {
    mp::Registry reg;
    reg.add<TallyProxy>("Tally");
    mp::Manager server = mp::Manager::serve("10.231.7.1:0", kKey, ctx, reg);
    auto results = server.dict<std::string, int>("results");
    auto tally = server.make_named<TallyProxy>("Tally", "tally");
    std::string port = server.address().substr(server.address().rfind(':') + 1) + "\n";
    if (::write(down[1], port.data(), port.size()) != static_cast<ssize_t>(port.size())) finish(15);
    code = read_byte(up[0], c) ? c : 16;
    if (code == 0 && results.get("client", 0) != 42) code = 17;
    if (code == 0 && tally.call<&Tally::seen>() != "client;") code = 18;
  } catch (const std::exception& e) {
    std::fprintf(stderr, "server: %s\n", e.what());
    code = 19;
  }
  finish(code);
  _exit(code);  // not reached: finish() exits
}

class RemoteManager : public StartMethodTest {};

TEST_P(RemoteManager, ClientAndServerInTwoNetworkNamespaces) {
  pid_t pid = ::fork();
  ASSERT_GE(pid, 0);
  if (pid == 0) server_side(ctx());
  int status = 0;
  ASSERT_EQ(::waitpid(pid, &status, 0), pid);
  ASSERT_TRUE(WIFEXITED(status)) << "status " << status;
  if (WEXITSTATUS(status) == kSkip)
    GTEST_SKIP() << "network namespaces or a veth pair cannot be made here (unshare "
                    "CLONE_NEWNET / CLONE_NEWUSER refused, or no iproute2 `ip`)";
  EXPECT_EQ(WEXITSTATUS(status), 0) << "see the codes in server_side / client_side";
}

MP_ALL_START_METHODS(RemoteManager);

}  // namespace
