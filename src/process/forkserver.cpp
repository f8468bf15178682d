// The fork server's loop. It is a fresh execution of the program, entered from init() before
// main() does anything, so it is single-threaded and holds no locks: forking from it is safe.
#include "forkserver.hpp"

#include <poll.h>
#include <sys/prctl.h>
#include <sys/signalfd.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>
#include <cerrno>
#include <csignal>
#include <map>
#include <string>
#include <vector>

#include <multiproc/detail/child.hpp>
#include <multiproc/detail/resource_tracker.hpp>
#include "exit_status.hpp"
#include "forkserver_protocol.hpp"

namespace multiproc::detail {

void forkserver_main(int listen_fd, int alive_fd) {
  // Terminal signals are for the program, not for us: we leave when the program's main process
  // is gone (alive_fd reports end-of-file).
  signal(SIGINT, SIG_IGN);
  sigset_t chld, old;
  sigemptyset(&chld);
  sigaddset(&chld, SIGCHLD);
  pthread_sigmask(SIG_BLOCK, &chld, &old);
  int sfd = signalfd(-1, &chld, SFD_CLOEXEC | SFD_NONBLOCK);
  std::vector<int> conns;
  std::map<pid_t, int> status_of;  // child pid -> status socket
  uid_t uid = getuid();
  pid_t self = getpid();

  auto shutdown = [&]() {
    for (int c : conns) ::close(c);
    for (auto& [pid, fd] : status_of) ::close(fd);
    _exit(0);
  };

  // At the descriptor limit a pending connection cannot be accepted, and would keep poll()
  // ready: stop listening until a descriptor is given back (a child reaped, a client gone).
  bool accept_paused = false;
  for (;;) {
    std::vector<pollfd> fds;
    fds.push_back({alive_fd, POLLIN, 0});
    fds.push_back({sfd, POLLIN, 0});
    fds.push_back({accept_paused ? -1 : listen_fd, POLLIN, 0});
    for (int c : conns) fds.push_back({c, POLLIN, 0});
    int r = ::poll(fds.data(), fds.size(), -1);
    if (r < 0) {
      if (errno == EINTR) continue;
      shutdown();
    }
    if (fds[0].revents) shutdown();
    if (fds[1].revents) {
      signalfd_siginfo si;
      while (::read(sfd, &si, sizeof si) == static_cast<ssize_t>(sizeof si)) {
      }
      int status;
      pid_t pid;
      while ((pid = ::waitpid(-1, &status, WNOHANG)) > 0) {
        auto it = status_of.find(pid);
        tracker_forget_process(pid);
        if (it == status_of.end()) continue;
        int32_t code = exitcode_from_status(status);
        write_exact(it->second, &code, sizeof code);
        ::close(it->second);
        accept_paused = false;
        status_of.erase(it);
      }
    }
    if (fds[2].revents & POLLIN) {
      int c = ::accept4(listen_fd, nullptr, nullptr, SOCK_CLOEXEC);
      if (c < 0 && (errno == EMFILE || errno == ENFILE)) accept_paused = true;
      if (c >= 0) {
        ucred cred{};
        socklen_t len = sizeof cred;
        // Only the program's own user may ask us to run code.
        if (::getsockopt(c, SOL_SOCKET, SO_PEERCRED, &cred, &len) == 0 && cred.uid == uid)
          conns.push_back(c);
        else
          ::close(c);
      }
    }
    for (size_t i = 3; i < fds.size(); ++i) {
      if (!fds[i].revents) continue;
      int c = fds[i].fd;
      uint64_t len = 0;
      int status_fd = -1;
      std::string payload;
      bool ok = recv_request_header(c, &len, &status_fd);
      if (ok && len > kMaxLaunchPayload) {
        // Refused before reading it: the client reports the limit instead of a lost connection.
        if (status_fd >= 0) write_exact(status_fd, &kRequestTooLarge, sizeof kRequestTooLarge);
        ok = false;
      }
      if (ok) ok = read_payload(c, len, payload);
      if (!ok) {
        if (status_fd >= 0) ::close(status_fd);
        ::close(c);
        std::erase(conns, c);
        accept_paused = false;
        continue;
      }
      // No status socket came with the request (we are at the descriptor limit, and the kernel
      // dropped it): the client sees its end close and reports the failure; fork nothing.
      if (status_fd < 0) continue;
      pid_t pid = ::fork();
      if (pid == 0) {
        // Our children end with us, killed or not: a restarted server must not leave the old
        // one's children behind. We are single-threaded, so "parent thread" means us; the
        // getppid() check closes the window in which we died before prctl.
        ::prctl(PR_SET_PDEATHSIG, SIGKILL);
        if (::getppid() != self) _exit(1);
        ::close(listen_fd);
        ::close(alive_fd);
        ::close(sfd);
        for (int cc : conns) ::close(cc);
        for (auto& [p, fd] : status_of) ::close(fd);
        ::close(status_fd);
        signal(SIGINT, SIG_DFL);
        pthread_sigmask(SIG_SETMASK, &old, nullptr);
        run_child(payload.data(), payload.size());
      }
      if (pid > 0) tracker_watch_process(pid);
      int32_t reply = pid > 0 ? pid : -1;
      write_exact(status_fd, &reply, sizeof reply);
      if (pid > 0)
        status_of[pid] = status_fd;
      else
        ::close(status_fd);
    }
  }
}

}  // namespace multiproc::detail
