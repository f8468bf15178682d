// The forkserver start method, client side. A server process, executed fresh and single-threaded
// the first time it is needed, forks each child; it reports the child's pid and, later, its exit
// code over a socket pair created per child (the status socket, also the child's sentinel).
#include <fcntl.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>
#include <cerrno>
#include <cstring>
#include <mutex>
#include <pthread.h>
#include <random>

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
  pid_t server = -1;  // ours when we started it; used to explain a server that died at once
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
  return std::strerror(errno);
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
  if (::bind(lfd, reinterpret_cast<sockaddr*>(&c.addr), c.addr_len) != 0 ||
      ::listen(lfd, 64) != 0) {
    ::close(lfd);
    throw ProcessError("forkserver: cannot listen: " + errno_text());
  }
  int alive[2];
  if (pipe2(alive, O_CLOEXEC) != 0) {
    ::close(lfd);
    throw ProcessError("forkserver: pipe: " + errno_text());
  }
  int fds[3] = {lfd, alive[0], tracker_fd()};
  try {
    c.server = spawn_self("forkserver", fds);
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

int connect_locked(Client& c) {
  pid_t self = getpid();
  if (c.owner != self) {
    // Inherited through fork(): the connection belongs to the parent; the server does not.
    c.conn = -1;
    c.owner = self;
  }
  if (!c.started) start_server_locked(c);
  if (c.conn >= 0) return c.conn;
  int fd = ::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0) throw ProcessError("forkserver: socket: " + errno_text());
  if (::connect(fd, reinterpret_cast<sockaddr*>(&c.addr), c.addr_len) != 0) {
    ::close(fd);
    throw ProcessError("forkserver: cannot connect to the fork server: " + errno_text());
  }
  c.conn = fd;
  return fd;
}

}  // namespace

std::unique_ptr<Popen> launch_forkserver(const std::string& payload) {
  int status[2];
  if (::socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, status) != 0)
    throw ProcessError("forkserver: socketpair: " + errno_text());
  {
    Client& c = client();
    std::lock_guard lk(c.mu);
    int conn = connect_locked(c);
    if (!send_request(conn, payload, status[1])) {
      ::close(c.conn);
      c.conn = -1;
      ::close(status[0]);
      ::close(status[1]);
      throw ProcessError("forkserver: the fork server is gone: " + errno_text());
    }
  }
  ::close(status[1]);
  int32_t pid = -1;
  if (!read_exact(status[0], &pid, sizeof pid) || pid <= 0) {
    ::close(status[0]);
    Client& c = client();
    std::lock_guard lk(c.mu);
    std::optional<int> code;
    if (c.server > 0 && c.owner == getpid()) code = reap_nohang(c.server);
    if (code) {
      // The server is gone: start a new one next time.
      c.started = false;
      if (c.conn >= 0) ::close(c.conn);
      c.conn = -1;
      if (c.alive_w >= 0) ::close(c.alive_w);
      c.alive_w = -1;
      if (*code == kExitNoInit)
        throw ProcessError(
            "the fork server exited before serving: the program's main() must call "
            "multiproc::init(argc, argv) on its first line, before anything else runs");
      throw ProcessError("the fork server exited (exit code " + std::to_string(*code) + ")");
    }
    throw ProcessError("forkserver: the fork server could not start the child");
  }
  return std::make_unique<PopenForkServer>(pid, status[0]);
}

}  // namespace multiproc::detail
