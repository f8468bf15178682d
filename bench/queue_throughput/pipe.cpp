// queue_throughput over a pipe: length-prefixed frames, one write per message (one per batch of 64
// for int64_1to1_batched), a buffered reader. The pipe is enlarged to 1 MiB (F_SETPIPE_SZ, the
// unprivileged maximum), as a bulk transfer would do. See bench/common/fd_channel.hpp.
#include <fcntl.h>
#include <unistd.h>

#include "fd_channel.hpp"
#include "queue_driver.hpp"

namespace {

constexpr bench::QuickItems kQuickItems{800, 10'000, 200'000, 10'000'000, 300'000};

}  // namespace

int main(int argc, char** argv) {
  const bench::Options opt = bench::parse_options(argc, argv, "queue_throughput", "pipe");
  bench::Status status;
  for (const bench::ThroughputCase& c : bench::kThroughputCases) {
    bench::OwnedFds fds;
    if (pipe2(fds.fd, O_CLOEXEC) != 0) bench::die("pipe2: %s", std::strerror(errno));
    fcntl(fds.fd[1], F_SETPIPE_SZ, 1 << 20);  // best effort
    bench::FdChannel ch(fds.fd[0], fds.fd[1], /*shared_reader=*/c.consumers > 1);
    status.record(bench::run_throughput(
        opt, c, bench::scaled(opt.mode, bench::quick_items(c, kQuickItems)), ch));
  }
  return status.exit_code();
}
