// Socket helpers shared by the connection layer, the manager's server and the fork server's
// protocol. Internal.
#pragma once

#include <sys/socket.h>
#include <sys/types.h>
#include <cerrno>
#include <cstddef>
#include <cstring>
#include <string>

#include <multiproc/timeout.hpp>

namespace multiproc::detail {

// poll() one descriptor until `deadline`; returns its revents (0 on timeout). Retries EINTR.
int poll_fd(int fd, short events, const Deadline& deadline);
// Sends all n bytes (MSG_NOSIGNAL); EOFError when the peer is gone.
void conn_write_all(int fd, const char* p, size_t n);
// Reads exactly n bytes. Returns false on EOF before any byte when eof_ok; a stream that ends
// inside is a ProcessError; a receive timeout (SO_RCVTIMEO) is a TimeoutError.
bool conn_read_exact(int fd, char* p, size_t n, bool eof_ok);
std::string hex(const std::string& bytes);
std::string random_bytes(size_t n);
// A new directory only this user can enter (mode 0700), under $TMPDIR or /tmp.
std::string make_private_dir(const char* prefix);

// One message of n bytes over a Unix socket, with descriptor `fd` alongside (SCM_RIGHTS; none
// when fd < 0), MSG_NOSIGNAL. Retries EINTR; returns what sendmsg returned. Inline, as
// recv_with_fd: the fork server's protocol uses them, and a program that starts processes must
// not need what the rest of the connection layer links (OpenSSL).
inline ssize_t send_with_fd(int sock, const void* p, size_t n, int fd) {
  iovec iov{const_cast<void*>(p), n};
  msghdr msg{};
  msg.msg_iov = &iov;
  msg.msg_iovlen = 1;
  alignas(cmsghdr) char ctl[CMSG_SPACE(sizeof(int))] = {};
  if (fd >= 0) {
    msg.msg_control = ctl;
    msg.msg_controllen = sizeof ctl;
    cmsghdr* c = CMSG_FIRSTHDR(&msg);
    c->cmsg_level = SOL_SOCKET;
    c->cmsg_type = SCM_RIGHTS;
    c->cmsg_len = CMSG_LEN(sizeof(int));
    std::memcpy(CMSG_DATA(c), &fd, sizeof(int));
  }
  ssize_t r;
  do r = ::sendmsg(sock, &msg, MSG_NOSIGNAL);
  while (r < 0 && errno == EINTR);
  return r;
}

// Receives up to n bytes and the descriptor that came alongside, close-on-exec (*fd = -1 when
// none came). Retries EINTR; returns what recvmsg returned.
inline ssize_t recv_with_fd(int sock, void* p, size_t n, int* fd) {
  iovec iov{p, n};
  msghdr msg{};
  msg.msg_iov = &iov;
  msg.msg_iovlen = 1;
  alignas(cmsghdr) char ctl[CMSG_SPACE(sizeof(int))] = {};
  msg.msg_control = ctl;
  msg.msg_controllen = sizeof ctl;
  ssize_t r;
  do r = ::recvmsg(sock, &msg, MSG_CMSG_CLOEXEC);
  while (r < 0 && errno == EINTR);
  *fd = -1;
  if (r >= 0)
    for (cmsghdr* c = CMSG_FIRSTHDR(&msg); c; c = CMSG_NXTHDR(&msg, c))
      if (c->cmsg_level == SOL_SOCKET && c->cmsg_type == SCM_RIGHTS)
        std::memcpy(fd, CMSG_DATA(c), sizeof(int));
  return r;
}

}  // namespace multiproc::detail
