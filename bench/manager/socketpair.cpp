// manager's hardware bound for a proxy call: one request and one reply over a Unix stream
// socketpair between two processes, as bare as it gets: the server blocks in read() and answers
// with one write(), the client writes its request and blocks in read(); one syscall per message
// on each side, no framing, no decoding, no thread hand-off. Request and reply are the size of a
// dict_get's frames (48 and 32 bytes). A lock's acquire + release is two round trips, as a proxy's.
// split: client on CPU 0, server on CPU 1; unpinned: the scheduler's choice. Queue and start
// cases do not apply. Not a product: no authentication, no errors, no objects.
#include <sys/socket.h>
#include <unistd.h>

#include <array>
#include <cerrno>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <string>
#include <vector>

#include "bench_common.hpp"
#include "fd_channel.hpp"

namespace {

constexpr std::size_t kRequest = 48, kReply = 32;

bool read_all(int fd, char* p, std::size_t n) {
  while (n > 0) {
    const ssize_t r = ::read(fd, p, n);
    if (r < 0 && errno == EINTR) continue;
    if (r <= 0) return false;
    p += r;
    n -= static_cast<std::size_t>(r);
  }
  return true;
}

bool write_all(int fd, const char* p, std::size_t n) {
  while (n > 0) {
    const ssize_t r = ::write(fd, p, n);
    if (r < 0 && errno == EINTR) continue;
    if (r <= 0) return false;
    p += r;
    n -= static_cast<std::size_t>(r);
  }
  return true;
}

}  // namespace

int main(int argc, char** argv) {
  const bench::Options opt = bench::parse_options(argc, argv, "manager", "socketpair");
  const char* na = "a bound for one proxy call: a raw socket round trip";
  for (const char* c : {"queue_put_get", "queue_1to1"})
    bench::emit_na(opt, c, "items_per_s", "items/s", true, na);
  for (const char* m : {"p50_us", "p99_us"})
    bench::emit_na(opt, "queue_roundtrip", m, "us", false, na);
  for (const char* m : {"ms", "min_ms", "cpu_ms"})
    bench::emit_na(opt, "start_shutdown", m, "ms", false, na);

  bench::OwnedFds sv;
  if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv.fd) != 0)
    bench::die("socketpair: %s", std::strerror(errno));
  bench::pin(opt.placement, bench::Role::kProducer);
  const pid_t server = bench::fork_child([&] {
    bench::pin(opt.placement, bench::Role::kConsumer);
    ::close(sv.fd[0]);
    std::array<char, kRequest> req{};
    std::array<char, kReply> rep{};
    while (read_all(sv.fd[1], req.data(), req.size())) {
      rep[0] = req[0];
      if (!write_all(sv.fd[1], rep.data(), rep.size())) return 1;
    }
    return 0;  // EOF: the client is done
  });
  ::close(sv.fd[1]);
  sv.fd[1] = -1;
  const int fd = sv.fd[0];

  const std::uint64_t samples = bench::scaled(opt.mode, 20'000);
  const std::uint64_t warmup = bench::scaled(opt.mode, 2'000);
  bench::Status status;
  std::array<char, kRequest> req{};
  std::array<char, kReply> rep{};
  auto round_trip = [&](std::uint64_t i) {
    req[0] = static_cast<char>(i);
    return write_all(fd, req.data(), req.size()) && read_all(fd, rep.data(), rep.size()) &&
           rep[0] == req[0];
  };
  for (auto [name, trips] : {std::pair{"dict_set", 1}, std::pair{"dict_get", 1},
                             std::pair{"value_get", 1}, std::pair{"lock_acquire_release", 2}}) {
    std::vector<double> us;
    us.reserve(samples);
    bool good = true;
    for (std::uint64_t i = 0; i < warmup + samples; ++i) {
      const std::int64_t t0 = bench::now_ns();
      for (int t = 0; t < trips; ++t) good = round_trip(i + t) && good;
      const std::int64_t t1 = bench::now_ns();
      if (i >= warmup) us.push_back(static_cast<double>(t1 - t0) / 1000.0);
    }
    status.record(good);
    for (auto [metric, p] : {std::pair{"p50_us", 50.0}, std::pair{"p99_us", 99.0}})
      bench::emit(opt, bench::Line{.case_name = name,
                                   .metric = metric,
                                   .value = good ? bench::percentile(us, p) : NAN,
                                   .unit = "us",
                                   .higher_is_better = false,
                                   .ok = good,
                                   .check = "count=" + std::to_string(samples)});
  }
  ::close(sv.fd[0]);
  sv.fd[0] = -1;
  const std::string failed = bench::wait_children({server});
  if (!failed.empty()) {
    std::fprintf(stderr, "bench: %s\n", failed.c_str());
    status.record(false);
  }
  return status.exit_code();
}
