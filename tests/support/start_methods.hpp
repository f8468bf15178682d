// One test body, every start method (CPython installs each test for fork, spawn and forkserver).
//   class MyTest : public StartMethodTest {};
//   TEST_P(MyTest, Works) { mp::Process p(ctx(), task); ... }
//   MP_ALL_START_METHODS(MyTest);
#pragma once

#include <gtest/gtest.h>

#include <dirent.h>
#include <chrono>
#include <cstdlib>
#include <string>
#include <thread>

#include <multiproc/multiproc.hpp>

namespace mp = multiproc;

class StartMethodTest : public ::testing::TestWithParam<mp::StartMethod> {
 protected:
  mp::Context ctx() const { return mp::get_context(GetParam()); }
  mp::StartMethod method() const { return GetParam(); }
};

inline std::string start_method_name(const ::testing::TestParamInfo<mp::StartMethod>& info) {
  return std::string(mp::to_string(info.param));
}

#define MP_ALL_START_METHODS(Suite)                                                         \
  INSTANTIATE_TEST_SUITE_P(, Suite,                                                         \
                           ::testing::Values(mp::StartMethod::fork, mp::StartMethod::spawn, \
                                             mp::StartMethod::forkserver),                  \
                           start_method_name)

// Open descriptors of this process, to check that nothing leaks.
inline int count_open_fds() {
  int n = 0;
  if (DIR* d = opendir("/proc/self/fd")) {
    while (dirent* e = readdir(d))
      if (e->d_name[0] != '.') ++n;
    closedir(d);
  }
  return n - 1;  // the directory stream itself
}

// The /dev/shm files whose name starts with `prefix`.
inline int count_shm_files_named(const std::string& prefix) {
  int n = 0;
  if (DIR* d = opendir("/dev/shm")) {
    while (dirent* e = readdir(d))
      if (std::string(e->d_name).rfind(prefix, 0) == 0) ++n;
    closedir(d);
  }
  return n;
}

// The /dev/shm files of this test program (MULTIPROC_SHM_PREFIX, or multiproc's default "mp"),
// or those whose name goes on with `then` after the prefix.
inline int count_shm_files(const std::string& then = "") {
  const char* env = std::getenv("MULTIPROC_SHM_PREFIX");
  return count_shm_files_named((env && *env ? env : "mp") + then);
}

// Polls `cond` until it holds or `limit` passes; for asserting eventual behaviour, not speed.
template <class Cond>
bool eventually(Cond&& cond, std::chrono::milliseconds limit = std::chrono::seconds(20)) {
  auto until = std::chrono::steady_clock::now() + limit;
  while (std::chrono::steady_clock::now() < until) {
    if (cond()) return true;
    std::this_thread::sleep_for(std::chrono::milliseconds(5));
  }
  return cond();
}
