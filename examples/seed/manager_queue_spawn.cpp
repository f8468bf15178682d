// SuperFastPython.com's third program, ported: host the queue in a Manager's server process and
// pass it to pool tasks as an argument, under the spawn start method. A manager queue is a
// shared-memory queue the server keeps alive, so each put/get is the core queue's (no round trip
// to the server per item).
#include <chrono>
#include <cstdio>
#include <thread>
#include <vector>

#include <multiproc/multiproc.hpp>

#include "seed_random.hpp"

namespace mp = multiproc;

// task completed in a worker
void task(mp::QueueProxy<double> queue) {
  // generate some work
  double data = py::random() * 5;
  // block to simulate work
  std::this_thread::sleep_for(std::chrono::duration<double>(data));
  // put it on the queue
  queue.put(data);
}

// protect the entry point
int main(int argc, char** argv) {
  mp::init(argc, argv);
  // set the spawn start method
  mp::set_start_method(mp::StartMethod::spawn);
  std::printf("start method: %s\n", std::string(mp::to_string(mp::get_start_method())).c_str());
  // create the manager
  mp::Manager manager;
  // create the shared queue
  mp::QueueProxy<double> queue = manager.Queue<double>();
  {
    // create the pool of workers
    mp::Pool pool(10);
    // create a list of arguments, one for each call
    std::vector<mp::QueueProxy<double>> args(10, queue);
    // execute the tasks in parallel
    pool.map(task, args);
  }
  // consume all items
  for (int i = 0; i < 10; ++i) {
    // get item from queue
    double item = queue.get();
    // report item
    std::printf("> got %s\n", repr(item).c_str());
  }
}
