// The child's side of every start method: decode the payload, run the task, exit with Python's
// exit codes (0 on return, 1 when the task throws, after printing the exception to stderr).
#pragma once

#include <cstdint>
#include <string>

#include <multiproc/detail/task.hpp>
#include <multiproc/logging.hpp>

namespace multiproc::detail {

// The process building a payload, as its child's parent_process() reports it.
struct ParentIdentity {
  std::string name;
  int32_t pid = -1;
  unsigned long long start_time = 0;

  template <class Archive>
  void serialize(Archive& ar) {
    ar(name, pid, start_time);
  }
};
ParentIdentity identity_for_child();

// Whoever builds a payload (Process, the pool) gets the parent's identity and logger settings
// filled in by the default initializers below.
struct ChildPayload {
  TaskCode code;
  std::string args;
  std::string name;
  uint8_t start_method = 0;      // the child's default: the method that started it (Python's)
  uint8_t start_method_set = 0;  // whether the parent set it explicitly
  uint8_t daemon = 0;
  ParentIdentity parent = identity_for_child();
  int32_t logger_state = logger_state_for_child();  // -1: the logger writes nothing

  template <class Archive>
  void serialize(Archive& ar) {
    ar(code, args, name, start_method, start_method_set, daemon, parent, logger_state);
  }
};

// Exit status of a spawned child whose main() did not call multiproc::init() first.
inline constexpr int kExitNoInit = 86;

[[noreturn]] void run_child(const char* payload, size_t size);
// Orderly exit of any child multiproc started: flush stdio, release shared segments, _exit.
[[noreturn]] void exit_child(int code);

// The exception's dynamic type, demangled ("std::runtime_error"); "unknown" for non-std throws.
std::string current_exception_type();
std::string current_exception_message();

}  // namespace multiproc::detail
