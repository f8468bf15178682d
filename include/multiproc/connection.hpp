// Connections between processes (CPython's connection.py): message-framed byte streams over
// Unix-domain or TCP sockets, and the HMAC handshake that authenticates their peers.
//
//   auto [a, b] = mp::Pipe();          // duplex; Pipe(false): a receives, b sends
//   a.send(std::vector<int>{1, 2});    b.recv<std::vector<int>>();
//   mp::Listener l("unix:" + dir + "/sock", key);   mp::Connection c = l.accept();
//   mp::Connection c = mp::Client(l.address(), key);
//   auto ready = mp::wait(std::vector<mp::Connection>{a, b}, 1s);
//
// A Connection is a handle on one socket: copies share it, and the socket closes when the last
// copy in this process is destroyed or close() is called. It can travel to another process as a
// Process or Pool argument, a queue item or a message on another connection, under every start
// method: the sender keeps a duplicate of the descriptor for the receiver, which fetches it over
// a private Unix socket with SCM_RIGHTS (CPython's resource_sharer). A connection is not
// thread-safe: one thread sends and one receives at a time.
//
// Every message is a frame: an 8-byte length, then that many bytes. A frame longer than the
// receiver's limit (max_message_size) or a stream that ends inside a frame is refused with a
// ProcessError and closes the connection; nothing oversized is allocated.
//
// Authentication (Listener/Client given an auth key) is CPython's deliver_challenge /
// answer_challenge: each side sends 40 random bytes and expects HMAC-SHA256(key, challenge) back,
// compared in constant time; the server authenticates the client before it reads anything else.
// The key never crosses the socket. process_authkey() is this program's default key.
#pragma once

#include <sys/types.h>
#include <chrono>
#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <typeinfo>
#include <utility>
#include <variant>
#include <vector>

#include <multiproc/detail/handle.hpp>
#include <multiproc/errors.hpp>
#include <multiproc/process.hpp>
#include <multiproc/serialization.hpp>
#include <multiproc/timeout.hpp>

namespace multiproc {

// The peer closed the connection (Python's EOFError).
class EOFError : public ProcessError {
 public:
  using ProcessError::ProcessError;
};

// process_authkey(), this program's default key, is declared in process.hpp.

namespace detail {
struct ConnState;
// Where a received descriptor comes from (resource_sharer.cpp).
struct SharedFd {
  std::string address;
  std::string token;
};
SharedFd share_fd(int fd);
int fetch_shared_fd(const SharedFd& ref);
}  // namespace detail

class Connection {
 public:
  // An empty connection (closed()); Pipe, Listener::accept and Client make real ones.
  Connection() = default;
  // Takes ownership of a connected stream socket.
  Connection(int fd, bool readable, bool writable);

  // Sends one framed message. Throws ProcessError (EOFError-like cases included) if the peer is
  // gone; never raises SIGPIPE.
  void send_bytes(std::string_view bytes);
  // Waits at most `timeout` for a message (TimeoutError if none), then reads it whole. Throws
  // EOFError when the peer has closed, ProcessError on an oversized or truncated frame (the
  // connection is then closed).
  std::string recv_bytes(Timeout timeout = std::nullopt);
  // Whether a message (or EOF) is ready within `timeout` (0 = do not wait; empty = forever).
  bool poll(Timeout timeout = std::chrono::seconds(0)) const;

  // Sends a value of any transferable type, tagged with its type so that recv<T> can check it.
  template <class T>
  void send(const T& value) {
    detail::require_transferable<T>();
    std::string msg = type_tag<T>();
    detail::dump(msg, value);
    send_bytes(msg);
  }
  // Receives what send<T> sent; a message of another type (or raw bytes) is a ProcessError that
  // names both types.
  template <class T>
  T recv(Timeout timeout = std::nullopt) {
    detail::require_transferable<T>();
    std::string msg = recv_bytes(timeout);
    const std::string tag = type_tag<T>();
    if (msg.compare(0, tag.size(), tag) != 0)
      throw_type_mismatch(msg, detail::demangled_type_name<T>());
    return detail::load<T>(std::string_view(msg).substr(tag.size()));
  }

  // Closes this process's socket for every copy of the handle. Idempotent.
  void close();
  bool closed() const;
  int fileno() const;
  bool readable() const;
  bool writable() const;
  // The largest frame recv_bytes accepts (default 1 GiB).
  void max_message_size(uint64_t n);
  uint64_t max_message_size() const;

  // Handle protocol: the socket travels by SCM_RIGHTS through this process's fd sharer.
  template <class Archive>
  void save(Archive& ar) const {
    detail::SharedFd ref = detail::share_fd(fileno());
    ar(ref.address, ref.token, readable(), writable());
  }
  template <class Archive>
  void load(Archive& ar) {
    detail::SharedFd ref;
    bool r = false, w = false;
    ar(ref.address, ref.token, r, w);
    *this = Connection(detail::fetch_shared_fd(ref), r, w);
  }

 private:
  template <class T>
  static std::string type_tag() {
    // Mangled names are equal across processes of one program and across programs built by
    // one compiler: enough to tell a mismatch.
    const char* name = typeid(T).name();
    std::string tag = "\x01MPT";
    tag += name;
    tag.push_back('\0');
    return tag;
  }
  [[noreturn]] static void throw_type_mismatch(const std::string& msg, const std::string& want);
  detail::ConnState& state() const;

  std::shared_ptr<detail::ConnState> state_;
};

// A connected pair. duplex: both ends send and receive; otherwise first receives, second sends.
std::pair<Connection, Connection> Pipe(bool duplex = true);

// Accepts connections on "unix:/path" or "host:port" (TCP; port 0 picks one). An empty address
// makes a Unix socket in a new directory only this user can enter; that directory is removed
// with the listener. With an auth key, accept() authenticates each client (AuthenticationError
// on a wrong key) before returning it.
class Listener {
 public:
  explicit Listener(std::string address = "", std::optional<std::string> authkey = std::nullopt,
                    int backlog = 128);
  Listener(Listener&&) noexcept;
  Listener& operator=(Listener&&) noexcept;
  Listener(const Listener&) = delete;
  Listener& operator=(const Listener&) = delete;
  ~Listener();

  // Waits for a client at most `timeout` (TimeoutError), then authenticates it.
  Connection accept(Timeout timeout = std::nullopt);
  const std::string& address() const { return address_; }
  int fileno() const { return fd_; }
  void close();

 private:
  int fd_ = -1;
  std::string address_;
  std::string unlink_path_, rmdir_path_;
  std::optional<std::string> authkey_;
  pid_t owner_ = -1;
};

// Connects to a Listener's address and, with an auth key, answers and delivers the challenges.
// Throws ProcessError if nothing listens there, AuthenticationError on a key mismatch.
Connection Client(const std::string& address, std::optional<std::string> authkey = std::nullopt);

// The two halves of the handshake, for either side of any connection (Python's functions).
void deliver_challenge(Connection& c, const std::string& authkey);
void answer_challenge(Connection& c, const std::string& authkey);

// Waits until at least one object is ready (a connection with a message or EOF, a process
// sentinel of a process that ended, any readable descriptor) or the timeout passes; returns the
// ready ones, in the order given (empty on timeout).
using Waitable = std::variant<Connection, int>;
std::vector<Connection> wait(const std::vector<Connection>& objects,
                             Timeout timeout = std::nullopt);
std::vector<int> wait(const std::vector<int>& fds, Timeout timeout = std::nullopt);
std::vector<Waitable> wait(const std::vector<Waitable>& objects, Timeout timeout = std::nullopt);

}  // namespace multiproc
