// Timeouts as the API takes them: an empty optional waits forever; any std::chrono duration
// converts (10ms, 0.5s). A negative timeout is the same as zero: try once, do not wait. An
// infinite timeout, or one of 100 years or more (seconds::max(), years(1000), 1e300s),
// also waits forever; a NaN timeout throws ProcessError.
#pragma once

#include <chrono>
#include <cmath>
#include <optional>

#include <multiproc/errors.hpp>

namespace multiproc {

using Timeout = std::optional<std::chrono::duration<double>>;

namespace detail {

// From this length on a timeout means "wait forever": no wait of a century can be told apart
// from one that never ends, and every longer one would overflow the clock's 64-bit nanoseconds
// (292 years) when added to now.
inline constexpr std::chrono::duration<double> kForeverTimeout{100.0 * 365.25 * 24 * 3600};

// For waits with a fast path that does not need the deadline: a NaN is refused all the same.
inline void check_timeout(const Timeout& t) {
  if (t && std::isnan(t->count()))
    throw ProcessError("timeout is NaN: give a number of seconds, or none");
}

// What a timeout means, as a steady_clock duration: empty for "forever" (none given, infinite,
// or kForeverTimeout or more), zero for a negative one. NaN is a caller's mistake, not a wait.
inline std::optional<std::chrono::steady_clock::duration> timeout_duration(const Timeout& t) {
  if (!t) return std::nullopt;
  check_timeout(t);
  const double s = t->count();
  if (s >= kForeverTimeout.count()) return std::nullopt;  // +inf included
  if (s <= 0) return std::chrono::steady_clock::duration::zero();
  return std::chrono::duration_cast<std::chrono::steady_clock::duration>(*t);
}

// An absolute point on the monotonic clock, or "never". Waits are written against deadlines so
// that retries inside one call never extend the caller's timeout.
struct Deadline {
  using Clock = std::chrono::steady_clock;
  std::optional<Clock::time_point> at;

  static Deadline never() { return {}; }
  static Deadline now() { return {Clock::now()}; }
  // Every timeout the API takes becomes a deadline here, so each wait treats infinite, huge and
  // NaN timeouts alike (see timeout_duration).
  static Deadline after(const Timeout& t) {
    const auto d = timeout_duration(t);
    if (!d) return {};
    return {Clock::now() + *d};
  }
  bool expired() const { return at && Clock::now() >= *at; }
  bool is_never() const { return !at.has_value(); }
};

}  // namespace detail
}  // namespace multiproc
