// Process under every start method: CPython's _TestProcess semantics.
#include <unistd.h>
#include <csignal>
#include <cstdlib>
#include <string>

#include "start_methods.hpp"

using namespace std::chrono_literals;

namespace {

void exit_with(int code) {
  std::_Exit(code);
}
void sleep_forever() {
  for (;;) pause();
}
void do_nothing() {}
void throw_error(std::string msg) {
  throw std::runtime_error(msg);
}
void check_args(std::string s, int n, std::vector<int> v) {
  if (s != "hello" || n != 42 || v != std::vector<int>{1, 2, 3}) std::_Exit(7);
}
void check_name() {
  if (mp::current_process().name != "worker-x") std::_Exit(9);
}

}  // namespace

class ProcessTest : public StartMethodTest {};

TEST_P(ProcessTest, ExitCodeZeroOnReturn) {
  mp::Process p(ctx(), do_nothing);
  EXPECT_FALSE(p.exitcode().has_value());
  p.start();
  EXPECT_GT(p.pid(), 0);
  EXPECT_TRUE(p.join(30s));
  EXPECT_EQ(p.exitcode(), 0);
  EXPECT_FALSE(p.is_alive());
}

TEST_P(ProcessTest, ExitCodeFromExit) {
  mp::Process p(ctx(), exit_with, 3);
  p.start();
  p.join();
  EXPECT_EQ(p.exitcode(), 3);
}

TEST_P(ProcessTest, ThrowingTaskExitsWithOne) {
  mp::Process p(ctx(), throw_error, std::string("boom"));
  p.start();
  p.join();
  EXPECT_EQ(p.exitcode(), 1);
}

TEST_P(ProcessTest, ArgumentsArriveConvertedToParameterTypes) {
  mp::Process p(ctx(), check_args, "hello", 42, std::vector<int>{1, 2, 3});
  p.start();
  p.join();
  EXPECT_EQ(p.exitcode(), 0);
}

TEST_P(ProcessTest, CaptureFreeLambda) {
  mp::Process p(
      ctx(),
      [](int a, int b) {
        if (a + b != 5) std::_Exit(2);
      },
      2, 3);
  p.start();
  p.join();
  EXPECT_EQ(p.exitcode(), 0);
}

TEST_P(ProcessTest, TerminateGivesNegativeSignal) {
  mp::Process p(ctx(), sleep_forever);
  p.start();
  EXPECT_TRUE(p.is_alive());
  EXPECT_FALSE(p.join(50ms));  // join with timeout returns while it still runs
  EXPECT_TRUE(p.is_alive());
  p.terminate();
  EXPECT_TRUE(p.join(30s));
  EXPECT_EQ(p.exitcode(), -SIGTERM);
}

TEST_P(ProcessTest, KillGivesSigkill) {
  mp::Process p(ctx(), sleep_forever);
  p.start();
  p.kill();
  p.join();
  EXPECT_EQ(p.exitcode(), -SIGKILL);
}

TEST_P(ProcessTest, NameTravelsToChild) {
  mp::Process p(ctx(), check_name);
  p.name("worker-x");
  p.start();
  p.join();
  EXPECT_EQ(p.exitcode(), 0);
}

TEST_P(ProcessTest, StartTwiceIsAnError) {
  mp::Process p(ctx(), do_nothing);
  p.start();
  EXPECT_THROW(p.start(), mp::ProcessError);
  p.join();
}

TEST_P(ProcessTest, JoinBeforeStartIsAnError) {
  mp::Process p(ctx(), do_nothing);
  EXPECT_THROW(p.join(), mp::ProcessError);
}

TEST_P(ProcessTest, DaemonMustBeSetBeforeStart) {
  mp::Process p(ctx(), do_nothing);
  p.daemon(true);
  EXPECT_TRUE(p.daemon());
  p.start();
  EXPECT_THROW(p.daemon(false), mp::ProcessError);
  p.join();
}

TEST_P(ProcessTest, ManyChildrenNoFdLeak) {
  int before = count_open_fds();
  for (int round = 0; round < 2; ++round) {
    std::vector<mp::Process> ps;
    for (int i = 0; i < 5; ++i) ps.emplace_back(ctx(), exit_with, i);
    for (auto& p : ps) p.start();
    for (int i = 0; i < 5; ++i) {
      ps[i].join();
      EXPECT_EQ(ps[i].exitcode(), i);
    }
  }
  // The fork server's connection and the tracker's socket are opened once and kept.
  EXPECT_LE(count_open_fds(), before + 2);
}

TEST_P(ProcessTest, SentinelBecomesReadableAtExit) {
  mp::Process p(ctx(), do_nothing);
  EXPECT_EQ(p.sentinel(), -1);
  p.start();
  EXPECT_GE(p.sentinel(), 0);
  p.join();
}

MP_ALL_START_METHODS(ProcessTest);

TEST(StartMethod, DefaultIsFork) {
  EXPECT_EQ(mp::get_start_method(), mp::StartMethod::fork);
}

TEST(StartMethod, ContextCarriesItsMethod) {
  for (auto m : {mp::StartMethod::fork, mp::StartMethod::spawn, mp::StartMethod::forkserver}) {
    EXPECT_EQ(mp::get_context(m).get_start_method(), m);
  }
  EXPECT_GE(mp::cpu_count(), 1u);
}
