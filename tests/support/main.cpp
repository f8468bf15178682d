// Test main: multiproc::init() must come first so that spawned and forkserver children run
// their task instead of the test suite.
#include <gtest/gtest.h>
#include <unistd.h>

#include <cstdlib>
#include <string>

#include <multiproc/context.hpp>

namespace {

// Each test program gets a shared-memory prefix of its own (the run's prefix and three more
// characters), so that a test counting its /dev/shm files is not disturbed by the other test
// programs ctest runs at the same time. Its children inherit it; the marker keeps a re-executed
// child (spawn) from adding another suffix. multiproc ignores prefixes over 16 characters.
void use_own_shm_prefix() {
  if (std::getenv("MULTIPROC_TEST_OWN_PREFIX")) return;
  const char* run = std::getenv("MULTIPROC_SHM_PREFIX");
  std::string prefix = run && *run ? run : "mp";
  if (prefix.size() + 3 > 16) return;
  static constexpr char digits[] = "0123456789abcdefghijklmnopqrstuvwxyz";
  unsigned v = static_cast<unsigned>(getpid()) % (36 * 36 * 36);
  for (int i = 0; i < 3; ++i, v /= 36) prefix.push_back(digits[v % 36]);
  setenv("MULTIPROC_SHM_PREFIX", prefix.c_str(), 1);
  setenv("MULTIPROC_TEST_OWN_PREFIX", "1", 1);
}

}  // namespace

int main(int argc, char** argv) {
  use_own_shm_prefix();
  multiproc::init(argc, argv);
  ::testing::InitGoogleTest(&argc, argv);
  return RUN_ALL_TESTS();
}
