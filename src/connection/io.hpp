// Socket helpers shared by the connection layer and the manager's server. Internal.
#pragma once

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
std::string hex(const std::string& bytes);
std::string random_bytes(size_t n);
// A new directory only this user can enter (mode 0700), under $TMPDIR or /tmp.
std::string make_private_dir(const char* prefix);

}  // namespace multiproc::detail
