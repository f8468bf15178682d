// The scaffolding the chaos tests (tests/chaos) share. A chaos run is a program of its own: this
// test binary again, filtered to the run's test, with the start method in an environment variable
// and a /dev/shm prefix of its own, in its own process group, as the child of a forked subreaper,
// so that whatever it leaves behind (processes, and where asked /dev/shm files) can be seen, is
// reported and then cleared. The seed (MULTIPROC_CHAOS_SEED to replay another) chooses the run's
// victims and delays and is printed with the command that replays it.
//   const ChaosProgram kRun{...};
//   TEST(MyChaosRun, Body) { const auto method = chaos_method(kRun); if (!method) GTEST_SKIP(); ...
//   } TEST_P(MyChaos, Works) { run_chaos_program(kRun, method()); }
#pragma once

#include <signal.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <optional>
#include <string>

#include "descendants.hpp"
#include "start_methods.hpp"

#if defined(__SANITIZE_ADDRESS__) || defined(__SANITIZE_THREAD__)
inline constexpr bool kSanitized = true;
#elif defined(__has_feature)
#if __has_feature(address_sanitizer) || __has_feature(thread_sanitizer)
inline constexpr bool kSanitized = true;
#else
inline constexpr bool kSanitized = false;
#endif
#else
inline constexpr bool kSanitized = false;
#endif

// What the test that starts a chaos run, and the run itself, need to know of it.
struct ChaosProgram {
  const char* label;       // names the run in messages: "chaos", "redis chaos"
  const char* binary;      // this test program's name, for the replay line
  const char* suite;       // the TEST_P suite that starts the runs, for the replay line
  const char* run_test;    // the gtest filter that selects the run itself in this program
  const char* method_var;  // the environment variable naming the run's start method
  const char* prefix;      // the run's MULTIPROC_SHM_PREFIX starts with this
  bool check_segments;     // also fail when a /dev/shm file of the run's prefix outlives it
};

inline constexpr uint64_t kDefaultChaosSeed = 20261130;

// In the run's program, its start method; nullopt in any other (the run's test then skips).
inline std::optional<mp::StartMethod> chaos_method(const ChaosProgram& prog) {
  const char* env = std::getenv(prog.method_var);
  if (!env) return std::nullopt;
  const std::string name = env;
  return name == "fork"    ? mp::StartMethod::fork
         : name == "spawn" ? mp::StartMethod::spawn
                           : mp::StartMethod::forkserver;
}

// The run's seed (MULTIPROC_CHAOS_SEED, else the default), printed with how to replay it.
inline uint64_t announce_chaos_seed(const ChaosProgram& prog, mp::StartMethod method) {
  const char* env = std::getenv("MULTIPROC_CHAOS_SEED");
  const uint64_t seed = env && *env ? std::strtoull(env, nullptr, 10) : kDefaultChaosSeed;
  const std::string name(mp::to_string(method));
  std::printf("%s seed %llu (%s); replay: MULTIPROC_CHAOS_SEED=%llu %s --gtest_filter=%s.*/%s\n",
              prog.label, static_cast<unsigned long long>(seed), name.c_str(),
              static_cast<unsigned long long>(seed), prog.binary, prog.suite, name.c_str());
  std::fflush(stdout);
  return seed;
}

// In a forked subreaper: runs the chaos program for `method` and waits (bounded) for it; then
// checks that none of its processes (and, where asked, none of its segments) is left. Returns 0
// when all is well.
inline int chaos_program_in_subreaper(const ChaosProgram& prog, const std::string& method) {
  prctl(PR_SET_CHILD_SUBREAPER, 1);
  const std::string prefix = prog.prefix + std::to_string(getpid()) + "r";
  char self[4096];
  const ssize_t len = readlink("/proc/self/exe", self, sizeof self - 1);
  if (len <= 0) return 20;
  self[len] = 0;
  const std::string filter = std::string("--gtest_filter=") + prog.run_test;
  const pid_t child = fork();
  if (child == 0) {
    setpgid(0, 0);
    setenv("MULTIPROC_SHM_PREFIX", prefix.c_str(), 1);
    setenv(prog.method_var, method.c_str(), 1);
    execl(self, self, filter.c_str(), nullptr);
    _exit(127);
  }
  int status = 0, code = 0;
  if (!eventually([&] { return waitpid(child, &status, WNOHANG) == child; },
                  std::chrono::seconds(150))) {
    std::fprintf(stderr, "%s run (%s) hung\n", prog.label, method.c_str());
    kill(-child, SIGKILL);
    waitpid(child, &status, 0);
    code = 21;
  } else if (!WIFEXITED(status) || WEXITSTATUS(status) != 0) {
    std::fprintf(stderr, "%s run (%s) failed, status %d\n", prog.label, method.c_str(), status);
    code = 22;
  }
  // What the run left behind ends with it (the resource tracker's work): wait for that.
  auto segments_left = [&] { return prog.check_segments ? count_shm_files_named(prefix) : 0; };
  const bool clean = eventually(
      [&] {
        while (waitpid(-1, nullptr, WNOHANG) > 0) {
        }
        return live_descendants(getpid()).empty() && segments_left() == 0;
      },
      std::chrono::seconds(30));
  if (!clean) {
    for (pid_t p : live_descendants(getpid())) {
      std::fprintf(stderr, "left running by the %s run: pid %d\n", prog.label, static_cast<int>(p));
      kill(p, SIGKILL);
    }
    if (const int left = segments_left())
      std::fprintf(stderr, "%d segments left in /dev/shm (%s*)\n", left, prefix.c_str());
    code = code ? code : 23;
  }
  while (waitpid(-1, nullptr, 0) > 0) {
  }
  std::system(("rm -f /dev/shm/" + prefix + "*").c_str());
  return code;
}

// The body of the test that starts a run: the run, under `method`, from a forked subreaper.
inline void run_chaos_program(const ChaosProgram& prog, mp::StartMethod method) {
  // The run forks from a parent with threads (the pool's, the run's own). glibc's malloc is made
  // safe for that by its fork handlers; the sanitizers' allocator (GCC 12's libasan) is not: a
  // child forked while another thread held an allocator lock deadlocks at its first allocation,
  // seen in test_chaos as a pool worker stuck inside the task queue's get, holding its lock.
  if (kSanitized && method == mp::StartMethod::fork)
    GTEST_SKIP() << "fork from a threaded parent can deadlock in the sanitizer's allocator";
  std::fflush(nullptr);
  const pid_t pid = fork();
  if (pid == 0) {
    const int code = chaos_program_in_subreaper(prog, std::string(mp::to_string(method)));
    std::fflush(nullptr);
    _exit(code);
  }
  int status = 0;
  ASSERT_EQ(waitpid(pid, &status, 0), pid);
  ASSERT_TRUE(WIFEXITED(status)) << status;
  EXPECT_EQ(WEXITSTATUS(status), 0) << "see the " << prog.label << " run's output above";
}
