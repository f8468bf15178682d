// The spawn start method: a fresh execution of the same program. The task travels in a memfd
// (so a large payload never blocks the parent on a pipe), read by init() in the child.
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <spawn.h>
#include <sys/mman.h>
#include <unistd.h>
#include <atomic>
#include <cerrno>
#include <cstring>
#include <string>
#include <system_error>
#include <vector>

#include <multiproc/detail/child.hpp>
#include <multiproc/detail/popen.hpp>
#include <multiproc/detail/resource_tracker.hpp>
#include <multiproc/errors.hpp>
#include "exit_status.hpp"
#include "launch_env.hpp"
#include "spawn_exec.hpp"

extern char** environ;

namespace multiproc::detail {
namespace {

constexpr const char* kRunningExecutable = "/proc/self/exe";

// The first spawned child proves that main() calls init(): it acknowledges once it has read its
// task. Later children run the same program, so the parent does not wait for them.
std::atomic<bool> g_program_checked{false};
constexpr int kAckTimeoutMs = 20000;

void write_all(int fd, const char* p, size_t n) {
  while (n > 0) {
    ssize_t w = ::write(fd, p, n);
    if (w < 0 && errno == EINTR) continue;
    if (w < 0)
      throw ProcessError("cannot write the task for a spawned child: " +
                         std::generic_category().message(errno));
    p += w;
    n -= static_cast<size_t>(w);
  }
}

}  // namespace

namespace {
// Every setup call is checked: a descriptor action that silently failed used to surface later as
// a child that "did not call init()" or a fork server that refused connections.
void check_spawn_call(int rc, const char* call) {
  if (rc != 0)
    throw ProcessError(std::string("cannot start a process: ") + call +
                       " failed: " + std::generic_category().message(rc));
}

struct SpawnSetup {
  posix_spawn_file_actions_t fa;
  posix_spawnattr_t attr;
  bool fa_ok = false, attr_ok = false;
  ~SpawnSetup() {
    if (fa_ok) posix_spawn_file_actions_destroy(&fa);
    if (attr_ok) posix_spawnattr_destroy(&attr);
  }
};
}  // namespace

pid_t spawn_self(const char* kind, const int (&fds)[3]) {
  SpawnSetup s;
  check_spawn_call(posix_spawn_file_actions_init(&s.fa), "posix_spawn_file_actions_init");
  s.fa_ok = true;
  // The descriptors keep their numbers in the child: a dup2 onto itself only clears
  // close-on-exec (POSIX 2024, glibc 2.29+). Fixed numbers would break under a low `ulimit -n`.
  for (int fd : fds)
    if (fd >= 0)
      check_spawn_call(posix_spawn_file_actions_adddup2(&s.fa, fd, fd),
                       "posix_spawn_file_actions_adddup2");
  char var[128];
  std::snprintf(var, sizeof var, "%s=%s:%d:%d:%d", kLaunchVar, kind, fds[0], fds[1], fds[2]);
  std::vector<char*> envp;
  for (char** e = environ; e && *e; ++e)
    if (std::strncmp(*e, kLaunchVar, std::strlen(kLaunchVar)) != 0) envp.push_back(*e);
  envp.push_back(var);
  envp.push_back(nullptr);
  // argv[0] is the program's name as it was started (for ps); what runs is the binary that is
  // running now: /proc/self/exe, resolved in the spawning child that shares our memory, names
  // the very file this process executes, even if the path was since replaced on disk.
  std::string arg0 = saved_executable();
  if (arg0.empty()) arg0 = "multiproc-child";
  char* argv[] = {arg0.data(), nullptr};
  // The child starts with default signal dispositions and an empty mask.
  check_spawn_call(posix_spawnattr_init(&s.attr), "posix_spawnattr_init");
  s.attr_ok = true;
  sigset_t none, all;
  sigemptyset(&none);
  sigfillset(&all);
  check_spawn_call(posix_spawnattr_setsigmask(&s.attr, &none), "posix_spawnattr_setsigmask");
  check_spawn_call(posix_spawnattr_setsigdefault(&s.attr, &all), "posix_spawnattr_setsigdefault");
  check_spawn_call(
      posix_spawnattr_setflags(&s.attr, POSIX_SPAWN_SETSIGMASK | POSIX_SPAWN_SETSIGDEF),
      "posix_spawnattr_setflags");
  pid_t pid = -1;
  int rc = posix_spawn(&pid, kRunningExecutable, &s.fa, &s.attr, argv, envp.data());
  if (rc != 0)
    throw ProcessError(std::string("cannot start a process: posix_spawn of ") + kRunningExecutable +
                       " (this program, " + arg0 +
                       ") failed: " + std::generic_category().message(rc) +
                       (rc == ENOENT ? " (is /proc mounted?)" : ""));
  return pid;
}

std::unique_ptr<Popen> launch_spawn(const std::string& payload) {
  refuse_if_children_autoreaped("spawn");
  SentinelReserve reserve;
  int memfd = memfd_create("multiproc-task", MFD_CLOEXEC);
  if (memfd < 0)
    throw ProcessError("memfd_create failed: " + std::generic_category().message(errno));
  try {
    write_all(memfd, payload.data(), payload.size());
  } catch (...) {
    ::close(memfd);
    throw;
  }
  ::lseek(memfd, 0, SEEK_SET);
  bool check = !g_program_checked.load();
  int ack[2] = {-1, -1};
  if (check && pipe2(ack, O_CLOEXEC) != 0) check = false;
  int fds[3] = {memfd, check ? ack[1] : -1, tracker_fd()};
  pid_t pid;
  try {
    pid = spawn_self("spawn", fds);
  } catch (...) {
    ::close(memfd);
    if (check) ::close(ack[0]), ::close(ack[1]);
    throw;
  }
  ::close(memfd);
  tracker_watch_process(pid);
  int pidfd;
  try {
    pidfd = reserve.open_for(pid);
  } catch (...) {
    if (check) ::close(ack[0]), ::close(ack[1]);
    throw;
  }
  auto popen = std::make_unique<PopenOwnChild>(pid, pidfd);
  if (check) {
    ::close(ack[1]);
    pollfd pfd{ack[0], POLLIN, 0};
    int r;
    do r = ::poll(&pfd, 1, kAckTimeoutMs);
    while (r < 0 && errno == EINTR);
    char c = 0;
    bool acked = r > 0 && ::read(ack[0], &c, 1) == 1;
    ::close(ack[0]);
    if (!acked) {
      popen->send_signal(SIGKILL);
      auto code = popen->wait(Deadline::never());
      throw ProcessError(
          "a spawned child ended (exit code " + std::to_string(code.value_or(-1)) +
          ") before it received its task: the program's main() must call "
          "multiproc::init(argc, argv) on its first line, before anything else runs");
    }
    g_program_checked.store(true);
  }
  return popen;
}

}  // namespace multiproc::detail
