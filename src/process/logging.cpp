// The multiprocessing logger (logging.hpp).
#include <multiproc/logging.hpp>

#include <unistd.h>
#include <atomic>
#include <cerrno>
#include <string>

#include "current_process.hpp"

namespace multiproc {
namespace {

std::atomic<int> g_level{static_cast<int>(LogLevel::warning)};
std::atomic<bool> g_to_stderr{false};

std::string level_name(int level) {
  switch (static_cast<LogLevel>(level)) {
    case LogLevel::notset:
      return "NOTSET";
    case LogLevel::subdebug:
      return "SUBDEBUG";
    case LogLevel::debug:
      return "DEBUG";
    case LogLevel::info:
      return "INFO";
    case LogLevel::subwarning:
      return "SUBWARNING";
    case LogLevel::warning:
      return "WARNING";
    case LogLevel::error:
      return "ERROR";
    case LogLevel::critical:
      return "CRITICAL";
  }
  return "Level " + std::to_string(level);
}

}  // namespace

void Logger::set_level(LogLevel level) {
  g_level.store(static_cast<int>(level), std::memory_order_relaxed);
}
LogLevel Logger::level() const {
  return static_cast<LogLevel>(g_level.load(std::memory_order_relaxed));
}
bool Logger::is_enabled_for(LogLevel level) const {
  return g_to_stderr.load(std::memory_order_relaxed) &&
         static_cast<int>(level) >= g_level.load(std::memory_order_relaxed);
}

void Logger::log(LogLevel level, std::string_view message) {
  if (!is_enabled_for(level)) return;
  std::string line =
      "[" + level_name(static_cast<int>(level)) + "/" + detail::current_process_name() + "] ";
  line.append(message);
  line += '\n';
  // One write, so that lines from several processes stay whole.
  for (size_t done = 0; done < line.size();) {
    ssize_t n = ::write(2, line.data() + done, line.size() - done);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) return;
    done += static_cast<size_t>(n);
  }
}

Logger& get_logger() {
  static Logger logger;
  return logger;
}

Logger& log_to_stderr(std::optional<LogLevel> level) {
  if (level) get_logger().set_level(*level);
  g_to_stderr.store(true, std::memory_order_relaxed);
  return get_logger();
}

namespace detail {
int logger_state_for_child() {
  return g_to_stderr.load(std::memory_order_relaxed) ? g_level.load(std::memory_order_relaxed) : -1;
}
void adopt_logger_state(int state) {
  g_to_stderr.store(state >= 0, std::memory_order_relaxed);
  if (state >= 0) g_level.store(state, std::memory_order_relaxed);
}
}  // namespace detail

}  // namespace multiproc
