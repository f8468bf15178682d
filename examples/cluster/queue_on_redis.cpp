// The seed's first program (examples/seed/queue_as_argument.cpp) on many machines: its queue
// lives in Redis and its pool's workers are separate programs, which may run on other hosts.
//
//   export MULTIPROC_AUTHKEY=$(openssl rand -hex 32)      # the same on every host
//   host B:  ./queue_on_redis --multiproc-worker redis://:pass@hostA:6379/0 --pool seed --processes
//   10 host A:  ./queue_on_redis redis://:pass@hostA:6379/0 --external
//
// Without --external it starts the workers itself, as a separate program (this one, with
// --multiproc-worker), so that it runs alone on one machine.
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>
#include <thread>
#include <vector>

#include <multiproc/multiproc.hpp>
#include <multiproc/redis.hpp>

#include "../seed/seed_random.hpp"

namespace mp = multiproc;
namespace mpr = multiproc::redis;

// task completed in a worker, on whichever host it runs
void task(mpr::Queue<double> queue) {
  // generate some work
  double data = py::random() * 5;
  // block to simulate work
  std::this_thread::sleep_for(std::chrono::duration<double>(data));
  // put it on the queue
  queue.put(data);
}

// protect the entry point: with --multiproc-worker, init() runs the worker and never returns
int main(int argc, char** argv) {
  mp::init(argc, argv);
  std::string url = "redis://127.0.0.1:6379/0";
  if (const char* env = std::getenv("MULTIPROC_REDIS_URL")) url = env;
  bool external = false;
  for (int i = 1; i < argc; ++i) {
    if (std::strcmp(argv[i], "--external") == 0)
      external = true;
    else
      url = argv[i];
  }
  // The workers: another program, as on another host (same build, same MULTIPROC_AUTHKEY).
  pid_t workers = -1;
  if (!external) {
    workers = fork();
    if (workers == 0) {
      execl("/proc/self/exe", argv[0], "--multiproc-worker", url.c_str(), "--pool", "seed",
            "--processes", "10", static_cast<char*>(nullptr));
      _exit(127);
    }
  }
  // define the shared queue, in Redis
  mpr::Queue<double> queue(url, "seed-queue." + std::to_string(getpid()));
  {
    // the pool: no workers of its own, its tasks go to the workers of the pool "seed"
    mpr::Pool pool(url, {.processes = 0, .name = "seed"});
    // create a list of arguments, one for each call
    std::vector<mpr::Queue<double>> args(10, queue);
    // execute the tasks in parallel
    pool.map(task, args, 1);
  }
  // consume all items
  for (int i = 0; i < 10; ++i) {
    // get item from queue
    double item = queue.get();
    // report item
    std::printf("> got %s\n", repr(item).c_str());
  }
  queue.unlink();
  if (workers > 0) {
    kill(workers, SIGTERM);
    waitpid(workers, nullptr, 0);
  }
}
