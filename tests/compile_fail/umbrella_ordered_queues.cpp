// Must compile: the umbrella header offers everything the README lists, LifoQueue and
// PriorityQueue included (they were missing from it).
#include <functional>

#include <multiproc/multiproc.hpp>

void use_ordered_queues() {
  multiproc::LifoQueue<int> stack;
  multiproc::PriorityQueue<int, std::greater<int>> largest_first;
  stack.put(1);
  largest_first.put(stack.get());
}
