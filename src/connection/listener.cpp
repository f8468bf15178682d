// Listener, Client and the HMAC challenge handshake (CPython's connection.py).
#include <arpa/inet.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <poll.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>
#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <system_error>

#include <multiproc/connection.hpp>
#include "connection/io.hpp"

namespace multiproc {

namespace detail {

std::string make_private_dir(const char* prefix) {
  const char* tmp = std::getenv("TMPDIR");
  std::string templ = std::string(tmp && *tmp ? tmp : "/tmp") + "/" + prefix + "-XXXXXX";
  if (!::mkdtemp(templ.data()))  // mkdtemp makes it 0700
    throw ProcessError("cannot create a private directory " + templ + ": " +
                       std::generic_category().message(errno));
  return templ;
}

namespace {

struct Address {
  bool unix_socket = false;
  std::string path;  // unix
  std::string host;  // tcp
  int port = 0;
};

Address parse_address(const std::string& address) {
  Address a;
  if (address.rfind("unix:", 0) == 0) {
    a.unix_socket = true;
    a.path = address.substr(5);
    // CVE-2022-42919: an abstract socket is open to every process in the network namespace.
    if (a.path.empty() || a.path[0] != '/')
      throw ProcessError("unix socket address '" + address +
                         "' must be an absolute path (abstract sockets are refused: anyone on "
                         "the host could connect)");
    if (a.path.size() >= sizeof(sockaddr_un{}.sun_path))
      throw ProcessError("unix socket path too long: " + a.path);
    return a;
  }
  auto colon = address.rfind(':');
  if (colon == std::string::npos || colon == 0)
    throw ProcessError("bad address '" + address + "': expected \"unix:/path\" or \"host:port\"");
  a.host = address.substr(0, colon);
  char* end = nullptr;
  long port = std::strtol(address.c_str() + colon + 1, &end, 10);
  if (*end != '\0' || port < 0 || port > 65535 || colon + 1 == address.size())
    throw ProcessError("bad port in address '" + address + "'");
  a.port = static_cast<int>(port);
  return a;
}

sockaddr_un unix_addr(const std::string& path) {
  sockaddr_un sa{};
  sa.sun_family = AF_UNIX;
  std::memcpy(sa.sun_path, path.c_str(), path.size() + 1);
  return sa;
}

addrinfo* resolve(const Address& a, bool passive) {
  addrinfo hints{};
  hints.ai_family = AF_UNSPEC;
  hints.ai_socktype = SOCK_STREAM;
  if (passive) hints.ai_flags = AI_PASSIVE;
  addrinfo* res = nullptr;
  int rc = ::getaddrinfo(a.host.c_str(), std::to_string(a.port).c_str(), &hints, &res);
  if (rc != 0) throw ProcessError("cannot resolve " + a.host + ": " + gai_strerror(rc));
  return res;
}

void set_recv_timeout(int fd, int seconds) {
  timeval tv{seconds, 0};
  ::setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
}

// A peer that connects and then says nothing must not hold a handshake forever.
constexpr int kHandshakeTimeoutS = 20;
constexpr size_t kChallengeBytes = 40;
const std::string kChallenge = "#CHALLENGE#";
const std::string kWelcome = "#WELCOME#";
const std::string kFailure = "#FAILURE#";
const std::string kDigestName = "{sha256}";

std::string hmac_sha256(const std::string& key, const std::string& msg) {
  unsigned char out[EVP_MAX_MD_SIZE];
  unsigned int len = 0;
  if (!HMAC(EVP_sha256(), key.data(), static_cast<int>(key.size()),
            reinterpret_cast<const unsigned char*>(msg.data()), msg.size(), out, &len))
    throw ProcessError("OpenSSL HMAC-SHA256 failed");
  return std::string(reinterpret_cast<char*>(out), len);
}

// Handshake messages are small: a peer that announces a big one is not speaking the protocol.
std::string recv_small(Connection& c) {
  uint64_t saved = c.max_message_size();
  c.max_message_size(256);
  try {
    std::string m = c.recv_bytes();
    c.max_message_size(saved);
    return m;
  } catch (const ProcessError& e) {
    throw AuthenticationError(std::string("authentication failed: ") + e.what());
  }
}

}  // namespace
}  // namespace detail

void deliver_challenge(Connection& c, const std::string& authkey) {
  using namespace detail;
  if (authkey.empty()) throw AuthenticationError("an empty auth key is refused");
  std::string message = kDigestName + random_bytes(kChallengeBytes);
  c.send_bytes(kChallenge + message);
  std::string response = recv_small(c);
  std::string expected = kDigestName + hmac_sha256(authkey, message);
  if (response.size() != expected.size() ||
      CRYPTO_memcmp(response.data(), expected.data(), expected.size()) != 0) {
    try {
      c.send_bytes(kFailure);
    } catch (const ProcessError&) {
    }
    throw AuthenticationError("digest received was wrong: the peer does not have this auth key");
  }
  c.send_bytes(kWelcome);
}

void answer_challenge(Connection& c, const std::string& authkey) {
  using namespace detail;
  if (authkey.empty()) throw AuthenticationError("an empty auth key is refused");
  std::string message = recv_small(c);
  if (message.rfind(kChallenge + kDigestName, 0) != 0 ||
      message.size() != kChallenge.size() + kDigestName.size() + kChallengeBytes)
    throw AuthenticationError("protocol error: expected a challenge, got something else");
  message.erase(0, kChallenge.size());
  c.send_bytes(kDigestName + hmac_sha256(authkey, message));
  std::string answer = recv_small(c);
  if (answer != kWelcome)
    throw AuthenticationError("digest sent was rejected: the peer has a different auth key");
}

Listener::Listener(std::string address, std::optional<std::string> authkey, int backlog)
    : authkey_(std::move(authkey)), owner_(::getpid()) {
  using namespace detail;
  if (address.empty()) {
    rmdir_path_ = make_private_dir("multiproc-listener");
    address = "unix:" + rmdir_path_ + "/socket";
  }
  Address a = parse_address(address);
  if (a.unix_socket) {
    fd_ = ::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd_ < 0) throw ProcessError("socket failed: " + std::generic_category().message(errno));
    sockaddr_un sa = unix_addr(a.path);
    // Only this user may connect (connect() needs write permission on the socket), whatever
    // the directory allows. Set before listen(), so no client can have connected meanwhile.
    int rc = ::bind(fd_, reinterpret_cast<sockaddr*>(&sa), sizeof sa);
    const bool bound = rc == 0;
    if (rc == 0) rc = ::chmod(a.path.c_str(), 0600);
    if (rc != 0 || ::listen(fd_, backlog) != 0) {
      int err = errno;
      if (bound) ::unlink(a.path.c_str());
      ::close(fd_);
      fd_ = -1;
      if (!rmdir_path_.empty()) ::rmdir(rmdir_path_.c_str());
      throw ProcessError("cannot listen on " + address + ": " +
                         std::generic_category().message(err));
    }
    unlink_path_ = a.path;
    address_ = address;
  } else {
    addrinfo* res = resolve(a, true);
    int err = 0;
    for (addrinfo* ai = res; ai; ai = ai->ai_next) {
      fd_ = ::socket(ai->ai_family, ai->ai_socktype | SOCK_CLOEXEC, ai->ai_protocol);
      if (fd_ < 0) continue;
      int one = 1;
      ::setsockopt(fd_, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
      if (::bind(fd_, ai->ai_addr, ai->ai_addrlen) == 0 && ::listen(fd_, backlog) == 0) break;
      err = errno;
      ::close(fd_);
      fd_ = -1;
    }
    ::freeaddrinfo(res);
    if (fd_ < 0)
      throw ProcessError("cannot listen on " + address + ": " +
                         std::generic_category().message(err));
    sockaddr_storage ss{};
    socklen_t len = sizeof ss;
    ::getsockname(fd_, reinterpret_cast<sockaddr*>(&ss), &len);
    int port = ntohs(ss.ss_family == AF_INET6 ? reinterpret_cast<sockaddr_in6*>(&ss)->sin6_port
                                              : reinterpret_cast<sockaddr_in*>(&ss)->sin_port);
    address_ = a.host + ":" + std::to_string(port);
  }
}

Listener::Listener(Listener&& o) noexcept {
  *this = std::move(o);
}
Listener& Listener::operator=(Listener&& o) noexcept {
  if (this != &o) {
    close();
    fd_ = std::exchange(o.fd_, -1);
    address_ = std::move(o.address_);
    unlink_path_ = std::move(o.unlink_path_);
    rmdir_path_ = std::move(o.rmdir_path_);
    authkey_ = std::move(o.authkey_);
    owner_ = o.owner_;
    o.unlink_path_.clear();
    o.rmdir_path_.clear();
  }
  return *this;
}
Listener::~Listener() {
  close();
}

void Listener::close() {
  if (fd_ >= 0) ::close(fd_);
  fd_ = -1;
  // Only the process that bound the socket removes it (a forked child's copy must not).
  if (owner_ == ::getpid()) {
    if (!unlink_path_.empty()) ::unlink(unlink_path_.c_str());
    if (!rmdir_path_.empty()) ::rmdir(rmdir_path_.c_str());
  }
  unlink_path_.clear();
  rmdir_path_.clear();
}

Connection Listener::accept(Timeout timeout) {
  if (fd_ < 0) throw ProcessError("the listener is closed");
  if (timeout && detail::poll_fd(fd_, POLLIN, detail::Deadline::after(timeout)) == 0)
    throw TimeoutError("no client connected within the timeout");
  int fd;
  do fd = ::accept4(fd_, nullptr, nullptr, SOCK_CLOEXEC);
  while (fd < 0 && errno == EINTR);
  if (fd < 0) throw ProcessError("accept failed: " + std::generic_category().message(errno));
  Connection c(fd, true, true);
  int one = 1;
  ::setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);  // fails harmlessly on Unix
  if (authkey_) {
    detail::set_recv_timeout(fd, detail::kHandshakeTimeoutS);
    deliver_challenge(c, *authkey_);
    answer_challenge(c, *authkey_);
    detail::set_recv_timeout(fd, 0);
  }
  return c;
}

Connection Client(const std::string& address, std::optional<std::string> authkey) {
  using namespace detail;
  Address a = parse_address(address);
  int fd = -1;
  if (a.unix_socket) {
    fd = ::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    sockaddr_un sa = unix_addr(a.path);
    int rc;
    do rc = ::connect(fd, reinterpret_cast<sockaddr*>(&sa), sizeof sa);
    while (rc != 0 && errno == EINTR);
    if (rc != 0) {
      int err = errno;
      ::close(fd);
      throw ProcessError("cannot connect to " + address + ": " +
                         std::generic_category().message(err));
    }
  } else {
    addrinfo* res = resolve(a, false);
    int err = 0;
    for (addrinfo* ai = res; ai; ai = ai->ai_next) {
      fd = ::socket(ai->ai_family, ai->ai_socktype | SOCK_CLOEXEC, ai->ai_protocol);
      if (fd < 0) continue;
      if (::connect(fd, ai->ai_addr, ai->ai_addrlen) == 0) break;
      err = errno;
      ::close(fd);
      fd = -1;
    }
    ::freeaddrinfo(res);
    if (fd < 0)
      throw ProcessError("cannot connect to " + address + ": " +
                         std::generic_category().message(err));
    int one = 1;
    ::setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
  }
  Connection c(fd, true, true);
  if (authkey) {
    set_recv_timeout(fd, kHandshakeTimeoutS);
    answer_challenge(c, *authkey);
    deliver_challenge(c, *authkey);
    set_recv_timeout(fd, 0);
  }
  return c;
}

}  // namespace multiproc
