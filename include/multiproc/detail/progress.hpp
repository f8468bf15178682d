// A progress bar on stderr for map/imap, opt-in (as Python users wrap imap in tqdm): done/total,
// rate, elapsed, ETA. On a terminal it redraws one line in place at most 10 times a second;
// otherwise (a log, a CI job) it prints a plain line at most every 5 seconds, and a last one.
#pragma once

#include <chrono>
#include <cstddef>
#include <string>

namespace multiproc::detail {

class ProgressBar {
 public:
  // total 0 = unknown (an input range without a size).
  ProgressBar(std::string label, size_t total);
  void update(size_t done);
  void finish(size_t done);
  // The line as it would be drawn (for tests).
  std::string render(size_t done) const;

 private:
  std::string label_;
  size_t total_;
  bool tty_;
  bool finished_ = false;
  std::chrono::steady_clock::time_point start_;
  std::chrono::steady_clock::time_point last_draw_{};
};

}  // namespace multiproc::detail
