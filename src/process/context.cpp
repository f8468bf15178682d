#include <multiproc/context.hpp>

#include <sched.h>
#include <unistd.h>
#include <atomic>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <mutex>
#include <string>
#include <vector>

#include <multiproc/detail/child.hpp>
#include <multiproc/errors.hpp>
#include "launch_env.hpp"

namespace multiproc {
namespace {

std::mutex g_mu;
StartMethod g_method = StartMethod::fork;
bool g_method_set = false;
std::atomic<bool> g_process_started{false};
bool g_initialized = false;
std::string g_executable;
int (*g_worker_entry)(int, char**) = nullptr;

// Read before main() runs: a process launched by spawn or forkserver carries its instructions
// in the environment. Remembered here and removed from the environment, so that the child's
// own children do not mistake themselves for it.
detail::LaunchEnv g_launch = [] {
  detail::LaunchEnv env = detail::read_launch_env();
  return env;
}();

}  // namespace

std::string_view to_string(StartMethod m) {
  switch (m) {
    case StartMethod::fork:
      return "fork";
    case StartMethod::spawn:
      return "spawn";
    case StartMethod::forkserver:
      return "forkserver";
  }
  return "?";
}

void init(int argc, char** argv) {
  {
    std::lock_guard lk(g_mu);
    g_initialized = true;
  }
  if (g_launch.kind != detail::LaunchKind::none) {
    detail::LaunchEnv launch = g_launch;
    g_launch.kind = detail::LaunchKind::none;
    detail::run_launched(launch);  // never returns
  }
  for (int i = 1; i < argc; ++i) {
    if (std::strcmp(argv[i], "--multiproc-worker") != 0) continue;
    if (!g_worker_entry) {
      std::fprintf(stderr,
                   "multiproc: --multiproc-worker: this program is not linked with a component "
                   "that has workers (multiproc::redis)\n");
      std::exit(2);  // NOLINT(concurrency-mt-unsafe): init() runs before any thread
    }
    std::exit(g_worker_entry(argc, argv));  // NOLINT(concurrency-mt-unsafe): as above
  }
}

bool initialized() {
  std::lock_guard lk(g_mu);
  return g_initialized;
}

void set_start_method(StartMethod m, bool force) {
  std::lock_guard lk(g_mu);
  if (m == g_method) {
    g_method_set = true;
    return;
  }
  if (g_process_started.load())
    throw ProcessError("set_start_method(" + std::string(to_string(m)) +
                       "): the start method is already '" + std::string(to_string(g_method)) +
                       "' and a process has been started; set it first thing in main(), or "
                       "use get_context(method) for some processes");
  if (g_method_set && !force)
    throw ProcessError("set_start_method(" + std::string(to_string(m)) +
                       "): context has already been set to '" + std::string(to_string(g_method)) +
                       "'; pass force=true to change it");
  g_method = m;
  g_method_set = true;
}

StartMethod get_start_method() {
  std::lock_guard lk(g_mu);
  return g_method;
}

std::vector<StartMethod> get_all_start_methods() {
  return {StartMethod::fork, StartMethod::spawn, StartMethod::forkserver};
}

unsigned cpu_count() {
  cpu_set_t set;
  if (sched_getaffinity(0, sizeof set, &set) == 0) {
    int n = CPU_COUNT(&set);
    if (n > 0) return static_cast<unsigned>(n);
  }
  long n = sysconf(_SC_NPROCESSORS_ONLN);
  return n > 0 ? static_cast<unsigned>(n) : 1U;
}

Context get_context() {
  return Context(get_start_method());
}
Context get_context(StartMethod m) {
  return Context(m);
}

namespace detail {

void check_can_start_processes(StartMethod m) {
  if (g_launch.kind != LaunchKind::none) {
    // We are a spawned child and main() went on without calling init(): starting processes
    // from here would recurse without end.
    std::fprintf(stderr,
                 "multiproc: this process was started by the '%s' start method, but main() did "
                 "not call multiproc::init(argc, argv) before using multiproc. Make "
                 "multiproc::init(argc, argv) the first line of main().\n",
                 g_launch.kind == LaunchKind::forkserver ? "forkserver" : "spawn");
    std::fflush(stderr);
    _exit(kExitNoInit);
  }
  if (m != StartMethod::fork && !initialized())
    throw ProcessError(
        std::string("the '") + std::string(to_string(m)) +
        "' start method runs this program again in the child, which needs "
        "multiproc::init(argc, argv) as the first line of main(); it was not called");
}

void set_worker_entry(int (*entry)(int, char**)) {
  g_worker_entry = entry;
}

void note_process_started() {
  g_process_started.store(true);
}

const std::string& saved_executable() {
  std::lock_guard lk(g_mu);
  if (g_executable.empty()) {
    char buf[4096];
    ssize_t n = readlink("/proc/self/exe", buf, sizeof buf - 1);
    if (n > 0) g_executable.assign(buf, static_cast<size_t>(n));
  }
  return g_executable;
}

void set_child_start_method(StartMethod m, bool explicitly_set) {
  std::lock_guard lk(g_mu);
  g_method = m;
  g_method_set = explicitly_set;
}

}  // namespace detail
}  // namespace multiproc
