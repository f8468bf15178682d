// Python's process API beyond Process itself (issue 10): the start method a child reports,
// current_process(), parent_process(), active_children(), Process::close(),
// get_all_start_methods(), and the multiprocessing logger.
#include <sys/wait.h>
#include <unistd.h>
#include <algorithm>
#include <csignal>
#include <cstdlib>
#include <string>
#include <vector>

#include <multiproc/pool.hpp>

#include "start_methods.hpp"

using namespace std::chrono_literals;

namespace {

void exit_with_method_code() {
  std::_Exit(10 + static_cast<int>(mp::get_start_method()));
}

void check_identity(std::string name, int parent_pid) {
  auto me = mp::current_process();
  if (me.name != name) std::_Exit(11);
  if (me.pid != getpid()) std::_Exit(12);
  if (!me.daemon) std::_Exit(13);
  auto parent = mp::parent_process();
  if (!parent) std::_Exit(14);
  if (parent->pid != parent_pid) std::_Exit(15);
  if (parent->name != "MainProcess") std::_Exit(16);
  if (!parent->is_alive()) std::_Exit(17);
  std::_Exit(0);
}

void sleep_forever() {
  for (;;) pause();
}
void do_nothing() {}

// Waits (at most 20 s) until its parent is gone, then says so.
void wait_for_parent_death(mp::Event gone) {
  auto parent = mp::parent_process();
  if (!parent) std::_Exit(3);
  for (int i = 0; i < 4000 && parent->is_alive(); ++i) usleep(5000);
  if (!parent->is_alive()) gone.set();
  std::_Exit(0);
}
// Starts a fork child that outlives it, then ends at once (skipping the exit-time join).
void start_orphan_and_exit(mp::Event gone) {
  mp::Process p(mp::get_context(mp::StartMethod::fork), wait_for_parent_death, gone);
  p.start();
  std::_Exit(0);
}

void log_something() {
  // The parent's logger settings arrive under every start method.
  if (!mp::get_logger().is_enabled_for(mp::LogLevel::info) ||
      mp::get_logger().is_enabled_for(mp::LogLevel::debug))
    std::_Exit(5);
  mp::get_logger().info("from the task");
}

int square(int x) {
  return x * x;
}

// Runs `body(m)` in a forked process of its own, so that the logger's settings stay out of the
// other tests; returns what it wrote to stderr, and its exit status in `status`.
std::string stderr_of_forked(void (*body)(mp::StartMethod), mp::StartMethod m, int& status) {
  int err[2];
  if (pipe(err) != 0) return "pipe failed";
  pid_t tester = fork();
  if (tester < 0) return "fork failed";
  if (tester == 0) {
    dup2(err[1], 2);
    close(err[0]);
    close(err[1]);
    body(m);
    std::_Exit(0);
  }
  close(err[1]);
  std::string out;
  char buf[4096];
  for (ssize_t n; (n = read(err[0], buf, sizeof buf)) > 0;) out.append(buf, static_cast<size_t>(n));
  close(err[0]);
  status = -1;
  waitpid(tester, &status, 0);
  return out;
}

void run_logged_process(mp::StartMethod m) {
  mp::log_to_stderr(mp::LogLevel::info);
  mp::Process p(mp::get_context(m), log_something);
  p.name("Logged-1");
  p.start();
  p.join(30s);
  std::_Exit(p.exitcode() == 0 ? 0 : 1);
}

void run_logged_pool(mp::StartMethod m) {
  mp::log_to_stderr(mp::LogLevel::info);
  {
    // One task per worker: the second item runs in a replacement.
    mp::Pool pool(
        mp::PoolOptions{.processes = 1, .maxtasksperchild = 1, .context = mp::get_context(m)});
    if (pool.map(square, std::vector<int>{2, 3}, 1) != std::vector<int>{4, 9}) std::_Exit(2);
    pool.close();
    pool.join();
  }
  std::_Exit(0);
}

size_t count_of(const std::string& text, const std::string& what) {
  size_t n = 0;
  for (size_t at = text.find(what); at != std::string::npos; at = text.find(what, at + 1)) ++n;
  return n;
}

}  // namespace

class ProcessApiTest : public StartMethodTest {};

TEST_P(ProcessApiTest, ChildReportsTheMethodThatStartedIt) {
  // The default stays fork: a context's child reports its own method, as Python's does.
  ASSERT_EQ(mp::get_start_method(), mp::StartMethod::fork);
  mp::Process p(ctx(), exit_with_method_code);
  p.start();
  ASSERT_TRUE(p.join(30s));
  EXPECT_EQ(p.exitcode(), 10 + static_cast<int>(method()));
}

TEST_P(ProcessApiTest, CurrentAndParentProcessInChild) {
  mp::Process p(ctx(), check_identity, std::string("kid"), static_cast<int>(getpid()));
  p.name("kid");
  p.daemon(true);
  p.start();
  ASSERT_TRUE(p.join(30s));
  EXPECT_EQ(p.exitcode(), 0);
}

TEST_P(ProcessApiTest, ParentProcessIsNotAliveOnceItEnds) {
  mp::Event gone;
  mp::Process p(ctx(), start_orphan_and_exit, gone);
  p.start();
  ASSERT_TRUE(p.join(30s));
  EXPECT_EQ(p.exitcode(), 0);
  EXPECT_TRUE(gone.wait(30s));
}

TEST_P(ProcessApiTest, ActiveChildrenListsLiveChildren) {
  mp::Process a(ctx(), sleep_forever);
  a.name("sleeper");
  a.start();
  mp::Process b(ctx(), do_nothing);
  b.start();
  ASSERT_TRUE(b.join(30s));
  std::vector<mp::ProcessInfo> kids = mp::active_children();
  ASSERT_EQ(kids.size(), 1u);
  EXPECT_EQ(kids[0].name, "sleeper");
  EXPECT_EQ(kids[0].pid, a.pid());
  EXPECT_EQ(kids[0].ppid, getpid());
  EXPECT_FALSE(kids[0].daemon);
  EXPECT_TRUE(kids[0].is_alive());
  a.kill();
  ASSERT_TRUE(a.join(30s));
  EXPECT_FALSE(kids[0].is_alive());
  EXPECT_TRUE(mp::active_children().empty());
}

TEST_P(ProcessApiTest, CloseReleasesAndLaterUseThrows) {
  mp::Process p(ctx(), sleep_forever);
  p.start();
  // Python: "Cannot close a process while it is still running".
  EXPECT_THROW(p.close(), mp::ProcessError);
  EXPECT_TRUE(p.is_alive());
  p.terminate();
  ASSERT_TRUE(p.join(30s));
  int fds = count_open_fds();
  p.close();
  EXPECT_EQ(count_open_fds(), fds - 1);  // the sentinel
  p.close();                             // closing again is allowed
  EXPECT_THROW(p.is_alive(), mp::ProcessError);
  EXPECT_THROW(p.join(), mp::ProcessError);
  EXPECT_THROW(p.exitcode(), mp::ProcessError);
  EXPECT_THROW(p.pid(), mp::ProcessError);
  EXPECT_THROW(p.sentinel(), mp::ProcessError);
  EXPECT_THROW(p.terminate(), mp::ProcessError);
  EXPECT_THROW(p.kill(), mp::ProcessError);
  EXPECT_THROW(p.start(), mp::ProcessError);
  EXPECT_EQ(p.name().substr(0, 8), "Process-");  // as Python, the name stays readable

  mp::Process never(ctx(), do_nothing);
  never.close();  // an unstarted process may be closed
  EXPECT_THROW(never.start(), mp::ProcessError);
}

TEST_P(ProcessApiTest, LoggerReportsChildStartAndExit) {
  int status = 0;
  std::string out = stderr_of_forked(run_logged_process, method(), status);
  EXPECT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 0) << out;
  // A forkserver child writes to the fork server's stderr (as in Python), which the server took
  // from the test process before this test redirected it: there only the exit status (which
  // says the child had the logger's settings) can be checked.
  if (method() == mp::StartMethod::forkserver) return;
  EXPECT_NE(out.find("[INFO/Logged-1] child process calling self.run()\n"), std::string::npos)
      << out;
  EXPECT_NE(out.find("[INFO/Logged-1] from the task\n"), std::string::npos) << out;
  EXPECT_NE(out.find("[INFO/Logged-1] process exiting with exitcode 0\n"), std::string::npos)
      << out;
}

TEST_P(ProcessApiTest, LoggerReportsPoolWorkersAndTheirReplacement) {
  int status = 0;
  std::string out = stderr_of_forked(run_logged_pool, method(), status);
  EXPECT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 0) << out;
  if (method() == mp::StartMethod::forkserver) return;  // as above
  // Two workers ran a task each; the replacement of the second may start before the pool stops.
  // Workers carry Python's names (ForkPoolWorker-1, SpawnPoolWorker-1).
  const std::string worker =
      method() == mp::StartMethod::fork ? "ForkPoolWorker-1" : "SpawnPoolWorker-1";
  const size_t started = count_of(out, "[INFO/" + worker + "] child process calling self.run()\n");
  EXPECT_GE(started, 2u) << out;
  EXPECT_EQ(count_of(out, "[INFO/" + worker + "] process exiting with exitcode 0\n"), started)
      << out;
  // The parent reports the replacement.
  EXPECT_NE(out.find("of the pool ended; starting a replacement\n"), std::string::npos) << out;
}

MP_ALL_START_METHODS(ProcessApiTest);

TEST(ProcessApi, MainProcessIdentity) {
  auto me = mp::current_process();
  EXPECT_EQ(me.name, "MainProcess");
  EXPECT_EQ(me.pid, getpid());
  EXPECT_EQ(me.ppid, getppid());
  EXPECT_FALSE(me.daemon);
  EXPECT_TRUE(me.is_alive());
  EXPECT_EQ(me.authkey.size(), 32u);
  EXPECT_EQ(me.authkey, mp::process_authkey());
  EXPECT_FALSE(mp::parent_process().has_value());  // Python: None in the main process
}

TEST(ProcessApi, AllStartMethodsDefaultFirst) {
  std::vector<mp::StartMethod> all = mp::get_all_start_methods();
  ASSERT_EQ(all.size(), 3u);
  EXPECT_EQ(all.front(), mp::StartMethod::fork);  // the platform's default, as Python
  for (auto m : {mp::StartMethod::fork, mp::StartMethod::spawn, mp::StartMethod::forkserver})
    EXPECT_NE(std::find(all.begin(), all.end(), m), all.end());
}

TEST(ProcessApi, ProcessInfoOfAReusedPidIsNotAlive) {
  mp::ProcessInfo me = mp::current_process();
  ASSERT_TRUE(me.is_alive());
  me.start_time += 1;  // the same pid, another process
  EXPECT_FALSE(me.is_alive());
}

TEST(ProcessApi, LoggerLevelsAndFormat) {
  int err[2];
  ASSERT_EQ(pipe(err), 0);
  pid_t tester = fork();
  ASSERT_GE(tester, 0);
  if (tester == 0) {
    dup2(err[1], 2);
    close(err[0]);
    close(err[1]);
    mp::Logger& log = mp::get_logger();
    log.info("silent: nothing is written before log_to_stderr");
    mp::Logger& same = mp::log_to_stderr();  // Python's default level: WARNING
    if (&same != &log) std::_Exit(2);
    log.info("silent: below the level");
    log.warning("shown warning");
    log.set_level(mp::LogLevel::debug);
    if (!log.is_enabled_for(mp::LogLevel::debug)) std::_Exit(3);
    log.debug("shown debug");
    log.log(static_cast<mp::LogLevel>(12), "odd level");
    std::_Exit(0);
  }
  close(err[1]);
  std::string out;
  char buf[4096];
  for (ssize_t n; (n = read(err[0], buf, sizeof buf)) > 0;) out.append(buf, static_cast<size_t>(n));
  close(err[0]);
  int status = 0;
  ASSERT_EQ(waitpid(tester, &status, 0), tester);
  EXPECT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 0) << out;
  EXPECT_EQ(out,
            "[WARNING/MainProcess] shown warning\n"
            "[DEBUG/MainProcess] shown debug\n"
            "[Level 12/MainProcess] odd level\n");
}
