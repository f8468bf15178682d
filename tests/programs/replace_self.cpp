// Replaces its own executable file on disk (renames a different file over it), then starts spawn
// children and a small spawn pool: they must run the binary that is running, not whatever the
// path now names. Exits 0 when every child worked.
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>
#include <cstdio>
#include <string>
#include <vector>

#include <multiproc/multiproc.hpp>

namespace mp = multiproc;

namespace {
void exit_with(int code) {
  std::_Exit(code);
}
int square(int x) {
  return x * x;
}
}  // namespace

int main(int argc, char** argv) {
  mp::init(argc, argv);
  char self[4096];
  ssize_t n = readlink("/proc/self/exe", self, sizeof self - 1);
  if (n <= 0) return 2;
  self[n] = 0;
  // A different, valid executable at the same path: a script that fails loudly.
  std::string other = std::string(self) + ".new";
  int fd = open(other.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0755);
  if (fd < 0) return 3;
  const char script[] = "#!/bin/sh\necho 'replaced file executed' >&2\nexit 42\n";
  if (write(fd, script, sizeof script - 1) != static_cast<ssize_t>(sizeof script - 1)) return 4;
  close(fd);
  if (rename(other.c_str(), self) != 0) return 5;
  try {
    auto ctx = mp::get_context(mp::StartMethod::spawn);
    for (int i = 0; i < 3; ++i) {
      mp::Process p(ctx, exit_with, 7);
      p.start();
      p.join();
      if (p.exitcode() != 7) {
        std::fprintf(stderr, "spawn child exit code %d, expected 7\n", p.exitcode().value_or(-1));
        return 6;
      }
    }
    mp::Pool pool(mp::PoolOptions{.processes = 2, .context = ctx});
    std::vector<int> xs{1, 2, 3, 4};
    if (pool.map(square, xs) != std::vector<int>{1, 4, 9, 16}) return 7;
  } catch (const std::exception& e) {
    std::fprintf(stderr, "replace_self: %s\n", e.what());
    return 8;
  }
  return 0;
}
