// Python's random.random() for the seed examples: a uniform double in [0, 1), seeded afresh in
// each process (Python reseeds its generator in a forked child too, so workers differ).
#pragma once

#include <unistd.h>
#include <charconv>
#include <random>
#include <string>

namespace py {

inline double random() {
  static thread_local pid_t seeded_in = 0;
  static thread_local std::mt19937_64 rng;
  if (seeded_in != getpid()) {
    rng.seed(std::random_device{}() ^ (static_cast<uint64_t>(getpid()) << 32));
    seeded_in = getpid();
  }
  return std::uniform_real_distribution<double>(0.0, 1.0)(rng);
}

}  // namespace py

// Python's repr(float): the shortest text that reads back as the same double.
inline std::string repr(double x) {
  char buf[32];
  auto r = std::to_chars(buf, buf + sizeof buf, x);
  return std::string(buf, r.ptr);
}
