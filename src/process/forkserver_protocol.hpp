// The fork server's wire protocol (tiny and explicit, as CPython's):
//   request:  u64 payload length, sent with the status socket's server end (SCM_RIGHTS),
//             then the payload bytes (a ChildPayload).
//   on the status socket, server to client: i32 pid once forked, then i32 exit code when reaped.
#pragma once

#include <sys/socket.h>
#include <unistd.h>
#include <cerrno>
#include <cstdint>
#include <cstring>
#include <string>

namespace multiproc::detail {

inline bool read_exact(int fd, void* buf, size_t n) {
  auto* p = static_cast<char*>(buf);
  while (n > 0) {
    ssize_t r = ::read(fd, p, n);
    if (r < 0 && errno == EINTR) continue;
    if (r <= 0) return false;
    p += r;
    n -= static_cast<size_t>(r);
  }
  return true;
}

inline bool write_exact(int fd, const void* buf, size_t n) {
  auto* p = static_cast<const char*>(buf);
  while (n > 0) {
    ssize_t w = ::send(fd, p, n, MSG_NOSIGNAL);
    if (w < 0 && errno == EINTR) continue;
    if (w <= 0) return false;
    p += w;
    n -= static_cast<size_t>(w);
  }
  return true;
}

inline bool send_request(int conn, const std::string& payload, int fd_to_pass) {
  uint64_t len = payload.size();
  msghdr msg{};
  iovec iov{&len, sizeof len};
  msg.msg_iov = &iov;
  msg.msg_iovlen = 1;
  alignas(cmsghdr) char control[CMSG_SPACE(sizeof(int))] = {};
  msg.msg_control = control;
  msg.msg_controllen = sizeof control;
  cmsghdr* cm = CMSG_FIRSTHDR(&msg);
  cm->cmsg_level = SOL_SOCKET;
  cm->cmsg_type = SCM_RIGHTS;
  cm->cmsg_len = CMSG_LEN(sizeof(int));
  std::memcpy(CMSG_DATA(cm), &fd_to_pass, sizeof(int));
  ssize_t r;
  do r = ::sendmsg(conn, &msg, MSG_NOSIGNAL);
  while (r < 0 && errno == EINTR);
  if (r != static_cast<ssize_t>(sizeof len)) return false;
  return write_exact(conn, payload.data(), payload.size());
}

// Returns false on end-of-file or error; *fd = -1 when no descriptor came with the header.
inline bool recv_request_header(int conn, uint64_t* len, int* fd) {
  msghdr msg{};
  iovec iov{len, sizeof *len};
  msg.msg_iov = &iov;
  msg.msg_iovlen = 1;
  alignas(cmsghdr) char control[CMSG_SPACE(sizeof(int))] = {};
  msg.msg_control = control;
  msg.msg_controllen = sizeof control;
  ssize_t r;
  do r = ::recvmsg(conn, &msg, MSG_CMSG_CLOEXEC);
  while (r < 0 && errno == EINTR);
  *fd = -1;
  for (cmsghdr* cm = CMSG_FIRSTHDR(&msg); cm; cm = CMSG_NXTHDR(&msg, cm))
    if (cm->cmsg_level == SOL_SOCKET && cm->cmsg_type == SCM_RIGHTS)
      std::memcpy(fd, CMSG_DATA(cm), sizeof(int));
  if (r != static_cast<ssize_t>(sizeof *len)) {
    if (*fd >= 0) ::close(*fd);
    return false;
  }
  return true;
}

}  // namespace multiproc::detail
