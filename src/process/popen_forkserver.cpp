// The forkserver start method, client side. A server process, executed fresh and single-threaded
// the first time it is needed, forks each child; it reports the child's pid and, later, its exit
// code over a socket pair created per child (the status socket, also the child's sentinel).
#include <fcntl.h>
#include <pthread.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>
#include <cerrno>
#include <cstring>
#include <mutex>
#include <random>
#include <system_error>

#include <multiproc/detail/child.hpp>
#include <multiproc/detail/popen.hpp>
#include <multiproc/detail/resource_tracker.hpp>
#include <multiproc/errors.hpp>
#include "exit_status.hpp"
#include "forkserver_protocol.hpp"
#include "spawn_exec.hpp"

namespace multiproc::detail {
namespace {

class PopenForkServer final : public Popen {
 public:
  PopenForkServer(pid_t pid, int status_fd) {
    pid_ = pid;
    sentinel_fd_ = status_fd;
  }
  std::optional<int> poll_exit() override {
    int32_t code = 0;
    ssize_t n = ::recv(sentinel_fd_, &code, sizeof code, MSG_DONTWAIT);
    if (n == static_cast<ssize_t>(sizeof code)) return code;
    if (n == 0) return 255;  // the server went away before it could report
    return std::nullopt;
  }
};

struct Client {
  std::mutex mu;
  pid_t owner = 0;  // the process these fields belong to (forked children reconnect)
  int conn = -1;
  sockaddr_un addr{};
  socklen_t addr_len = 0;
  bool started = false;
  int alive_w = -1;
  pid_t server = -1;
  pid_t server_parent = 0;  // the process that started `server` (only it can reap it)
  uint64_t generation = 0;  // bumped when a dead server is forgotten
};
Client& client() {
  static auto* c = [] {
    auto* fresh = new Client;
    // Launching holds this lock; a fork meanwhile (from another thread) must not copy it held.
    pthread_atfork([] { client().mu.lock(); }, [] { client().mu.unlock(); },
                   [] { client().mu.unlock(); });
    return fresh;
  }();
  return *c;
}

std::string errno_text() {
  return std::generic_category().message(errno);
}

void start_server_locked(Client& c) {
  std::mt19937_64 rng{std::random_device{}()};
  char name[64];
  int len = std::snprintf(name, sizeof name, "multiproc-forkserver-%d-%016llx",
                          static_cast<int>(getpid()), static_cast<unsigned long long>(rng()));
  c.addr = {};
  c.addr.sun_family = AF_UNIX;
  c.addr.sun_path[0] = 0;  // abstract namespace: no file to clean up
  std::memcpy(c.addr.sun_path + 1, name, static_cast<size_t>(len));
  c.addr_len = static_cast<socklen_t>(offsetof(sockaddr_un, sun_path) + 1 + len);
  int lfd = ::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (lfd < 0) throw ProcessError("forkserver: socket: " + errno_text());
  if (::bind(lfd, reinterpret_cast<sockaddr*>(&c.addr), c.addr_len) != 0) {
    std::string err = errno_text();
    ::close(lfd);
    throw ProcessError("forkserver: bind: " + err);
  }
  if (::listen(lfd, 64) != 0) {
    std::string err = errno_text();
    ::close(lfd);
    throw ProcessError("forkserver: listen: " + err);
  }
  int alive[2];
  if (pipe2(alive, O_CLOEXEC) != 0) {
    std::string err = errno_text();
    ::close(lfd);
    throw ProcessError("forkserver: pipe2: " + err);
  }
  int fds[3] = {lfd, alive[0], tracker_fd()};
  try {
    c.server = spawn_self("forkserver", fds);
    c.server_parent = getpid();
    tracker_watch_process(c.server);
  } catch (...) {
    ::close(lfd);
    ::close(alive[0]);
    ::close(alive[1]);
    throw;
  }
  ::close(lfd);
  ::close(alive[0]);
  c.alive_w = alive[1];
  c.started = true;
}

// Whether a fork server still listens at c.addr: its listening socket closes when it dies,
// whoever its parent is. When that cannot be told (no descriptor), it is taken as alive.
bool server_listening(const Client& c) {
  int fd = ::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0) return true;
  int r = ::connect(fd, reinterpret_cast<const sockaddr*>(&c.addr), c.addr_len);
  int err = errno;
  ::close(fd);
  return r == 0 || (err != ECONNREFUSED && err != ENOENT);
}

// Forgets a dead server so that the next launch starts a new one (CPython does the same); reaps
// it when it is this process's child. Returns its exit code when known.
std::optional<int> forget_server_locked(Client& c) {
  std::optional<int> code;
  if (c.server > 0 && c.server_parent == getpid()) {
    // Its sockets close while it exits: give it a moment to become reapable.
    for (int i = 0; i < 1000 && !(code = reap_nohang(c.server)); ++i) ::usleep(1000);
    if (code) tracker_forget_process(c.server);
  }
  if (c.conn >= 0) ::close(c.conn);
  c.conn = -1;
  if (c.alive_w >= 0) ::close(c.alive_w);
  c.alive_w = -1;
  c.started = false;
  c.server = -1;
  ++c.generation;
  return code;
}

// Returns -1 when the server is gone (and forgotten).
int connect_locked(Client& c) {
  pid_t self = getpid();
  if (c.owner != self) {
    // Inherited through fork(): the connection belongs to the parent; the server is shared.
    c.conn = -1;
    c.owner = self;
  }
  if (!c.started) start_server_locked(c);
  if (c.conn >= 0) return c.conn;
  int fd = ::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0) throw ProcessError("forkserver: socket: " + errno_text());
  if (::connect(fd, reinterpret_cast<sockaddr*>(&c.addr), c.addr_len) != 0) {
    int err = errno;
    ::close(fd);
    if (err == ECONNREFUSED || err == ENOENT) return -1;
    throw ProcessError("forkserver: cannot connect to the fork server: " +
                       std::generic_category().message(err));
  }
  c.conn = fd;
  return fd;
}

[[noreturn]] void throw_too_large(uint64_t size) {
  throw ProcessError("forkserver: the process's launch data (its task and encoded arguments) is " +
                     std::to_string(size) + " bytes, over the fork server's limit of " +
                     std::to_string(kMaxLaunchPayload) +
                     " bytes; pass large data through a Queue, a Pipe or SharedMemory");
}

struct Attempt {
  std::unique_ptr<Popen> popen;  // null: the server was gone
  std::optional<int> server_exit;
};

Attempt try_launch(const std::string& payload) {
  if (payload.size() > kMaxLaunchPayload) throw_too_large(payload.size());
  int status[2];
  if (::socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, status) != 0)
    throw ProcessError("forkserver: socketpair: " + errno_text());
  Client& c = client();
  uint64_t generation;
  {
    std::lock_guard lk(c.mu);
    int conn;
    try {
      conn = connect_locked(c);
    } catch (...) {
      ::close(status[0]);
      ::close(status[1]);
      throw;
    }
    generation = c.generation;
    if (conn < 0 || !send_request(conn, payload, status[1])) {
      int err = errno;
      ::close(status[0]);
      ::close(status[1]);
      if (conn >= 0) ::close(c.conn);
      c.conn = -1;
      if (conn >= 0 && server_listening(c))
        throw ProcessError("forkserver: cannot send a request to the fork server: " +
                           std::generic_category().message(err));
      return {nullptr, forget_server_locked(c)};
    }
  }
  ::close(status[1]);
  int32_t pid = -1;
  if (!read_exact(status[0], &pid, sizeof pid) || pid <= 0) {
    ::close(status[0]);
    if (pid == kRequestTooLarge) throw_too_large(payload.size());
    std::lock_guard lk(c.mu);
    if (c.generation != generation) return {};  // another thread already replaced it
    if (!server_listening(c)) return {nullptr, forget_server_locked(c)};
    throw ProcessError(
        "forkserver: the fork server could not start the child (fork failed, or the server is "
        "at its descriptor limit)");
  }
  return {std::make_unique<PopenForkServer>(pid, status[0]), std::nullopt};
}

}  // namespace

std::unique_ptr<Popen> launch_forkserver(const std::string& payload) {
  // A server that died (killed, say) is started again on next use, once per launch.
  for (int attempt = 0;; ++attempt) {
    Attempt a = try_launch(payload);
    if (a.popen) return std::move(a.popen);
    if (a.server_exit == kExitNoInit)
      throw ProcessError(
          "the fork server exited before serving: the program's main() must call "
          "multiproc::init(argc, argv) on its first line, before anything else runs");
    if (attempt > 0)
      throw ProcessError(
          "forkserver: the fork server ended again right after it was restarted" +
          (a.server_exit ? " (exit code " + std::to_string(*a.server_exit) + ")" : std::string()));
  }
}

}  // namespace multiproc::detail
