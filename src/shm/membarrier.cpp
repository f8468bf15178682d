#include <multiproc/detail/membarrier.hpp>

#include <linux/membarrier.h>
#include <sys/syscall.h>
#include <unistd.h>
#include <atomic>

namespace multiproc::detail {
namespace {

long membarrier(int cmd) {
  return syscall(__NR_membarrier, cmd, 0, 0);
}

bool supported() {
  static const bool yes = [] {
    long cmds = membarrier(MEMBARRIER_CMD_QUERY);
    return cmds > 0 && (cmds & MEMBARRIER_CMD_GLOBAL_EXPEDITED) &&
           (cmds & MEMBARRIER_CMD_REGISTER_GLOBAL_EXPEDITED);
  }();
  return yes;
}

}  // namespace

bool membarrier_register() {
  static std::atomic<pid_t> registered_pid{0};
  if (!supported()) return false;
  const pid_t pid = getpid();
  if (registered_pid.load(std::memory_order_acquire) == pid) return true;
  if (membarrier(MEMBARRIER_CMD_REGISTER_GLOBAL_EXPEDITED) != 0) return false;
  registered_pid.store(pid, std::memory_order_release);
  return true;
}

void membarrier_global() {
  // Also a full barrier for the caller. Without the expedited command nobody registers, so no
  // fast path relies on this.
  if (supported()) (void)membarrier(MEMBARRIER_CMD_GLOBAL_EXPEDITED);
}

}  // namespace multiproc::detail
