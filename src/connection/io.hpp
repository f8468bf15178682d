// Socket helpers shared by the connection layer and the manager's server. Internal.
#pragma once

#include <sys/types.h>
#include <cstddef>
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
// One message of n bytes over a Unix socket, with descriptor `fd` alongside (SCM_RIGHTS; none
// when fd < 0), MSG_NOSIGNAL. Retries EINTR; returns what sendmsg returned.
ssize_t send_with_fd(int sock, const void* p, size_t n, int fd);
// Receives up to n bytes and the descriptor that came alongside, close-on-exec (*fd = -1 when
// none came). Retries EINTR; returns what recvmsg returned.
ssize_t recv_with_fd(int sock, void* p, size_t n, int* fd);
std::string hex(const std::string& bytes);
std::string random_bytes(size_t n);
// A new directory only this user can enter (mode 0700), under $TMPDIR or /tmp.
std::string make_private_dir(const char* prefix);

}  // namespace multiproc::detail
