#include <multiproc/detail/resource_tracker.hpp>

#include <fcntl.h>
#include <poll.h>
#include <pthread.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <sys/types.h>
#include <unistd.h>
#include <atomic>
#include <cerrno>
#include <csignal>
#include <cstring>
#include <mutex>
#include <string>
#include <string_view>

namespace multiproc::detail {
namespace {

std::mutex g_mu;
int g_fd = -1;
// A fork (the pool's monitor thread replacing a worker, say) must not copy this lock held.
[[maybe_unused]] const int g_atfork =
    pthread_atfork([] { g_mu.lock(); }, [] { g_mu.unlock(); }, [] { g_mu.unlock(); });

// ---- the tracker process: system calls only (it is forked from a possibly threaded parent) ----

constexpr size_t kSlots = 1 << 16;
constexpr size_t kNameLen = 64;
struct Slot {
  char name[kNameLen];  // "" = empty, "\x01" = removed
};

size_t hash_name(const char* s) {
  size_t h = 1469598103934665603ULL;
  for (; *s; ++s) h = (h ^ static_cast<unsigned char>(*s)) * 1099511628211ULL;
  return h;
}

void table_add(Slot* t, const char* name) {
  size_t i = hash_name(name) & (kSlots - 1);
  for (size_t n = 0; n < kSlots; ++n, i = (i + 1) & (kSlots - 1)) {
    if (t[i].name[0] == 0 || t[i].name[0] == 1) {
      std::strncpy(t[i].name, name, kNameLen - 1);
      return;
    }
    if (std::strcmp(t[i].name, name) == 0) return;
  }
}

void table_remove(Slot* t, const char* name) {
  size_t i = hash_name(name) & (kSlots - 1);
  for (size_t n = 0; n < kSlots; ++n, i = (i + 1) & (kSlots - 1)) {
    if (t[i].name[0] == 0) return;
    if (std::strcmp(t[i].name, name) == 0) {
      t[i].name[0] = 1;
      return;
    }
  }
}

// ---- processes of the tree, killed when the program's main process ends ----
//
// A pid alone could be reused once its process is reaped; each entry also keeps the process's
// start time (/proc/<pid>/stat, field 22), and a pid is only ever signalled while both match.

constexpr size_t kProcSlots = 1 << 13;
struct ProcSlot {
  pid_t pid;  // 0 = empty
  unsigned long long start;
};

// The start time of `pid`, or 0 when it does not exist (or cannot be read).
unsigned long long start_time(pid_t pid) {
  char path[40] = "/proc/";
  char digits[16];
  int n = 0;
  for (unsigned v = static_cast<unsigned>(pid); v; v /= 10)
    digits[n++] = static_cast<char>('0' + v % 10);
  size_t at = 6;
  while (n > 0) path[at++] = digits[--n];
  std::memcpy(path + at, "/stat", 6);
  int fd = open(path, O_RDONLY | O_CLOEXEC);
  if (fd < 0) return 0;
  char buf[1024];
  ssize_t len = read(fd, buf, sizeof buf - 1);
  close(fd);
  if (len <= 0) return 0;
  buf[len] = 0;
  const char* p = nullptr;
  for (ssize_t i = len - 1; i >= 0; --i)
    if (buf[i] == ')') {
      p = buf + i + 1;
      break;
    }
  if (!p) return 0;
  // After "(comm)" come " state ppid ...": field 22 (starttime) follows the 20th space.
  for (int spaces = 0; spaces < 20 && *p; ++p)
    if (*p == ' ') ++spaces;
  unsigned long long v = 0;
  for (; *p >= '0' && *p <= '9'; ++p) v = v * 10 + static_cast<unsigned long long>(*p - '0');
  return v;
}

pid_t parse_pid(const char* s) {
  long v = 0;
  for (; *s >= '0' && *s <= '9'; ++s) v = v * 10 + (*s - '0');
  return *s == 0 && v > 0 && v < (1L << 30) ? static_cast<pid_t>(v) : 0;
}

void procs_add(ProcSlot* t, pid_t pid, bool main_gone) {
  unsigned long long st = start_time(pid);
  if (st == 0) return;  // already gone
  if (main_gone) {
    kill(pid, SIGKILL);  // started while the tree was being ended
    return;
  }
  for (int pass = 0; pass < 2; ++pass) {
    for (size_t i = 0; i < kProcSlots; ++i)
      if (t[i].pid == 0) {
        t[i] = {pid, st};
        return;
      }
    // Full: drop the entries of processes that no longer exist.
    for (size_t i = 0; i < kProcSlots; ++i)
      if (start_time(t[i].pid) != t[i].start) t[i].pid = 0;
  }
}

// "pid has been reaped": dropped unless a process with that pid and start time still exists
// (the message was late and the pid is someone's again).
void procs_remove(ProcSlot* t, pid_t pid) {
  for (size_t i = 0; i < kProcSlots; ++i)
    if (t[i].pid == pid && start_time(pid) != t[i].start) t[i].pid = 0;
}

void procs_kill_all(ProcSlot* t) {
  for (size_t i = 0; i < kProcSlots; ++i)
    if (t[i].pid != 0 && start_time(t[i].pid) == t[i].start) kill(t[i].pid, SIGKILL);
}

// How long, after the main process ended and the tree was killed, the tracker waits for the last
// holder of its socket (a process it was not told about) before it cleans up regardless.
constexpr int kLingerMs = 3000;

[[noreturn]] void tracker_main(int rfd, pid_t main_pid) {
  // Ignore the terminal's signals: the tracker must outlive a Ctrl-C to clean up after it. Its own
  // process group keeps it out of a kill of the program's group (kill -9 -PGID) too.
  struct sigaction ign {};
  ign.sa_handler = SIG_IGN;
  sigaction(SIGINT, &ign, nullptr);
  sigaction(SIGTERM, &ign, nullptr);
  sigaction(SIGHUP, &ign, nullptr);
  sigaction(SIGPIPE, &ign, nullptr);
  setpgid(0, 0);
  // Hold nothing but our pipe: a tracker keeping a caller's stdout pipe open would stall readers.
  int devnull = open("/dev/null", O_RDWR);
  if (rfd != 3) {
    dup2(rfd, 3);
    rfd = 3;
  }
  if (devnull >= 0) {
    dup2(devnull, 0);
    dup2(devnull, 1);
    dup2(devnull, 2);
  }
  syscall(SYS_close_range, 4U, ~0U, 0U);
  // The main process (the one that started us) ends, whatever the way: its pidfd says when. The
  // getppid() re-check closes the window in which it died before the pidfd was opened.
  int main_fd = static_cast<int>(syscall(SYS_pidfd_open, main_pid, 0));
  bool main_gone = getppid() != main_pid;
  auto* table = static_cast<Slot*>(mmap(nullptr, kSlots * sizeof(Slot), PROT_READ | PROT_WRITE,
                                        MAP_PRIVATE | MAP_ANONYMOUS, -1, 0));
  auto* procs =
      static_cast<ProcSlot*>(mmap(nullptr, kProcSlots * sizeof(ProcSlot), PROT_READ | PROT_WRITE,
                                  MAP_PRIVATE | MAP_ANONYMOUS, -1, 0));
  if (table == MAP_FAILED || procs == MAP_FAILED) _exit(1);
  char buf[8192];
  size_t have = 0;
  for (;;) {
    // Until the main process ends: watch it (by pidfd, or by polling getppid() without one).
    // After: wait a while for the socket's last holders, then clean up regardless.
    pollfd fds[2] = {{rfd, POLLIN, 0}, {main_gone ? -1 : main_fd, POLLIN, 0}};
    int timeout = main_gone ? kLingerMs : (main_fd >= 0 ? -1 : 250);
    int r = poll(fds, 2, timeout);
    if (r < 0 && errno == EINTR) continue;
    if (!main_gone && (fds[1].revents || getppid() != main_pid)) {
      main_gone = true;
      procs_kill_all(procs);
      continue;
    }
    if (r == 0 && main_gone) break;
    if (!(fds[0].revents)) continue;
    ssize_t n = read(rfd, buf + have, sizeof buf - have);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) break;
    have += static_cast<size_t>(n);
    size_t start = 0;
    for (size_t i = 0; i < have; ++i) {
      if (buf[i] != '\n') continue;
      buf[i] = 0;
      const char* line = buf + start;
      if ((line[0] == 'R' || line[0] == 'U') && line[1] == ' ' && line[2] == '/' &&
          std::strlen(line + 2) < kNameLen) {
        if (line[0] == 'R')
          table_add(table, line + 2);
        else
          table_remove(table, line + 2);
      } else if ((line[0] == 'P' || line[0] == 'X') && line[1] == ' ') {
        if (pid_t pid = parse_pid(line + 2)) {
          if (line[0] == 'P')
            procs_add(procs, pid, main_gone);
          else
            procs_remove(procs, pid);
        }
      }
      start = i + 1;
    }
    std::memmove(buf, buf + start, have - start);
    have -= start;
    if (have == sizeof buf) have = 0;  // an over-long line: drop it
  }
  // Every process of the tree is gone: remove what they left behind.
  char path[kNameLen + 16];
  for (size_t i = 0; i < kSlots; ++i) {
    if (table[i].name[0] != '/') continue;
    std::strcpy(path, "/dev/shm");
    std::strcat(path, table[i].name);
    unlink(path);
  }
  _exit(0);
}

int start_tracker_locked() {
  // A SEQPACKET pair rather than a pipe: each line arrives whole, writers never get SIGPIPE
  // (MSG_NOSIGNAL), and the reader sees end-of-file once every process holding the other end is
  // gone.
  int fds[2];
  if (socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0, fds) != 0) return -1;
  // A raw fork: glibc's fork() would run the pthread_atfork handlers, one of which takes g_mu,
  // which we hold. The child makes system calls only, so it needs none of glibc's fork care.
  pid_t main_pid = getpid();
  pid_t pid = static_cast<pid_t>(syscall(SYS_clone, SIGCHLD, nullptr, nullptr, nullptr, 0));
  if (pid < 0) {
    close(fds[0]);
    close(fds[1]);
    return -1;
  }
  if (pid == 0) {
    close(fds[1]);
    tracker_main(fds[0], main_pid);
  }
  close(fds[0]);
  return fds[1];
}

void send(char op, std::string_view name) {
  if (name.size() + 3 > 512) return;  // names are short; PIPE_BUF keeps each line atomic
  int fd = tracker_fd();
  if (fd < 0) return;
  char line[520];
  line[0] = op;
  line[1] = ' ';
  std::memcpy(line + 2, name.data(), name.size());
  line[name.size() + 2] = '\n';
  ssize_t len = static_cast<ssize_t>(name.size() + 3);
  while (::send(fd, line, static_cast<size_t>(len), MSG_NOSIGNAL) < 0 && errno == EINTR) {
  }
}

}  // namespace

int tracker_fd() {
  std::lock_guard lk(g_mu);
  if (g_fd < 0) {
    g_fd = start_tracker_locked();
  }
  return g_fd;
}

void tracker_adopt(int fd) {
  std::lock_guard lk(g_mu);
  fcntl(fd, F_SETFD, FD_CLOEXEC);
  g_fd = fd;
}

void tracker_register(const std::string& segment_name) {
  send('R', segment_name);
}
void tracker_unregister(const std::string& segment_name) {
  send('U', segment_name);
}

void tracker_watch_process(pid_t pid) {
  send('P', std::to_string(pid));
}
void tracker_forget_process(pid_t pid) {
  send('X', std::to_string(pid));
}

}  // namespace multiproc::detail
