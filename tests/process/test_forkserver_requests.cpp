// Hostile requests to the fork server, sent on its wire (src/process/forkserver_protocol.hpp): a
// length over the limit is refused with a reply, and a length that promises more than is sent
// costs the server no memory. Either way the same server goes on serving.
#include <gtest/gtest.h>

#include <dirent.h>
#include <poll.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <sstream>
#include <string>

#include <multiproc/multiproc.hpp>
#include "process/forkserver_protocol.hpp"

namespace mp = multiproc;
namespace mpd = multiproc::detail;

namespace {

void nothing() {}

void run_one_forkserver_child() {
  mp::Process p(mp::get_context(mp::StartMethod::forkserver), nothing);
  p.start();
  p.join();
  EXPECT_EQ(p.exitcode(), 0);
}

// Closes a descriptor when the test ends, also when it fails.
struct Fd {
  int fd = -1;
  Fd() = default;
  explicit Fd(int f) : fd(f) {}
  Fd(const Fd&) = delete;
  Fd& operator=(const Fd&) = delete;
  ~Fd() {
    if (fd >= 0) ::close(fd);
  }
};

// This program's fork server listens on an abstract address that names our pid. Returns the
// line of /proc/net/unix that lists its listening socket.
std::string server_line() {
  std::ifstream f("/proc/net/unix");
  const std::string want = "@multiproc-forkserver-" + std::to_string(::getpid()) + "-";
  std::string line;
  // Accepted connections carry the name too; the listening socket has the flag __SO_ACCEPTCON.
  while (std::getline(f, line))
    if (line.find(want) != std::string::npos && line.find(" 00010000 ") != std::string::npos)
      return line;
  return {};
}

std::string server_address() {
  const std::string line = server_line();
  auto at = line.find('@');
  return at == std::string::npos ? std::string() : line.substr(at + 1);
}

// The process that holds the listening socket (the fork server), found by its inode.
pid_t server_pid() {
  std::istringstream fields(server_line());
  std::string field, inode;
  for (int i = 0; i < 7 && fields >> field; ++i) inode = field;  // Num RefCount ... Inode
  const std::string want = "socket:[" + inode + "]";
  DIR* procs = opendir("/proc");
  pid_t found = -1;
  while (procs && found < 0) {
    dirent* p = readdir(procs);
    if (!p) break;
    const pid_t pid = static_cast<pid_t>(std::atoi(p->d_name));
    if (pid <= 0 || pid == ::getpid()) continue;
    const std::string dir = "/proc/" + std::string(p->d_name) + "/fd";
    DIR* fds = opendir(dir.c_str());
    while (fds && found < 0) {
      dirent* e = readdir(fds);
      if (!e) break;
      char target[64] = {};
      const std::string link = dir + "/" + e->d_name;
      if (::readlink(link.c_str(), target, sizeof target - 1) > 0 && want == target) found = pid;
    }
    if (fds) closedir(fds);
  }
  if (procs) closedir(procs);
  return found;
}

int connect_to_server() {
  const std::string name = server_address();
  if (name.empty()) return -1;
  sockaddr_un sa{};
  sa.sun_family = AF_UNIX;
  std::memcpy(sa.sun_path + 1, name.data(), name.size());
  int fd = ::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
  auto len = static_cast<socklen_t>(offsetof(sockaddr_un, sun_path) + 1 + name.size());
  if (fd >= 0 && ::connect(fd, reinterpret_cast<sockaddr*>(&sa), len) != 0) {
    ::close(fd);
    return -1;
  }
  return fd;
}

// What the server sent on the status socket before closing it: the bytes, at most 4, within a
// generous limit (an empty result means it closed without a reply).
std::string read_status(int fd) {
  std::string got;
  char buf[4];
  while (got.size() < sizeof buf) {
    pollfd p{fd, POLLIN, 0};
    if (::poll(&p, 1, 20000) != 1) break;
    ssize_t n = ::recv(fd, buf, sizeof buf - got.size(), 0);
    if (n <= 0) break;
    got.append(buf, static_cast<size_t>(n));
  }
  return got;
}

// Peak resident memory of a process, in KiB (VmHWM), or -1.
long peak_rss_kib(pid_t pid) {
  std::ifstream f("/proc/" + std::to_string(pid) + "/status");
  std::string key;
  while (f >> key) {
    if (key == "VmHWM:") {
      long kib = -1;
      f >> kib;
      return kib;
    }
  }
  return -1;
}

// A request header for `len` bytes followed by `sent` bytes and end-of-file; returns the status
// bytes the server replied with. *server gets the server's pid.
std::string hostile_request(uint64_t len, size_t sent, pid_t* server) {
  run_one_forkserver_child();  // the server is up
  Fd conn(connect_to_server());
  EXPECT_GE(conn.fd, 0) << "no fork server listening for this program";
  if (conn.fd < 0) return {};
  *server = server_pid();
  int status[2];
  EXPECT_EQ(::socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, status), 0);
  Fd ours(status[0]);
  {
    Fd theirs(status[1]);
    EXPECT_TRUE(mpd::send_request_header(conn.fd, len, theirs.fd));
  }
  std::string bytes(sent, 'x');
  if (sent > 0) {
    EXPECT_EQ(::send(conn.fd, bytes.data(), sent, MSG_NOSIGNAL), ssize_t(sent));
  }
  ::shutdown(conn.fd, SHUT_WR);
  return read_status(ours.fd);
}

TEST(ForkServerRequests, ALengthOverTheLimitIsRefusedWithAReply) {
  pid_t server = -1;
  std::string reply = hostile_request(mpd::kMaxLaunchPayload + 1, 0, &server);
  ASSERT_GT(server, 0) << "the fork server was not found";
  ASSERT_EQ(reply.size(), sizeof(int32_t)) << "the server closed the request without a reply";
  int32_t code = 0;
  std::memcpy(&code, reply.data(), sizeof code);
  EXPECT_EQ(code, mpd::kRequestTooLarge);  // not a pid
  run_one_forkserver_child();
  EXPECT_EQ(server_pid(), server) << "the fork server was replaced";
}

TEST(ForkServerRequests, ALengthThatPromisesMoreThanItSendsCostsNoMemory) {
  // The most a request may promise, and 100 bytes sent: the request is dropped as cut short.
  pid_t server = -1;
  std::string reply = hostile_request(mpd::kMaxLaunchPayload, 100, &server);
  EXPECT_TRUE(reply.empty()) << "no child may be started for a request cut short";
  ASSERT_GT(server, 0);
  long peak = peak_rss_kib(server);
  ASSERT_GT(peak, 0);
  EXPECT_LT(peak, 512L * 1024) << "the server allocated the promised length before reading it";
  run_one_forkserver_child();
  EXPECT_EQ(server_pid(), server) << "the fork server was replaced";
}

}  // namespace
