// How a connection's descriptor reaches another process (CPython's resource_sharer.py).
//
// The sender cannot know, when it encodes a Connection, which process will decode it or how that
// process was started (a Process argument is encoded at construction; a pool task or queue item
// may be decoded much later). So the sender keeps a duplicate of the descriptor under a random
// 128-bit token and serves it, once, over a Unix socket in a directory only this user can enter,
// from a thread started on first use. The receiver connects, sends the token and gets the
// descriptor by SCM_RIGHTS. The token is the capability: a process of the same user that does
// not know it gets nothing.
#include <fcntl.h>
#include <poll.h>
#include <pthread.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>
#include <cerrno>
#include <cstring>
#include <map>
#include <mutex>
#include <new>
#include <system_error>
#include <thread>

#include <multiproc/connection.hpp>
#include "connection/io.hpp"
#include "process/children.hpp"

namespace multiproc::detail {
namespace {

constexpr size_t kTokenBytes = 16;

struct Sharer {
  std::mutex mu;
  pid_t pid = -1;
  int listen_fd = -1;
  std::string dir, path;
  std::map<std::string, int> fds;
  // The serving thread. It ends itself when nothing is left to hand out; the next start joins
  // it, and only then is it no longer counted as one of multiproc's threads (so that a fork()
  // in between never sees a thread it cannot account for).
  std::thread thread;
};

Sharer& sharer() {
  static Sharer* s = new Sharer;  // never destroyed: its thread may outlive static destructors
  return *s;
}

// Called with s.mu held. A serving thread that stopped by itself (its last step under s.mu
// leaves listen_fd at -1) is joined: it has nothing left to do but return. Neither a fork() nor
// the program's exit then finds a finished thread that nobody joined.
void join_stopped_locked(Sharer& s) {
  if (s.listen_fd < 0 && s.thread.joinable()) {
    s.thread.join();
    note_internal_thread(-1);
  }
}

void cleanup_at_exit() {
  Sharer& s = sharer();
  // The serving thread may still run, and it clears these fields when it stops: read them
  // under its lock.
  std::lock_guard lk(s.mu);
  join_stopped_locked(s);
  if (s.pid != ::getpid()) return;
  if (!s.path.empty()) ::unlink(s.path.c_str());
  if (!s.dir.empty()) ::rmdir(s.dir.c_str());
}

// A forked child inherits the parent's duplicates but not its thread: it closes them and starts
// a sharer of its own when it needs one.
void atfork_prepare() {
  sharer().mu.lock();
  join_stopped_locked(sharer());
}
void atfork_parent() {
  sharer().mu.unlock();
}
void atfork_child() {
  Sharer& s = sharer();
  for (auto& [token, fd] : s.fds) ::close(fd);
  s.fds.clear();
  if (s.listen_fd >= 0) ::close(s.listen_fd);
  s.listen_fd = -1;
  s.pid = -1;
  s.path.clear();
  s.dir.clear();
  new (&s.thread) std::thread();  // the parent's thread does not exist here: forget its handle
  s.mu.unlock();
}

void send_fd(int sock, int fd) {
  const char byte = fd >= 0 ? '1' : '0';
  (void)send_with_fd(sock, &byte, 1, fd);
}

void serve(int listen_fd) {
  for (;;) {
    int c = ::accept4(listen_fd, nullptr, nullptr, SOCK_CLOEXEC);
    if (c < 0) {
      if (errno == EINTR || errno == ECONNABORTED || errno == EMFILE || errno == ENFILE) {
        if (errno == EMFILE || errno == ENFILE) ::usleep(10000);
        continue;
      }
      return;
    }
    // One short exchange per client; a client that says nothing is dropped after a while.
    timeval tv{5, 0};
    ::setsockopt(c, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
    std::string token(kTokenBytes, '\0');
    int fd = -1;
    try {
      if (conn_read_exact(c, token.data(), token.size(), true)) {
        std::lock_guard lk(sharer().mu);
        auto it = sharer().fds.find(token);
        if (it != sharer().fds.end()) {
          fd = it->second;
          sharer().fds.erase(it);
        }
      }
    } catch (const ProcessError&) {
    }
    send_fd(c, fd);
    if (fd >= 0) ::close(fd);
    ::close(c);
    // Nothing left to hand out: stop, so that no socket or directory is left behind by a
    // process that later ends without running atexit handlers (children end with _exit).
    Sharer& s = sharer();
    std::lock_guard lk(s.mu);
    if (s.fds.empty() && s.listen_fd == listen_fd) {
      ::close(listen_fd);
      ::unlink(s.path.c_str());
      ::rmdir(s.dir.c_str());
      s.listen_fd = -1;
      s.pid = -1;
      s.path.clear();
      s.dir.clear();
      return;
    }
  }
}

// Called with s.mu held.
void start_locked(Sharer& s) {
  if (s.pid == ::getpid()) return;
  static std::once_flag once;
  std::call_once(once, [] {
    pthread_atfork(atfork_prepare, atfork_parent, atfork_child);
    std::atexit(cleanup_at_exit);
  });
  s.dir = make_private_dir("multiproc-fds");
  s.path = s.dir + "/sharer";
  int fd = ::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
  sockaddr_un sa{};
  sa.sun_family = AF_UNIX;
  if (s.path.size() >= sizeof sa.sun_path) throw ProcessError("fd sharer path too long: " + s.path);
  std::memcpy(sa.sun_path, s.path.c_str(), s.path.size() + 1);
  if (fd < 0 || ::bind(fd, reinterpret_cast<sockaddr*>(&sa), sizeof sa) != 0 ||
      ::listen(fd, 128) != 0) {
    int err = errno;
    if (fd >= 0) ::close(fd);
    ::rmdir(s.dir.c_str());
    throw ProcessError("cannot start the connection sharer: " +
                       std::generic_category().message(err));
  }
  join_stopped_locked(s);  // it has finished: it left the state as we found it, under s.mu
  s.listen_fd = fd;
  s.pid = ::getpid();
  s.thread = std::thread(serve, fd);
  // Safe across fork: it holds no lock but the sharer's (see the atfork handlers) and touches
  // nothing a forked child uses, so fork() need not warn about it.
  note_internal_thread(1);
}

}  // namespace

SharedFd share_fd(int fd) {
  Sharer& s = sharer();
  std::lock_guard lk(s.mu);
  start_locked(s);
  int dup = ::fcntl(fd, F_DUPFD_CLOEXEC, 0);
  if (dup < 0)
    throw ProcessError("cannot duplicate a connection: " + std::generic_category().message(errno));
  std::string token = random_bytes(kTokenBytes);
  s.fds[token] = dup;
  return SharedFd{s.path, token};
}

int fetch_shared_fd(const SharedFd& ref) {
  if (ref.token.size() != kTokenBytes || ref.address.empty() || ref.address[0] != '/')
    throw ProcessError("malformed connection handle");
  sockaddr_un sa{};
  sa.sun_family = AF_UNIX;
  if (ref.address.size() >= sizeof sa.sun_path) throw ProcessError("malformed connection handle");
  std::memcpy(sa.sun_path, ref.address.c_str(), ref.address.size() + 1);
  int c = ::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (c < 0 || ::connect(c, reinterpret_cast<sockaddr*>(&sa), sizeof sa) != 0) {
    int err = errno;
    if (c >= 0) ::close(c);
    throw ProcessError(
        "cannot receive a connection: the process that sent it is gone or unreachable (" +
        std::generic_category().message(err) + ")");
  }
  int fd = -1;
  try {
    conn_write_all(c, ref.token.data(), ref.token.size());
    char byte = 0;
    if (recv_with_fd(c, &byte, 1, &fd) != 1 && fd >= 0) {
      ::close(fd);
      fd = -1;
    }
  } catch (const ProcessError&) {
  }
  ::close(c);
  if (fd < 0)
    throw ProcessError(
        "cannot receive a connection: its sender no longer holds it (a connection handle can be "
        "received once)");
  return fd;
}

}  // namespace multiproc::detail
