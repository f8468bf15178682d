// The child's side of every start method: decode the payload, run the task, exit with Python's
// exit codes (0 on return, 1 when the task throws, after printing the exception to stderr).
#pragma once

#include <cstdint>
#include <string>

#include <multiproc/detail/task.hpp>

namespace multiproc::detail {

struct ChildPayload {
  TaskCode code;
  std::string args;
  std::string name;
  uint8_t start_method = 0;      // the child's default start method (the parent's)
  uint8_t start_method_set = 0;  // whether the parent set it explicitly

  template <class Archive>
  void serialize(Archive& ar) {
    ar(code, args, name, start_method, start_method_set);
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
