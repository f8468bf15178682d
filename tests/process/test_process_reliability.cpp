// Process start under hostile conditions (issue 9): a low descriptor limit, pidfd_open failing,
// SIGCHLD ignored, a never-started Process holding handles, the program's file replaced on disk.
// Each hostile environment is made inside a child of the test, never in the test binary itself.
#include <fcntl.h>
#include <poll.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>
#include <csignal>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <set>
#include <string>
#include <vector>

#include "descendants.hpp"
#include "start_methods.hpp"

using namespace std::chrono_literals;

namespace {

void exit_with(int code) {
  std::_Exit(code);
}
int square(int x) {
  return x * x;
}
void use_queue(mp::Queue<int> q) {
  q.put(1);
}

// Runs `body` in a forked child and returns its exit code (-signal if killed; 99 on timeout).
template <class Body>
int in_forked_child(Body body, std::chrono::seconds limit = 60s) {
  std::fflush(nullptr);
  pid_t pid = fork();
  if (pid == 0) {
    int code = 0;
    try {
      code = body();
    } catch (const std::exception& e) {
      std::fprintf(stderr, "forked test child: %s\n", e.what());
      code = 98;
    }
    std::fflush(nullptr);
    _exit(code);
  }
  int status = 0;
  bool done = eventually([&] { return waitpid(pid, &status, WNOHANG) == pid; }, limit);
  if (!done) {
    kill(pid, SIGKILL);
    waitpid(pid, &status, 0);
    return 99;
  }
  return WIFEXITED(status) ? WEXITSTATUS(status) : -WTERMSIG(status);
}

// This process's segments in /dev/shm ("/<prefix><pid>_...").
int count_own_segments() {
  return count_shm_files(std::to_string(getpid()) + "_");
}

std::string test_program(const char* name) {
  char self[4096];
  ssize_t n = readlink("/proc/self/exe", self, sizeof self - 1);
  if (n <= 0) return {};
  std::string dir(self, static_cast<size_t>(n));
  return dir.substr(0, dir.rfind('/') + 1) + "program_" + name;
}

// Started by spawn (a fresh program with no fork server yet): lowers its own descriptor limit
// to 64, then starts spawn and forkserver children and a pool of each.
int start_at_ulimit_64() {
  rlimit lim{64, 64};
  if (setrlimit(RLIMIT_NOFILE, &lim) != 0) return 2;
  try {
    for (auto m : {mp::StartMethod::spawn, mp::StartMethod::forkserver}) {
      for (int i = 0; i < 3; ++i) {
        mp::Process p(mp::get_context(m), exit_with, 5);
        p.start();
        p.join();
        if (p.exitcode() != 5) {
          std::fprintf(stderr, "%s child: exit code %d\n", mp::to_string(m).data(),
                       p.exitcode().value_or(-1));
          return 3;
        }
      }
      mp::Pool pool(mp::PoolOptions{.processes = 2, .context = mp::get_context(m)});
      if (pool.map(square, std::vector<int>{1, 2, 3}) != std::vector<int>{1, 4, 9}) return 4;
    }
  } catch (const std::exception& e) {
    std::fprintf(stderr, "at ulimit -n 64: %s\n", e.what());
    return 5;
  }
  return 0;
}

void sleep_forever() {
  for (;;) pause();
}
void report_parent_then_sleep(mp::Queue<int> q) {
  q.put(static_cast<int>(getppid()));
  for (;;) pause();
}

// Started by spawn, so that the fork server killed here is this child's own.
int forkserver_killed() {
  auto fs = mp::get_context(mp::StartMethod::forkserver);
  try {
    mp::Process old(fs, sleep_forever);
    old.start();
    pid_t server = parent_of(old.pid());
    if (server <= 1 || server == getpid()) {
      old.kill();
      return 2;
    }
    kill(server, SIGKILL);
    if (!eventually([&] { return !exists_unreaped(old.pid()); })) {
      kill(old.pid(), SIGKILL);  // by pid: its status socket already reports it gone
      return 3;                  // the old server's children must end with it
    }
    for (int i = 0; i < 2; ++i) {
      mp::Process p(fs, exit_with, 6);
      p.start();
      p.join();
      if (p.exitcode() != 6) return 4;
    }
    // A pool: the in-flight task fails with WorkerLost, and the pool goes on.
    mp::Pool pool(mp::PoolOptions{.processes = 1, .context = fs});
    mp::Queue<int> q;
    auto stuck = pool.apply_async(report_parent_then_sleep, q);
    pid_t server2 = q.get(20s);
    if (server2 <= 1 || server2 == server) return 5;
    kill(server2, SIGKILL);
    try {
      stuck.get(30s);
      return 6;
    } catch (const mp::WorkerLost&) {
    }
    if (pool.apply(square, 3) != 9) return 7;
  } catch (const std::exception& e) {
    std::fprintf(stderr, "after the fork server was killed: %s\n", e.what());
    return 8;
  }
  return 0;
}

// Runs tests/programs/parent_death in its own process group, as a child of this (forked,
// subreaper) process, so that what it leaves behind becomes ours to see. Returns 0 when, after it
// ended as `how` says, all its descendants are gone and so are its segments.
int run_parent_death(const std::string& program, const std::string& how) {
  prctl(PR_SET_CHILD_SUBREAPER, 1);
  signal(SIGPIPE, SIG_IGN);  // "go" may find the helper already killed
  std::string prefix = "i9pd" + std::to_string(getpid()) + "r";
  int in[2], out[2];
  if (pipe(in) != 0 || pipe(out) != 0) return 20;
  pid_t helper = fork();
  if (helper == 0) {
    setpgid(0, 0);
    rlimit no_core{0, 0};
    setrlimit(RLIMIT_CORE, &no_core);
    dup2(in[0], 0);
    dup2(out[1], 1);
    close(in[1]);
    close(out[0]);
    setenv("MULTIPROC_SHM_PREFIX", prefix.c_str(), 1);
    const char* mode = how == "exit" || how == "throw" ? how.c_str() : "signal";
    execl(program.c_str(), program.c_str(), mode, nullptr);
    _exit(127);
  }
  setpgid(helper, helper);
  close(in[0]);
  close(out[1]);
  char ready[16] = {};
  pollfd pfd{out[0], POLLIN, 0};
  if (poll(&pfd, 1, 60000) <= 0 || read(out[0], ready, sizeof ready - 1) <= 0 ||
      std::strncmp(ready, "ready", 5) != 0) {
    kill(-helper, SIGKILL);
    return 21;
  }
  std::set<pid_t> started = descendants_of(helper, true);
  int code = 0;
  if (started.size() < 6 || count_shm_files_named(prefix) == 0) code = 22;
  if (how == "sigterm") kill(helper, SIGTERM);
  if (how == "sigkill") kill(helper, SIGKILL);
  if (how == "group") kill(-helper, SIGKILL);
  (void)!write(in[1], "go\n", 3);
  started.insert(helper);
  bool gone = eventually(
      [&] {
        while (waitpid(-1, nullptr, WNOHANG) > 0) {
        }
        for (pid_t p : started)
          if (exists_unreaped(p)) return false;
        return count_shm_files_named(prefix) == 0;
      },
      20s);
  if (!gone) {
    for (pid_t p : started)
      if (exists_unreaped(p)) {
        std::fprintf(stderr, "still running after the main process ended (%s): pid %d\n",
                     how.c_str(), static_cast<int>(p));
        kill(p, SIGKILL);
      }
    int left = count_shm_files_named(prefix);
    if (left) std::fprintf(stderr, "%d segments left in /dev/shm\n", left);
    code = code ? code : 23;
  }
  while (waitpid(-1, nullptr, 0) > 0) {
  }
  std::system(("rm -f /dev/shm/" + prefix + "*").c_str());
  return code;
}

}  // namespace

class ParentDeathTest : public ::testing::TestWithParam<std::string> {};

TEST_P(ParentDeathTest, EverythingStartedEndsWithTheMainProcess) {
  std::string program = test_program("parent_death");
  ASSERT_EQ(access(program.c_str(), X_OK), 0) << program;
  std::string how = GetParam();
  int code = in_forked_child([&] { return run_parent_death(program, how); }, 120s);
  EXPECT_EQ(code, 0);
}

INSTANTIATE_TEST_SUITE_P(, ParentDeathTest,
                         ::testing::Values("exit", "throw", "sigterm", "sigkill", "group"));

TEST(ForkServer, KilledServerIsStartedAgainOnNextUse) {
  mp::Process p(mp::get_context(mp::StartMethod::spawn), [] { std::_Exit(forkserver_killed()); });
  p.start();
  ASSERT_TRUE(p.join(120s));
  EXPECT_EQ(p.exitcode(), 0);
}

TEST(LaunchLimits, SpawnAndForkserverWorkAtUlimit64) {
  mp::Process p(mp::get_context(mp::StartMethod::spawn), [] { std::_Exit(start_at_ulimit_64()); });
  p.start();
  ASSERT_TRUE(p.join(120s));
  EXPECT_EQ(p.exitcode(), 0);
}

class ProcessReliabilityTest : public StartMethodTest {};

// With every descriptor taken, start() either fails with an error naming the call that failed,
// or starts a child that join() can wait for; it never leaves a child without a sentinel.
TEST_P(ProcessReliabilityTest, NoDescriptorForPidfdFailsClearlyOrJoins) {
  auto method = GetParam();
  int code = in_forked_child([method] {
    std::vector<int> filler;
    for (;;) {
      int fd = open("/dev/null", O_RDONLY | O_CLOEXEC);
      if (fd < 0) break;
      filler.push_back(fd);
    }
    if (filler.empty()) return 2;
    mp::Process p(mp::get_context(method), exit_with, 4);
    try {
      p.start();
    } catch (const mp::ProcessError& e) {
      // Descriptors back first: UBSan's checks themselves need one (a pipe).
      for (int fd : filler) close(fd);
      if (std::strstr(e.what(), "descriptor") == nullptr &&
          std::strstr(e.what(), "Too many open files") == nullptr) {
        std::fprintf(stderr, "unclear error: %s\n", e.what());
        return 3;
      }
      mp::Process again(mp::get_context(method), exit_with, 4);
      again.start();
      again.join();
      return again.exitcode() == 4 ? 0 : 4;
    }
    for (int fd : filler) close(fd);
    if (p.sentinel() < 0) return 5;
    if (!p.join(30s)) return 6;
    return p.exitcode() == 4 ? 0 : 7;
  });
  EXPECT_EQ(code, 0);
}

// The kernel discards the exit status of children when SIGCHLD is ignored: multiproc either
// reports the real code (the fork server reaps its own children) or refuses to start.
TEST_P(ProcessReliabilityTest, SigchldIgnoredReportsTruthOrRefuses) {
  auto method = GetParam();
  int code = in_forked_child([method] {
    signal(SIGCHLD, SIG_IGN);
    mp::Process p(mp::get_context(method), exit_with, 3);
    try {
      p.start();
    } catch (const mp::ProcessError& e) {
      return std::strstr(e.what(), "SIGCHLD") ? 0 : 2;
    }
    p.join();
    if (p.exitcode() != 3) {
      std::fprintf(stderr, "exit code reported as %d, real 3\n", p.exitcode().value_or(-1));
      return 3;
    }
    return 0;
  });
  EXPECT_EQ(code, 0);
}

TEST_P(ProcessReliabilityTest, NeverStartedProcessReleasesHandleArguments) {
  int before = count_own_segments();
  {
    mp::Queue<int> q;
    mp::Process p(ctx(), use_queue, q);
  }
  EXPECT_EQ(count_own_segments(), before);
  {
    // The argument outlives the queue handle it was made from.
    mp::Process p;
    {
      mp::Queue<int> q;
      p = mp::Process(ctx(), use_queue, q);
    }
    mp::Process moved(std::move(p));
  }
  EXPECT_EQ(count_own_segments(), before);
  {
    // Started: the child took the argument, nothing is left behind either.
    mp::Queue<int> q;
    mp::Process p(ctx(), use_queue, q);
    p.start();
    p.join();
    EXPECT_EQ(q.get(), 1);
  }
  EXPECT_EQ(count_own_segments(), before);
}

MP_ALL_START_METHODS(ProcessReliabilityTest);

TEST(ReplacedBinary, SpawnRunsTheRunningProgramNotItsPath) {
  std::string program = test_program("replace_self");
  ASSERT_EQ(access(program.c_str(), X_OK), 0) << program;
  char dir[] = "/tmp/multiproc-replace-XXXXXX";
  ASSERT_NE(mkdtemp(dir), nullptr);
  std::string copy = std::string(dir) + "/replace_self";
  std::string cmd = "cp '" + program + "' '" + copy + "'";
  ASSERT_EQ(std::system(cmd.c_str()), 0);
  int code = in_forked_child([&] {
    execl(copy.c_str(), copy.c_str(), nullptr);
    return 97;
  });
  std::system(("rm -rf '" + std::string(dir) + "'").c_str());
  EXPECT_EQ(code, 0);
}
