// SuperFastPython.com's second program, ported: the fork start method, and a queue in a global
// variable that the pool's workers inherit. Tasks are issued with apply_async and waited on.
#include <chrono>
#include <cstdio>
#include <optional>
#include <thread>
#include <vector>

#include <multiproc/multiproc.hpp>

#include "seed_random.hpp"

namespace mp = multiproc;

// the queue global variable, defined in main() before the workers are forked
std::optional<mp::Queue<double>> queue;

// task completed in a worker
void task() {
  // generate some work
  double data = py::random() * 5;
  // block to simulate work
  std::this_thread::sleep_for(std::chrono::duration<double>(data));
  // put it on the queue
  queue->put(data);
}

// protect the entry point
int main(int argc, char** argv) {
  mp::init(argc, argv);
  // set the fork start method
  mp::set_start_method(mp::StartMethod::fork);
  std::printf("start method: %s\n", std::string(mp::to_string(mp::get_start_method())).c_str());
  // define the queue global variable
  queue.emplace();
  {
    // create the pool of workers
    mp::Pool pool(10);
    // issue tasks
    std::vector<mp::AsyncResult<void>> results;
    for (int i = 0; i < 10; ++i) results.push_back(pool.apply_async(task));
    // wait for all the tasks to complete
    for (auto& result : results) result.wait();
  }
  // consume all items
  for (int i = 0; i < 10; ++i) {
    // get item from queue
    double item = queue->get();
    // report item
    std::printf("> got %s\n", repr(item).c_str());
  }
}
