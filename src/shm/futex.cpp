#include <multiproc/detail/futex.hpp>

#include <linux/futex.h>
#include <sched.h>
#include <sys/syscall.h>
#include <unistd.h>
#include <cerrno>
#include <ctime>

namespace multiproc::detail {

bool futex_wait(std::atomic<uint32_t>* word, uint32_t expected, const Deadline& deadline) {
  // FUTEX_WAIT_BITSET takes an absolute CLOCK_MONOTONIC time: steady_clock is that clock on Linux.
  timespec ts{};
  timespec* tsp = nullptr;
  if (deadline.at) {
    auto ns = std::chrono::duration_cast<std::chrono::nanoseconds>(deadline.at->time_since_epoch())
                  .count();
    ts.tv_sec = ns / 1000000000;
    ts.tv_nsec = ns % 1000000000;
    tsp = &ts;
  }
  // Not FUTEX_PRIVATE_FLAG: the word lives in memory shared between processes.
  long r = syscall(SYS_futex, reinterpret_cast<uint32_t*>(word), FUTEX_WAIT_BITSET, expected, tsp,
                   nullptr, FUTEX_BITSET_MATCH_ANY);
  if (r == -1 && errno == ETIMEDOUT) return false;
  return true;
}

void futex_wake(std::atomic<uint32_t>* word, int count) {
  syscall(SYS_futex, reinterpret_cast<uint32_t*>(word), FUTEX_WAKE, count, nullptr, nullptr, 0);
}

void yield_cpu() {
  sched_yield();
}

}  // namespace multiproc::detail
