// A redis::Pool worker on "another host": two network namespaces made by this test and joined by
// a veth pair. The first holds the redis-server (listening on its veth address) and the pool's
// client; the second runs this program as `--multiproc-worker redis://...@10.231.8.1:PORT`,
// which reaches the server only across the veth link. The pool starts no local workers, so every
// result comes from the worker in the other namespace. The namespaces live in forked children
// of the test, never the test binary; where they cannot be made the test skips with the reason.
#include <fcntl.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cstdio>
#include <filesystem>
#include <string>
#include <vector>

#include <multiproc/redis.hpp>

#include "netns.hpp"
#include "redis_server.hpp"

namespace mpr = multiproc::redis;
using namespace std::chrono_literals;

namespace {

constexpr const char* kServerAddress = "10.231.8.1";

int square(int x) {
  return x * x;
}

bool read_byte(int fd, char& c) {
  return ::read(fd, &c, 1) == 1;
}

// The worker's namespace: configured once the first side has moved the veth end here, then
// this program becomes the worker.
[[noreturn]] void worker_side(int to_first, int from_first, const std::string& pool) {
  char c = 0;
  if (!enter_new_netns(false)) _exit(kNetnsSkip);
  if (::write(to_first, "r", 1) != 1 || !read_byte(from_first, c) || c != 'm') _exit(2);
  if (!run_quiet("ip link set lo up") || !run_quiet("ip addr add 10.231.8.2/24 dev mpv1") ||
      !run_quiet("ip link set mpv1 up"))
    _exit(3);
  if (::write(to_first, "c", 1) != 1) _exit(4);
  std::string port;
  while (read_byte(from_first, c) && c != '\n') port.push_back(c);
  const std::string exe = std::filesystem::read_symlink("/proc/self/exe");
  const std::string url =
      std::string("redis://:") + RedisServer::kPassword + "@" + kServerAddress + ":" + port + "/0";
  execl(exe.c_str(), exe.c_str(), "--multiproc-worker", url.c_str(), "--pool", pool.c_str(),
        static_cast<char*>(nullptr));
  _exit(5);
}

// The first namespace: the veth pair, the server, the pool's client.
int first_side(const std::string& name) {
  if (!enter_new_netns(true)) return kNetnsSkip;
  if (!run_quiet("ip link add mpv0 type veth peer name mpv1")) return kNetnsSkip;
  int up[2], down[2];
  if (::pipe2(up, O_CLOEXEC) != 0 || ::pipe2(down, O_CLOEXEC) != 0) return 10;
  const pid_t worker = ::fork();
  if (worker == 0) {
    ::close(up[0]);
    ::close(down[1]);
    worker_side(up[1], down[0], name);
  }
  ::close(up[1]);
  ::close(down[0]);
  int code = 0;
  char c = 0;
  {
    RedisServer server;  // stopped (by pid) and its folder removed when this scope ends
    if (!read_byte(up[0], c) || c != 'r') {
      code = 11;
    } else if (!run_quiet("ip link set mpv1 netns " + std::to_string(worker)) ||
               !run_quiet("ip link set lo up") ||
               !run_quiet(std::string("ip addr add ") + kServerAddress + "/24 dev mpv0") ||
               !run_quiet("ip link set mpv0 up")) {
      code = kNetnsSkip;
    } else if (::write(down[1], "m", 1) != 1 || !read_byte(up[0], c) || c != 'c') {
      code = 12;
    } else {
      server.also_bind(kServerAddress);
      if (!server.start()) {
        code = 13;
      } else {
        const std::string port = std::to_string(server.port()) + "\n";
        if (::write(down[1], port.data(), port.size()) != static_cast<ssize_t>(port.size()))
          code = 14;
      }
    }
    if (code == 0) {
      try {
        const std::string url = std::string("redis://:") + RedisServer::kPassword + "@" +
                                kServerAddress + ":" + std::to_string(server.port()) + "/0";
        mpr::Pool pool(url, {.processes = 0, .name = name});
        if (pool.apply_async(square, 7).get(60s) != 49) code = 20;
        std::vector<int> xs(30);
        for (int i = 0; i < 30; ++i) xs[i] = i;
        auto ys = pool.map_async(square, xs, 4).get(60s);
        for (int i = 0; i < 30 && code == 0; ++i)
          if (ys[static_cast<size_t>(i)] != i * i) code = 21;
      } catch (const std::exception& e) {
        std::fprintf(stderr, "client: %s\n", e.what());
        code = 22;
      }
    }
    ::close(down[1]);
    ::kill(worker, SIGTERM);
    int status = 0;
    ::waitpid(worker, &status, 0);
    if (code == 0 && !(WIFEXITED(status) && WEXITSTATUS(status) == 0)) code = 23;
    if (WIFEXITED(status) && WEXITSTATUS(status) == kNetnsSkip) code = kNetnsSkip;
  }
  return code;
}

TEST(RedisNetns, WorkerInAnotherNetworkNamespace) {
  if (RedisServer::binary().empty())
    GTEST_SKIP() << "redis-server is not installed (./run.sh test installs it)";
  const std::string pool = "netns." + std::to_string(getpid());
  const pid_t pid = ::fork();
  ASSERT_GE(pid, 0);
  if (pid == 0) _exit(first_side(pool));
  int status = 0;
  ASSERT_EQ(::waitpid(pid, &status, 0), pid);
  ASSERT_TRUE(WIFEXITED(status)) << "status " << status;
  if (WEXITSTATUS(status) == kNetnsSkip)
    GTEST_SKIP() << "network namespaces or a veth pair cannot be made here (unshare "
                    "CLONE_NEWNET / CLONE_NEWUSER refused, or no iproute2 `ip`)";
  EXPECT_EQ(WEXITSTATUS(status), 0) << "see the codes in first_side / worker_side";
}

}  // namespace
