#include <multiproc/detail/resource_tracker.hpp>

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <unistd.h>
#include <atomic>
#include <cerrno>
#include <csignal>
#include <cstring>
#include <mutex>
#include <pthread.h>

namespace multiproc::detail {
namespace {

std::mutex g_mu;
int g_fd = -1;
// A fork (the pool's monitor thread replacing a worker, say) must not copy this lock held.
[[maybe_unused]] const int g_atfork = pthread_atfork([] { g_mu.lock(); }, [] { g_mu.unlock(); },
                                                     [] { g_mu.unlock(); });

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

[[noreturn]] void tracker_main(int rfd) {
  // Ignore the terminal's signals: the tracker must outlive a Ctrl-C to clean up after it.
  struct sigaction ign {};
  ign.sa_handler = SIG_IGN;
  sigaction(SIGINT, &ign, nullptr);
  sigaction(SIGTERM, &ign, nullptr);
  sigaction(SIGHUP, &ign, nullptr);
  sigaction(SIGPIPE, &ign, nullptr);
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
  auto* table = static_cast<Slot*>(mmap(nullptr, kSlots * sizeof(Slot), PROT_READ | PROT_WRITE,
                                        MAP_PRIVATE | MAP_ANONYMOUS, -1, 0));
  if (table == MAP_FAILED) _exit(1);
  char buf[8192];
  size_t have = 0;
  for (;;) {
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
  pid_t pid = static_cast<pid_t>(syscall(SYS_clone, SIGCHLD, nullptr, nullptr, nullptr, 0));
  if (pid < 0) {
    close(fds[0]);
    close(fds[1]);
    return -1;
  }
  if (pid == 0) {
    close(fds[1]);
    tracker_main(fds[0]);
  }
  close(fds[0]);
  return fds[1];
}

void send(char op, const std::string& name) {
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

}  // namespace multiproc::detail
