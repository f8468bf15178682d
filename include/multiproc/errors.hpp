// Errors thrown by multiproc. Every one derives from ProcessError (Python's
// multiprocessing.ProcessError), which derives from std::runtime_error, so a caller may
// catch broadly or precisely. Messages say what happened and, where there is a choice,
// what to do about it.
#pragma once

#include <sys/types.h>
#include <stdexcept>
#include <string>

namespace multiproc {

class ProcessError : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

// get()/get_nowait() found no item within the timeout (Python's queue.Empty).
class Empty : public ProcessError {
 public:
  Empty() : ProcessError("queue is empty") {}
  using ProcessError::ProcessError;
};

// put()/put_nowait() found no room within the timeout (Python's queue.Full).
class Full : public ProcessError {
 public:
  Full() : ProcessError("queue is full") {}
  using ProcessError::ProcessError;
};

// put() on a queue that was shut down, or get() on one that is shut down and drained (Python
// 3.13's queue.ShutDown).
class ShutDown : public ProcessError {
 public:
  using ProcessError::ProcessError;
};
using QueueClosed = ShutDown;  // its name before Queue::shutdown() existed

// A wait (AsyncResult::get, Barrier::wait, ...) ran past its timeout.
class TimeoutError : public ProcessError {
 public:
  using ProcessError::ProcessError;
};

// A task raised in another process. type_name() is the exception's type as the other process
// saw it (demangled), what() carries "TypeName: message".
class RemoteError : public ProcessError {
 public:
  RemoteError(std::string type_name, std::string message)
      : ProcessError(type_name + ": " + message),
        type_name_(std::move(type_name)),
        message_(std::move(message)) {}
  const std::string& type_name() const noexcept { return type_name_; }
  const std::string& message() const noexcept { return message_; }

 private:
  std::string type_name_;
  std::string message_;
};

// The process running a task died before answering. exitcode follows Process::exitcode():
// negative is the signal number that killed it, positive is the status it exited with.
class WorkerLost : public ProcessError {
 public:
  WorkerLost(pid_t pid, int exitcode, const std::string& what)
      : ProcessError(what), pid_(pid), exitcode_(exitcode) {}
  pid_t pid() const noexcept { return pid_; }
  int exitcode() const noexcept { return exitcode_; }

 private:
  pid_t pid_;
  int exitcode_;
};

// A peer presented the wrong authentication key (managers, connections).
class AuthenticationError : public ProcessError {
 public:
  using ProcessError::ProcessError;
};

// The pool can no longer run tasks (terminated, or its workers cannot be started).
class BrokenPool : public ProcessError {
 public:
  using ProcessError::ProcessError;
};

}  // namespace multiproc
