// Internal helpers shared by the start methods.
#pragma once

#include <sys/syscall.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <unistd.h>
#include <cerrno>
#include <optional>

namespace multiproc::detail {

// Python's exitcode: the exit status, or minus the signal number that killed the process.
inline int exitcode_from_status(int status) {
  if (WIFSIGNALED(status)) return -WTERMSIG(status);
  if (WIFEXITED(status)) return WEXITSTATUS(status);
  return 255;
}

// Reaps `pid` if it has ended (WNOHANG).
inline std::optional<int> reap_nohang(pid_t pid) {
  int status = 0;
  pid_t r;
  do r = ::waitpid(pid, &status, WNOHANG);
  while (r < 0 && errno == EINTR);
  if (r == pid) return exitcode_from_status(status);
  // Someone else reaped it (a waitpid(-1) elsewhere in the program): it has ended, code unknown.
  if (r < 0 && errno == ECHILD) return 255;
  return std::nullopt;
}

// A descriptor that becomes readable when `pid` ends (Linux 5.3+).
inline int open_pidfd(pid_t pid) {
  return static_cast<int>(::syscall(SYS_pidfd_open, pid, 0));
}

}  // namespace multiproc::detail
