// The fork start method: the child is a copy of the parent and runs the task from its memory.
#include <dirent.h>
#include <unistd.h>
#include <atomic>
#include <cstdio>
#include <iostream>
#include <system_error>

#include <multiproc/detail/child.hpp>
#include <multiproc/detail/popen.hpp>
#include <multiproc/detail/resource_tracker.hpp>
#include <multiproc/detail/segment.hpp>
#include <multiproc/errors.hpp>
#include "children.hpp"
#include "exit_status.hpp"

namespace multiproc::detail {
namespace {

std::atomic<int> g_internal_threads{0};
std::atomic<bool> g_warned{false};

int count_threads() {
  DIR* d = opendir("/proc/self/task");
  if (!d) return 1;
  int n = 0;
  while (dirent* e = readdir(d))
    if (e->d_name[0] != '.') ++n;
  closedir(d);
  return n;
}

// Python 3.12 warns too: a thread holding a lock at fork() leaves it locked forever in the child.
void warn_if_threaded() {
  if (g_warned.load(std::memory_order_relaxed)) return;
  int others = count_threads() - 1 - g_internal_threads.load(std::memory_order_relaxed);
  if (others > 0 && !g_warned.exchange(true))
    std::fprintf(stderr,
                 "multiproc: warning: this process (pid %d) is multi-threaded; fork() may "
                 "deadlock the child. Use StartMethod::forkserver (or spawn) instead.\n",
                 static_cast<int>(getpid()));
}

}  // namespace

void note_internal_thread(int delta) {
  g_internal_threads.fetch_add(delta);
}

std::unique_ptr<Popen> launch_fork(const std::string& payload) {
  refuse_if_children_autoreaped("fork");
  SentinelReserve reserve;
  // The tracker ends the child if this program ends first; started before fork so that the
  // child shares this process's tracker instead of starting its own.
  (void)tracker_fd();
  warn_if_threaded();
  // Unwritten stdio buffers would be written twice, by parent and child (Python flushes too).
  std::cout.flush();
  std::cerr.flush();
  std::fflush(nullptr);
  segments_before_fork();
  pid_t pid = ::fork();
  if (pid == 0) {
    reserve.release();  // the slot was the parent's
    segments_after_fork_child();
    forget_children_after_fork();
    g_internal_threads.store(0);
    run_child(payload.data(), payload.size());
  }
  segments_after_fork_parent(pid < 0);
  if (pid < 0) throw ProcessError("fork() failed: " + std::generic_category().message(errno));
  tracker_watch_process(pid);
  return std::make_unique<PopenOwnChild>(pid, reserve.open_for(pid));
}

}  // namespace multiproc::detail
