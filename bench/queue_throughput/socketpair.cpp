// queue_throughput over a unix-domain SOCK_STREAM socketpair: length-prefixed frames, one write
// per message (one per batch of 64 for int64_1to1_batched), a buffered reader. Socket buffers are
// asked for 1 MiB (the kernel caps this at net.core.wmem_max/rmem_max). See fd_channel.hpp.
#include <sys/socket.h>

#include "fd_channel.hpp"
#include "queue_driver.hpp"

namespace {

constexpr bench::QuickItems kQuickItems{800, 10'000, 200'000, 10'000'000, 300'000};

}  // namespace

int main(int argc, char** argv) {
  const bench::Options opt = bench::parse_options(argc, argv, "queue_throughput", "socketpair");
  bench::Status status;
  for (const bench::ThroughputCase& c : bench::kThroughputCases) {
    bench::OwnedFds fds;
    if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, fds.fd) != 0) {
      bench::die("socketpair: %s", std::strerror(errno));
    }
    const int size = 1 << 20;
    setsockopt(fds.fd[0], SOL_SOCKET, SO_SNDBUF, &size, sizeof size);  // best effort
    setsockopt(fds.fd[1], SOL_SOCKET, SO_RCVBUF, &size, sizeof size);
    bench::FdChannel ch(fds.fd[1], fds.fd[0], /*shared_reader=*/c.consumers > 1);
    status.record(bench::run_throughput(
        opt, c, bench::scaled(opt.mode, bench::quick_items(c, kQuickItems)), ch));
  }
  return status.exit_code();
}
