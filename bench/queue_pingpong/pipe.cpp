// queue_pingpong over two pipes (one each way), length-prefixed 8-byte frames, one write each.
#include <fcntl.h>
#include <unistd.h>

#include "fd_channel.hpp"
#include "queue_driver.hpp"

int main(int argc, char** argv) {
  const bench::Options opt = bench::parse_options(argc, argv, "queue_pingpong", "pipe");
  bench::OwnedFds down, up;
  if (pipe2(down.fd, O_CLOEXEC) != 0 || pipe2(up.fd, O_CLOEXEC) != 0) {
    bench::die("pipe2: %s", std::strerror(errno));
  }
  bench::FdChannel to_child(down.fd[0], down.fd[1]), to_parent(up.fd[0], up.fd[1]);
  const bool ok = bench::run_pingpong(opt, "int64", bench::scaled(opt.mode, 500),
                                      bench::scaled(opt.mode, 5'000), to_child, to_parent);
  return ok ? 0 : 1;
}
