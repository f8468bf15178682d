// queue_pingpong over one unix-domain SOCK_STREAM socketpair used both ways, length-prefixed
// 8-byte frames, one write each.
#include <sys/socket.h>

#include "fd_channel.hpp"
#include "queue_driver.hpp"

int main(int argc, char** argv) {
  const bench::Options opt = bench::parse_options(argc, argv, "queue_pingpong", "socketpair");
  bench::OwnedFds sv;  // sv.fd[0]: the parent's end, sv.fd[1]: the child's end
  if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv.fd) != 0) {
    bench::die("socketpair: %s", std::strerror(errno));
  }
  bench::FdChannel to_child(sv.fd[1], sv.fd[0]), to_parent(sv.fd[0], sv.fd[1]);
  const bool ok = bench::run_pingpong(opt, "int64", bench::scaled(opt.mode, 500),
                                      bench::scaled(opt.mode, 5'000), to_child, to_parent);
  return ok ? 0 : 1;
}
