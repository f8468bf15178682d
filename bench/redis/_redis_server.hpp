// The redis scenario's server for a C++ competitor: BENCH_REDIS_URL when the runner started one
// (every competitor then uses the same server), otherwise a redis-server of its own on a free
// loopback port, without persistence, that dies with this process (PR_SET_PDEATHSIG) and is
// stopped by its pid: the tests' RedisProcess (tests/support/redis_process.hpp, which needs no
// GoogleTest).
#pragma once

#include <cstdlib>
#include <stdexcept>
#include <string>

#include "../../tests/support/redis_process.hpp"

namespace bench {

class RedisForBench {
 public:
  RedisForBench() {
    if (const char* u = std::getenv("BENCH_REDIS_URL"); u && *u) {
      url_ = u;
      return;
    }
    const int port = RedisProcess::free_port();
    if (!server_.start(port, {"--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
                              "--logfile", "/dev/null"}))
      throw std::runtime_error("bench: redis-server did not start on port " + std::to_string(port));
    url_ = "redis://127.0.0.1:" + std::to_string(port) + "/0";
  }
  RedisForBench(const RedisForBench&) = delete;
  RedisForBench& operator=(const RedisForBench&) = delete;
  const std::string& url() const { return url_; }

 private:
  RedisProcess server_;
  std::string url_;
};

}  // namespace bench
