// SuperFastPython.com's first program, ported: share a queue with pool tasks by passing it as an
// argument. In Python this fails with "Queue objects should only be shared between processes
// through inheritance". A multiproc queue is a handle that can travel to any process, so here
// it works, under any start method.
#include <chrono>
#include <cstdio>
#include <thread>
#include <vector>

#include <multiproc/multiproc.hpp>

#include "seed_random.hpp"

namespace mp = multiproc;

// task completed in a worker
void task(mp::Queue<double> queue) {
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
  std::printf("start method: %s\n", std::string(mp::to_string(mp::get_start_method())).c_str());
  // define the shared queue
  mp::Queue<double> queue;
  {
    // create the pool of workers
    mp::Pool pool(10);
    // create a list of arguments, one for each call
    std::vector<mp::Queue<double>> args(10, queue);
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
