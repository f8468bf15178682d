// RedisProcess: a private redis-server, for the tests (redis_server.hpp, which adds the tests'
// options and GoogleTest's set-up) and the benchmarks (bench/redis/_redis_server.hpp): started on
// a free loopback port with the options it is given, ready once it accepts a connection, stopped
// by its pid (never by name) and only by the process that started it (a forked child's copy leaves
// it alone). It gets SIGTERM from the kernel when the thread that started it ends
// (PR_SET_PDEATHSIG), so start it from the main thread. No GoogleTest here: the benchmarks build
// without it.
#pragma once

#include <arpa/inet.h>
#include <netinet/in.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <string>
#include <thread>
#include <vector>

class RedisProcess {
 public:
  // Empty when no redis-server can be found.
  static std::string binary() {
    for (const char* p : {"/usr/bin/redis-server", "/usr/local/bin/redis-server"})
      if (access(p, X_OK) == 0) return p;
    return {};
  }

  // A loopback port that nothing listened on a moment ago.
  static int free_port() {
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    sockaddr_in a{};
    a.sin_family = AF_INET;
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    bind(fd, reinterpret_cast<sockaddr*>(&a), sizeof a);
    socklen_t len = sizeof a;
    getsockname(fd, reinterpret_cast<sockaddr*>(&a), &len);
    close(fd);
    return ntohs(a.sin_port);
  }

  // redis-server on `port` with `options` (after --port PORT): true once it accepts a connection
  // (it may still be loading its files: clients retry that), false when it exits or is not up
  // within 20 s.
  bool start(int port, const std::vector<std::string>& options) {
    port_ = port;
    owner_ = getpid();
    std::vector<std::string> args = {binary(), "--port", std::to_string(port)};
    args.insert(args.end(), options.begin(), options.end());
    pid_ = fork();
    if (pid_ == 0) {
      prctl(PR_SET_PDEATHSIG, SIGTERM);
      std::vector<char*> argv;
      for (auto& a : args) argv.push_back(a.data());
      argv.push_back(nullptr);
      execv(args[0].c_str(), argv.data());
      _exit(127);
    }
    const auto until = std::chrono::steady_clock::now() + std::chrono::seconds(20);
    while (std::chrono::steady_clock::now() < until) {
      if (accepts()) return true;
      int status;
      if (waitpid(pid_, &status, WNOHANG) == pid_) {
        pid_ = -1;
        return false;
      }
      std::this_thread::sleep_for(std::chrono::milliseconds(10));
    }
    return false;
  }

  // SIGTERM: redis writes its append-only file (if it keeps one) and exits; SIGKILL: a crash. We
  // wait for it either way.
  void stop(int sig = SIGTERM) {
    if (pid_ > 0 && owner_ == getpid()) {
      kill(pid_, sig);
      int status;
      waitpid(pid_, &status, 0);
    }
    pid_ = -1;
  }

  ~RedisProcess() { stop(); }
  RedisProcess() = default;
  RedisProcess(const RedisProcess&) = delete;
  RedisProcess& operator=(const RedisProcess&) = delete;

  int port() const { return port_; }
  // The process that started it (a forked child's copy is not).
  bool owned() const { return owner_ == getpid(); }

 private:
  bool accepts() const {
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    sockaddr_in a{};
    a.sin_family = AF_INET;
    a.sin_port = htons(static_cast<uint16_t>(port_));
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    const bool ok = connect(fd, reinterpret_cast<sockaddr*>(&a), sizeof a) == 0;
    close(fd);
    return ok;
  }

  int port_ = 0;
  pid_t pid_ = -1;
  pid_t owner_ = 0;
};
