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

class PopenSpawn final : public Popen {
 public:
  explicit PopenSpawn(pid_t pid) {
    pid_ = pid;
    sentinel_fd_ = open_pidfd(pid);
  }
  std::optional<int> poll_exit() override { return reap_nohang(pid_); }
};

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
                         std::string(strerror(errno)));
    p += w;
    n -= static_cast<size_t>(w);
  }
}

}  // namespace

pid_t spawn_self(const char* kind, const int (&fds)[3]) {
  const std::string& exe = saved_executable();
  if (exe.empty()) throw ProcessError("cannot find this program's executable (/proc/self/exe)");
  posix_spawn_file_actions_t fa;
  posix_spawn_file_actions_init(&fa);
  char var[128];
  int at[3] = {-1, -1, -1};
  for (int i = 0; i < 3; ++i)
    if (fds[i] >= 0) {
      at[i] = kLaunchFdBase + i;
      posix_spawn_file_actions_adddup2(&fa, fds[i], at[i]);  // dup2 clears close-on-exec
    }
  std::snprintf(var, sizeof var, "%s=%s:%d:%d:%d", kLaunchVar, kind, at[0], at[1], at[2]);
  std::vector<char*> envp;
  for (char** e = environ; e && *e; ++e)
    if (std::strncmp(*e, kLaunchVar, std::strlen(kLaunchVar)) != 0) envp.push_back(*e);
  envp.push_back(var);
  envp.push_back(nullptr);
  std::string arg0 = exe;
  char* argv[] = {arg0.data(), nullptr};
  // The child starts with default signal dispositions and an empty mask.
  posix_spawnattr_t attr;
  posix_spawnattr_init(&attr);
  sigset_t none, all;
  sigemptyset(&none);
  sigfillset(&all);
  posix_spawnattr_setsigmask(&attr, &none);
  posix_spawnattr_setsigdefault(&attr, &all);
  posix_spawnattr_setflags(&attr, POSIX_SPAWN_SETSIGMASK | POSIX_SPAWN_SETSIGDEF);
  pid_t pid = -1;
  int rc = posix_spawn(&pid, exe.c_str(), &fa, &attr, argv, envp.data());
  posix_spawn_file_actions_destroy(&fa);
  posix_spawnattr_destroy(&attr);
  if (rc != 0) throw ProcessError("cannot execute " + exe + ": " + strerror(rc));
  return pid;
}

std::unique_ptr<Popen> launch_spawn(const std::string& payload) {
  int memfd = memfd_create("multiproc-task", MFD_CLOEXEC);
  if (memfd < 0) throw ProcessError("memfd_create failed: " + std::string(strerror(errno)));
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
  auto popen = std::make_unique<PopenSpawn>(pid);
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
