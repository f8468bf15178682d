// Test main: multiproc::init() must come first so that spawned and forkserver children run
// their task instead of the test suite.
#include <gtest/gtest.h>

#include <multiproc/context.hpp>

int main(int argc, char** argv) {
  multiproc::init(argc, argv);
  ::testing::InitGoogleTest(&argc, argv);
  return RUN_ALL_TESTS();
}
