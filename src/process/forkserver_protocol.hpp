// The fork server's wire protocol (tiny and explicit, as CPython's):
//   request:  u64 payload length, sent with the status socket's server end (SCM_RIGHTS),
//             then the payload bytes (a ChildPayload).
//   on the status socket, server to client: i32 pid once forked, then i32 exit code when reaped;
//             or kRequestTooLarge alone when the length is over kMaxLaunchPayload.
#pragma once

#include <sys/socket.h>
#include <unistd.h>
#include <algorithm>
#include <cerrno>
#include <cstdint>
#include <cstring>
#include <string>

#include "connection/io.hpp"

namespace multiproc::detail {

// The most launch data (a ChildPayload: the task and its encoded arguments) one request may
// carry. The server also reads a request as its bytes come, so a length that promises more than
// is sent costs it no memory beyond what arrived.
inline constexpr uint64_t kMaxLaunchPayload = uint64_t{1} << 30;
// The status reply to a request whose length is over kMaxLaunchPayload (a pid is positive).
inline constexpr int32_t kRequestTooLarge = -2;

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

// The request's header: its payload length, with `fd_to_pass` (the status socket) alongside.
inline bool send_request_header(int conn, uint64_t len, int fd_to_pass) {
  return send_with_fd(conn, &len, sizeof len, fd_to_pass) == static_cast<ssize_t>(sizeof len);
}

inline bool send_request(int conn, const std::string& payload, int fd_to_pass) {
  return send_request_header(conn, payload.size(), fd_to_pass) &&
         write_exact(conn, payload.data(), payload.size());
}

// Reads `len` bytes into `out`, growing it as they arrive (at most doubling what came so far).
inline bool read_payload(int conn, uint64_t len, std::string& out) {
  out.clear();
  while (out.size() < len) {
    const size_t have = out.size();
    const size_t step = static_cast<size_t>(
        std::min<uint64_t>(len - have, std::max<size_t>(have, size_t{64} * 1024)));
    out.resize(have + step);
    if (!read_exact(conn, out.data() + have, step)) return false;
  }
  return true;
}

// Returns false on end-of-file or error; *fd = -1 when no descriptor came with the header.
inline bool recv_request_header(int conn, uint64_t* len, int* fd) {
  if (recv_with_fd(conn, len, sizeof *len, fd) != static_cast<ssize_t>(sizeof *len)) {
    if (*fd >= 0) ::close(*fd);
    return false;
  }
  return true;
}

}  // namespace multiproc::detail
