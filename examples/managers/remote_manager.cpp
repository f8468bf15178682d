// A remote manager (CPython's "Using a remote manager"): one program, two modes.
//
//   remote_manager serve 0.0.0.0:50000      # hosts a job queue's worth of objects, by name
//   remote_manager connect server:50000     # another program, on this host or another
//
// Both sides read the auth key from MULTIPROC_EXAMPLE_KEY (it never goes on the command line,
// where `ps` would show it). With no arguments it runs both: it serves on 127.0.0.1, starts
// itself again as a separate program in `connect` mode, and checks what that client did.
//
// Objects made by name are the sharing point: the server side and every client ask for
// dict("results") and get the one dict. (A Queue made by a remote manager is shared memory of
// the server's machine, so clients on other hosts use server-hosted objects like these.)
#include <spawn.h>
#include <sys/wait.h>
#include <unistd.h>
#include <cstdio>
#include <cstdlib>
#include <string>

#include <multiproc/multiproc.hpp>

namespace mp = multiproc;

extern char** environ;

namespace {

std::string key() {
  const char* k = std::getenv("MULTIPROC_EXAMPLE_KEY");
  return k && *k ? k : "";
}

int client(const std::string& address) {
  mp::Manager m = mp::Manager::connect(address, key());
  auto results = m.dict<std::string, long>("results");
  auto lock = m.Lock("results lock");
  for (long i = 1; i <= 10; ++i) {
    std::lock_guard g(lock);
    results.set("square " + std::to_string(i), i * i);
  }
  m.Event("done").set();
  std::printf("client: wrote %zu results to %s\n", results.size(), address.c_str());
  return 0;
}

mp::Manager serve(const std::string& address) {
  mp::Manager m = mp::Manager::serve(address, key());
  std::printf("server: serving on %s\n", m.address().c_str());
  std::fflush(stdout);
  return m;
}

}  // namespace

int main(int argc, char** argv) {
  mp::init(argc, argv);
  const std::string mode = argc > 1 ? argv[1] : "";
  if (mode == "serve" && argc == 3) {
    if (key().empty()) return std::fprintf(stderr, "set MULTIPROC_EXAMPLE_KEY\n"), 2;
    mp::Manager m = serve(argv[2]);
    m.Event("never").wait();  // serves until killed
    return 0;
  }
  if (mode == "connect" && argc == 3) {
    if (key().empty()) return std::fprintf(stderr, "set MULTIPROC_EXAMPLE_KEY\n"), 2;
    return client(argv[2]);
  }
  if (argc != 1) {
    std::fprintf(stderr, "usage: %s [serve HOST:PORT | connect HOST:PORT]\n", argv[0]);
    return 2;
  }
  // The demo: a random key for this run, handed to the client program through its environment.
  std::string k;
  for (unsigned char c : mp::process_authkey()) k += "0123456789abcdef"[c % 16];
  ::setenv("MULTIPROC_EXAMPLE_KEY", k.c_str(), 1);
  mp::Manager m = serve("127.0.0.1:0");
  std::string address = m.address();
  char connect[] = "connect";
  char* child_argv[] = {argv[0], connect, address.data(), nullptr};
  pid_t pid = -1;
  if (posix_spawn(&pid, "/proc/self/exe", nullptr, nullptr, child_argv, environ) != 0) return 1;
  int status = 0;
  ::waitpid(pid, &status, 0);
  if (!m.Event("done").wait(std::chrono::seconds(10))) return 1;
  auto results = m.dict<std::string, long>("results");
  std::printf("server: the client's results: square 7 = %ld (%zu in all)\n",
              results.get("square 7"), results.size());
  return WIFEXITED(status) && WEXITSTATUS(status) == 0 && results.size() == 10 ? 0 : 1;
}
