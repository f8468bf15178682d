// Start methods and contexts: CPython's TestStartMethod semantics, and the one-line warning for
// fork() from a multi-threaded process (Python 3.12 warns too).
#include <atomic>
#include <thread>

#include "start_methods.hpp"

using namespace std::chrono_literals;

namespace {
void exit_with_method_code() {
  // The child's default start method is the parent's.
  std::_Exit(static_cast<int>(mp::get_start_method()) + 10);
}
void nothing() {}
}  // namespace

// These run in order in one process: the first start fixes the default method.
TEST(StartMethod, SetGetBeforeAnyProcess) {
  EXPECT_EQ(mp::get_start_method(), mp::StartMethod::fork);
  mp::set_start_method(mp::StartMethod::forkserver);
  EXPECT_EQ(mp::get_start_method(), mp::StartMethod::forkserver);
  // Set once already: changing it needs force, as Python's "context has already been set".
  EXPECT_THROW(mp::set_start_method(mp::StartMethod::spawn), mp::ProcessError);
  mp::set_start_method(mp::StartMethod::spawn, true);
  EXPECT_EQ(mp::get_start_method(), mp::StartMethod::spawn);
  mp::set_start_method(mp::StartMethod::spawn);  // the same method again is fine
}

TEST(StartMethod, ChildInheritsDefaultAndLaterChangesAreRefused) {
  mp::Process p(exit_with_method_code);
  p.start();
  p.join();
  EXPECT_EQ(p.exitcode(), static_cast<int>(mp::StartMethod::spawn) + 10);
  EXPECT_EQ(p.start_method(), mp::StartMethod::spawn);
  EXPECT_THROW(mp::set_start_method(mp::StartMethod::fork, true), mp::ProcessError);
  EXPECT_NO_THROW(mp::set_start_method(mp::StartMethod::spawn));
  // A context still picks another method for its own processes.
  mp::Process q(mp::get_context(mp::StartMethod::fork), nothing);
  EXPECT_EQ(q.start_method(), mp::StartMethod::fork);
  q.start();
  q.join();
  EXPECT_EQ(q.exitcode(), 0);
}

TEST(StartMethod, NamesAndCpuCount) {
  EXPECT_EQ(mp::to_string(mp::StartMethod::fork), "fork");
  EXPECT_EQ(mp::to_string(mp::StartMethod::spawn), "spawn");
  EXPECT_EQ(mp::to_string(mp::StartMethod::forkserver), "forkserver");
  EXPECT_GE(mp::cpu_count(), 1u);
  EXPECT_TRUE(mp::initialized());
  EXPECT_EQ(mp::current_process().name, "MainProcess");
}

TEST(StartMethod, ForkFromThreadedProcessWarnsOnce) {
  std::atomic<bool> stop{false};
  std::thread busy([&] {
    while (!stop) std::this_thread::sleep_for(1ms);
  });
  testing::internal::CaptureStderr();
  for (int i = 0; i < 2; ++i) {
    mp::Process p(mp::get_context(mp::StartMethod::fork), nothing);
    p.start();
    p.join();
  }
  std::string err = testing::internal::GetCapturedStderr();
  stop = true;
  busy.join();
  EXPECT_NE(err.find("multi-threaded"), std::string::npos) << err;
  EXPECT_NE(err.find("forkserver"), std::string::npos) << err;
  EXPECT_EQ(err.find("multi-threaded"), err.rfind("multi-threaded")) << "warned twice: " << err;
}
