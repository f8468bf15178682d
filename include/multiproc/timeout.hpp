// Timeouts as the API takes them: an empty optional waits forever; any std::chrono duration
// converts (10ms, 0.5s). A negative timeout is the same as zero: try once, do not wait.
#pragma once

#include <chrono>
#include <optional>

namespace multiproc {

using Timeout = std::optional<std::chrono::duration<double>>;

namespace detail {

// An absolute point on the monotonic clock, or "never". Waits are written against deadlines so
// that retries inside one call never extend the caller's timeout.
struct Deadline {
  using Clock = std::chrono::steady_clock;
  std::optional<Clock::time_point> at;

  static Deadline never() { return {}; }
  static Deadline now() { return {Clock::now()}; }
  static Deadline after(const Timeout& t) {
    if (!t) return {};
    auto d = std::chrono::duration_cast<Clock::duration>(*t);
    if (d < Clock::duration::zero()) d = Clock::duration::zero();
    return {Clock::now() + d};
  }
  bool expired() const { return at && Clock::now() >= *at; }
  bool is_never() const { return !at.has_value(); }
};

}  // namespace detail
}  // namespace multiproc
