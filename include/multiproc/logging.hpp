// The multiprocessing logger (Python's multiprocessing.get_logger() / log_to_stderr()): one
// process-wide Logger with a level, silent until log_to_stderr() gives it stderr as its output.
// multiproc reports at INFO what Python's does: a child "child process calling self.run()" when it
// starts its task and "process exiting with exitcode N" when it ends (pool workers included). A
// child starts with its parent's logger settings, under every start method.
//
//   mp::log_to_stderr(mp::LogLevel::info);
//   // stderr: [INFO/Process-1] child process calling self.run()
//
// Each record is one write() of one line, "[LEVEL/process name] message", so lines from several
// processes never interleave.
#pragma once

#include <optional>
#include <string_view>

namespace multiproc {

// Python's logging levels, with multiprocessing's SUBDEBUG and SUBWARNING. Other values are
// allowed and print as "Level N".
enum class LogLevel : int {
  notset = 0,
  subdebug = 5,
  debug = 10,
  info = 20,
  subwarning = 25,
  warning = 30,
  error = 40,
  critical = 50,
};

class Logger {
 public:
  // Records below `level` are dropped. Default: warning (Python's effective default).
  void set_level(LogLevel level);
  LogLevel level() const;
  // Whether a record at `level` would be written.
  bool is_enabled_for(LogLevel level) const;

  void log(LogLevel level, std::string_view message);
  void subdebug(std::string_view m) { log(LogLevel::subdebug, m); }
  void debug(std::string_view m) { log(LogLevel::debug, m); }
  void info(std::string_view m) { log(LogLevel::info, m); }
  void subwarning(std::string_view m) { log(LogLevel::subwarning, m); }
  void warning(std::string_view m) { log(LogLevel::warning, m); }
  void error(std::string_view m) { log(LogLevel::error, m); }
  void critical(std::string_view m) { log(LogLevel::critical, m); }
};

// The logger (Python's get_logger()). It writes nothing until log_to_stderr() is called.
Logger& get_logger();
// Makes the logger write to stderr and, if given, sets its level; returns it.
Logger& log_to_stderr(std::optional<LogLevel> level = std::nullopt);

namespace detail {
// The logger's settings as they travel to a child (ChildPayload): -1 = no output, else the level.
int logger_state_for_child();
void adopt_logger_state(int state);
}  // namespace detail

}  // namespace multiproc
