// The redis scenario's server for a C++ competitor: BENCH_REDIS_URL when the runner started one
// (every competitor then uses the same server), otherwise a redis-server of its own on a free
// loopback port, without persistence, that dies with this process (PR_SET_PDEATHSIG) and is
// stopped by its pid.
#pragma once

#include <arpa/inet.h>
#include <netinet/in.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cstdlib>
#include <string>
#include <thread>

namespace bench {

class RedisForBench {
 public:
  RedisForBench() {
    if (const char* u = std::getenv("BENCH_REDIS_URL"); u && *u) {
      url_ = u;
      return;
    }
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    sockaddr_in a{};
    a.sin_family = AF_INET;
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    bind(fd, reinterpret_cast<sockaddr*>(&a), sizeof a);
    socklen_t len = sizeof a;
    getsockname(fd, reinterpret_cast<sockaddr*>(&a), &len);
    close(fd);
    const std::string port = std::to_string(ntohs(a.sin_port));
    pid_ = fork();
    if (pid_ == 0) {
      prctl(PR_SET_PDEATHSIG, SIGKILL);
      execl("/usr/bin/redis-server", "redis-server", "--port", port.c_str(), "--bind", "127.0.0.1",
            "--save", "", "--appendonly", "no", "--logfile", "/dev/null",
            static_cast<char*>(nullptr));
      _exit(127);
    }
    for (int i = 0; i < 400; ++i) {
      int s = socket(AF_INET, SOCK_STREAM, 0);
      a.sin_port = htons(static_cast<uint16_t>(std::stoi(port)));
      const bool up = connect(s, reinterpret_cast<sockaddr*>(&a), sizeof a) == 0;
      close(s);
      if (up) break;
      std::this_thread::sleep_for(std::chrono::milliseconds(10));
    }
    url_ = "redis://127.0.0.1:" + port + "/0";
  }
  ~RedisForBench() {
    if (pid_ > 0) {
      kill(pid_, SIGTERM);
      waitpid(pid_, nullptr, 0);
    }
  }
  RedisForBench(const RedisForBench&) = delete;
  RedisForBench& operator=(const RedisForBench&) = delete;
  const std::string& url() const { return url_; }

 private:
  std::string url_;
  pid_t pid_ = -1;
};

}  // namespace bench
