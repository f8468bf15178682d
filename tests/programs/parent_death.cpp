// Starts a pool, a daemon spawn process, a daemon forkserver process (through the fork server)
// and a queue (shared segments), prints "ready", then ends the way argv[1] says once a line
// arrives on stdin: "exit" (std::exit), "throw" (an uncaught exception); for "signal" it waits to
// be killed. Everything it started must end with it, and its segments must go.
#include <unistd.h>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <stdexcept>
#include <vector>

#include <multiproc/multiproc.hpp>

namespace mp = multiproc;

namespace {
void sleep_forever() {
  for (;;) pause();
}
int square(int x) {
  return x * x;
}
}  // namespace

int main(int argc, char** argv) {
  mp::init(argc, argv);
  if (argc < 2) return 2;
  mp::Pool pool(mp::PoolOptions{.processes = 2});
  if (pool.map(square, std::vector<int>{1, 2, 3}) != std::vector<int>{1, 4, 9}) return 3;
  mp::Pool fs_pool(
      mp::PoolOptions{.processes = 1, .context = mp::get_context(mp::StartMethod::forkserver)});
  if (fs_pool.apply(square, 4) != 16) return 4;
  mp::Process daemon(mp::get_context(mp::StartMethod::spawn), sleep_forever);
  daemon.daemon(true);
  daemon.start();
  mp::Process served(mp::get_context(mp::StartMethod::forkserver), sleep_forever);
  served.daemon(true);
  served.start();
  mp::Queue<int> q;
  q.put(1);
  std::printf("ready\n");
  std::fflush(stdout);
  char line[16];
  if (!std::fgets(line, sizeof line, stdin)) return 5;
  if (std::strcmp(argv[1], "exit") == 0) std::exit(0);
  if (std::strcmp(argv[1], "throw") == 0) throw std::runtime_error("uncaught, on purpose");
  sleep_forever();
}
