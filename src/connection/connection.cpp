// Connection: framing over a stream socket, Pipe, wait, and the program's auth key.
#include <multiproc/connection.hpp>

#include <fcntl.h>
#include <openssl/rand.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>
#include <algorithm>
#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <mutex>
#include <system_error>

#include "connection/io.hpp"

namespace multiproc {

namespace detail {

struct ConnState {
  int fd = -1;
  bool readable = false;
  bool writable = false;
  uint64_t max_message = uint64_t{1} << 30;
  ~ConnState() {
    if (fd >= 0) ::close(fd);
  }
};

int poll_fd(int fd, short events, const Deadline& deadline) {
  for (;;) {
    int ms = -1;
    if (!deadline.is_never()) {
      auto left = std::chrono::duration_cast<std::chrono::milliseconds>(*deadline.at -
                                                                        Deadline::Clock::now());
      ms = left.count() < 0 ? 0 : static_cast<int>(std::min<int64_t>(left.count() + 1, 1 << 30));
    }
    pollfd p{fd, events, 0};
    int r = ::poll(&p, 1, ms);
    if (r < 0 && errno == EINTR) continue;
    if (r < 0) throw ProcessError("poll failed: " + std::generic_category().message(errno));
    if (r > 0) return p.revents;
    if (deadline.expired()) return 0;
  }
}

void conn_write_all(int fd, const char* p, size_t n) {
  while (n > 0) {
    ssize_t w = ::send(fd, p, n, MSG_NOSIGNAL);
    if (w < 0 && errno == EINTR) continue;
    if (w < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
      poll_fd(fd, POLLOUT, Deadline::never());
      continue;
    }
    if (w < 0) {
      if (errno == EPIPE || errno == ECONNRESET)
        throw EOFError("the connection's peer has closed it (" +
                       std::generic_category().message(errno) + ")");
      throw ProcessError("send on a connection failed: " + std::generic_category().message(errno));
    }
    p += w;
    n -= static_cast<size_t>(w);
  }
}

// Reads exactly n bytes; returns false on EOF before the first byte when eof_ok.
bool conn_read_exact(int fd, char* p, size_t n, bool eof_ok) {
  size_t got = 0;
  while (got < n) {
    ssize_t r = ::recv(fd, p + got, n - got, 0);
    if (r < 0 && errno == EINTR) continue;
    if (r < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
      throw TimeoutError("a connection's peer stopped sending in the middle of a message");
    }
    if (r < 0 && errno == ECONNRESET) r = 0;
    if (r < 0)
      throw ProcessError("recv on a connection failed: " + std::generic_category().message(errno));
    if (r == 0) {
      if (got == 0 && eof_ok) return false;
      throw ProcessError("malformed message: the connection ended inside a frame (" +
                         std::to_string(got) + " of " + std::to_string(n) + " bytes)");
    }
    got += static_cast<size_t>(r);
  }
  return true;
}

std::string hex(const std::string& bytes) {
  static const char* d = "0123456789abcdef";
  std::string out;
  for (unsigned char c : bytes) {
    out.push_back(d[c >> 4]);
    out.push_back(d[c & 15]);
  }
  return out;
}

std::string random_bytes(size_t n) {
  std::string out(n, '\0');
  if (RAND_bytes(reinterpret_cast<unsigned char*>(out.data()), static_cast<int>(n)) != 1)
    throw ProcessError("OpenSSL could not produce random bytes");
  return out;
}

}  // namespace detail

Connection::Connection(int fd, bool readable, bool writable)
    : state_(std::make_shared<detail::ConnState>()) {
  state_->fd = fd;
  state_->readable = readable;
  state_->writable = writable;
}

detail::ConnState& Connection::state() const {
  if (!state_ || state_->fd < 0) throw ProcessError("the connection is closed");
  return *state_;
}

void Connection::send_bytes(std::string_view bytes) {
  auto& s = state();
  if (!s.writable) throw ProcessError("this end of the pipe is read-only");
  uint64_t len = bytes.size();
  // Small messages go out in one send (one syscall, one segment for the peer to read).
  if (bytes.size() <= size_t{64} * 1024) {
    std::string frame(reinterpret_cast<const char*>(&len), sizeof len);
    frame.append(bytes);
    detail::conn_write_all(s.fd, frame.data(), frame.size());
  } else {
    detail::conn_write_all(s.fd, reinterpret_cast<const char*>(&len), sizeof len);
    detail::conn_write_all(s.fd, bytes.data(), bytes.size());
  }
}

std::string Connection::recv_bytes(Timeout timeout) {
  auto& s = state();
  if (!s.readable) throw ProcessError("this end of the pipe is write-only");
  if (timeout && detail::poll_fd(s.fd, POLLIN, detail::Deadline::after(timeout)) == 0)
    throw TimeoutError("no message arrived on the connection within the timeout");
  uint64_t len = 0;
  try {
    if (!detail::conn_read_exact(s.fd, reinterpret_cast<char*>(&len), sizeof len, true))
      throw EOFError("the connection's peer has closed it");
    if (len > s.max_message) {
      throw ProcessError("malformed message: a frame of " + std::to_string(len) +
                         " bytes is over this connection's limit of " +
                         std::to_string(s.max_message) + " bytes; the connection is closed");
    }
    // Memory follows the bytes that actually arrive: a peer that announces a large frame and
    // sends little makes us hold little.
    constexpr uint64_t kChunk = uint64_t{1} << 20;
    std::string out;
    out.resize(static_cast<size_t>(std::min(len, kChunk)));
    detail::conn_read_exact(s.fd, out.data(), out.size(), false);
    while (out.size() < len) {
      size_t at = out.size();
      out.resize(static_cast<size_t>(std::min<uint64_t>(len, at * 2)));
      detail::conn_read_exact(s.fd, out.data() + at, out.size() - at, false);
    }
    return out;
  } catch (const EOFError&) {
    throw;
  } catch (const ProcessError&) {
    // The stream is out of step: nothing after this can be read as frames.
    close();
    throw;
  }
}

bool Connection::poll(Timeout timeout) const {
  auto& s = state();
  return detail::poll_fd(s.fd, POLLIN, detail::Deadline::after(timeout)) != 0;
}

void Connection::throw_type_mismatch(const std::string& msg, const std::string& want) {
  if (msg.rfind("\x01MPT", 0) == 0) {
    size_t end = msg.find('\0', 4);
    std::string got = msg.substr(4, end == std::string::npos ? std::string::npos : end - 4);
    throw ProcessError("recv<" + want + ">: the message holds a value of another type (" + got +
                       ")");
  }
  throw ProcessError("recv<" + want + ">: the message was not sent by send() (raw bytes?)");
}

void Connection::close() {
  if (state_ && state_->fd >= 0) {
    ::close(state_->fd);
    state_->fd = -1;
  }
}
bool Connection::closed() const {
  return !state_ || state_->fd < 0;
}
int Connection::fileno() const {
  return state().fd;
}
bool Connection::readable() const {
  return state().readable;
}
bool Connection::writable() const {
  return state().writable;
}
void Connection::max_message_size(uint64_t n) {
  state().max_message = n;
}
uint64_t Connection::max_message_size() const {
  return state().max_message;
}

std::pair<Connection, Connection> Pipe(bool duplex) {
  // Both kinds are socket pairs, so that a send to a vanished reader is an error, never SIGPIPE.
  int sv[2];
  if (::socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv) != 0)
    throw ProcessError("socketpair failed: " + std::generic_category().message(errno));
  if (duplex) return {Connection(sv[0], true, true), Connection(sv[1], true, true)};
  ::shutdown(sv[0], SHUT_WR);
  ::shutdown(sv[1], SHUT_RD);
  return {Connection(sv[0], true, false), Connection(sv[1], false, true)};
}

namespace {
template <class T, class FdOf>
std::vector<T> wait_impl(const std::vector<T>& objects, Timeout timeout, FdOf fd_of) {
  std::vector<pollfd> fds;
  for (auto& o : objects) fds.push_back(pollfd{fd_of(o), POLLIN, 0});
  auto deadline = detail::Deadline::after(timeout);
  for (;;) {
    int ms = -1;
    if (!deadline.is_never()) {
      auto left = std::chrono::duration_cast<std::chrono::milliseconds>(
          *deadline.at - detail::Deadline::Clock::now());
      ms = left.count() < 0 ? 0 : static_cast<int>(std::min<int64_t>(left.count() + 1, 1 << 30));
    }
    int r = ::poll(fds.data(), fds.size(), ms);
    if (r < 0 && errno == EINTR) continue;
    if (r < 0) throw ProcessError("wait: poll failed: " + std::generic_category().message(errno));
    std::vector<T> ready;
    if (r > 0) {
      for (size_t i = 0; i < fds.size(); ++i)
        if (fds[i].revents != 0) ready.push_back(objects[i]);
      return ready;
    }
    if (deadline.expired()) return ready;
  }
}
}  // namespace

std::vector<Connection> wait(const std::vector<Connection>& objects, Timeout timeout) {
  return wait_impl(objects, timeout, [](const Connection& c) { return c.fileno(); });
}
std::vector<int> wait(const std::vector<int>& fds, Timeout timeout) {
  return wait_impl(fds, timeout, [](int fd) { return fd; });
}
std::vector<Waitable> wait(const std::vector<Waitable>& objects, Timeout timeout) {
  return wait_impl(objects, timeout, [](const Waitable& w) {
    return std::holds_alternative<int>(w) ? std::get<int>(w) : std::get<Connection>(w).fileno();
  });
}

}  // namespace multiproc
