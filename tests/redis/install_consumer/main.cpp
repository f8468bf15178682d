// Links multiproc::redis from an installed package; needs no server: an unreachable one must be a
// ConnectionError within the stated time.
#include <cstdio>
#include <multiproc/multiproc.hpp>
#include <multiproc/redis.hpp>

namespace mpr = multiproc::redis;
using namespace std::chrono_literals;

int main(int argc, char** argv) {
  multiproc::init(argc, argv);
  try {
    mpr::Queue<int> q("redis://:pw@127.0.0.1:1/0", "jobs", 0, {.unreachable_timeout = 0.1s});
  } catch (const mpr::ConnectionError&) {
    std::printf("consumer: 6 %s\n", MULTIPROC_VERSION);
    return 0;
  }
  return 1;
}
