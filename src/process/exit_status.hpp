// Internal helpers shared by the start methods.
#pragma once

#include <signal.h>
#include <sys/eventfd.h>
#include <sys/syscall.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <unistd.h>
#include <cerrno>
#include <cstring>
#include <optional>
#include <string>
#include <system_error>

#include <multiproc/detail/popen.hpp>
#include <multiproc/detail/resource_tracker.hpp>
#include <multiproc/errors.hpp>

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

// With SIGCHLD ignored (or SA_NOCLDWAIT) the kernel reaps our children itself and discards their
// exit status: waitpid() could only say "gone", and the exit code would be a guess. The fork
// server reaps its own children, so it still reports the truth; fork and spawn refuse.
inline void refuse_if_children_autoreaped(const char* method) {
  struct sigaction sa {};
  if (::sigaction(SIGCHLD, nullptr, &sa) != 0) return;
  bool ignored = !(sa.sa_flags & SA_SIGINFO) && sa.sa_handler == SIG_IGN;
  if (ignored || (sa.sa_flags & SA_NOCLDWAIT))
    throw ProcessError(std::string("cannot start a process with the '") + method +
                       "' start method while SIGCHLD is ignored (SIG_IGN or SA_NOCLDWAIT): the "
                       "kernel would discard its exit code; restore SIGCHLD to SIG_DFL, or use "
                       "the forkserver start method");
}

// Keeps one descriptor slot free until the child's pidfd (its sentinel) is open, so that the
// pidfd cannot fail for want of a descriptor once the child exists. Taken before the child is
// started: at the descriptor limit, start() fails before anything runs.
class SentinelReserve {
 public:
  SentinelReserve() : fd_(::eventfd(0, EFD_CLOEXEC)) {
    if (fd_ < 0)
      throw ProcessError(std::string("cannot start a process: no file descriptor free for its "
                                     "sentinel (eventfd: ") +
                         std::generic_category().message(errno) + ")");
  }
  ~SentinelReserve() {
    if (fd_ >= 0) ::close(fd_);
  }
  void release() {
    if (fd_ >= 0) ::close(fd_);
    fd_ = -1;
  }
  SentinelReserve(const SentinelReserve&) = delete;
  SentinelReserve& operator=(const SentinelReserve&) = delete;

  // The pidfd of the child just started. If even so it cannot be had (a kernel without
  // pidfd_open, another thread took the slot), the child is killed and reaped: a Process with
  // no sentinel could never be joined.
  int open_for(pid_t pid) {
    int fd = open_pidfd(pid);
    if (fd < 0 && (errno == EMFILE || errno == ENFILE) && fd_ >= 0) {
      ::close(fd_);
      fd_ = -1;
      fd = open_pidfd(pid);
    }
    if (fd >= 0) return fd;
    int err = errno;
    ::kill(pid, SIGKILL);
    int status;
    while (::waitpid(pid, &status, 0) < 0 && errno == EINTR) {
    }
    throw ProcessError(std::string("cannot start a process: pidfd_open failed (") +
                       std::generic_category().message(err) +
                       "); the child was killed: without a pidfd it "
                       "has no sentinel and could not be joined");
  }

 private:
  int fd_;
};

// A child that this process started itself (fork, spawn): reaped here with waitpid, its
// sentinel the pidfd that SentinelReserve::open_for opened.
class PopenOwnChild final : public Popen {
 public:
  PopenOwnChild(pid_t pid, int pidfd) {
    pid_ = pid;
    sentinel_fd_ = pidfd;
  }
  std::optional<int> poll_exit() override {
    auto code = reap_nohang(pid_);
    if (code) tracker_forget_process(pid_);
    return code;
  }
};

}  // namespace multiproc::detail
