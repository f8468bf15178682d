// Errors thrown by multiproc. Every one derives from ProcessError (Python's
// multiprocessing.ProcessError), which derives from std::runtime_error, so a caller may
// catch broadly or precisely. Messages say what happened and, where there is a choice,
// what to do about it.
#pragma once

#include <sys/types.h>
#include <cstddef>
#include <exception>
#include <optional>
#include <stdexcept>
#include <string>
#include <type_traits>
#include <typeinfo>

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

// Where a task's exception was raised. Every exception a pool result throws for a task that threw
// carries it: RemoteError, and the standard (or registered) exception types thrown again as their
// own type. It is no std::exception itself, so a rethrown std::invalid_argument has one
// std::exception base; reach it with dynamic_cast:
//   catch (const std::invalid_argument& e) {
//     if (auto* info = dynamic_cast<const mp::RemoteErrorInfo*>(&e)) log(info->worker());
//   }
class RemoteErrorInfo {
 public:
  RemoteErrorInfo(std::string type_name, std::string message, std::string worker = {},
                  std::optional<size_t> item_index = std::nullopt)
      : type_name_(std::move(type_name)),
        message_(std::move(message)),
        worker_(std::move(worker)),
        item_index_(item_index) {}
  virtual ~RemoteErrorInfo() = default;
  RemoteErrorInfo(const RemoteErrorInfo&) = default;
  RemoteErrorInfo(RemoteErrorInfo&&) = default;
  RemoteErrorInfo& operator=(const RemoteErrorInfo&) = default;
  RemoteErrorInfo& operator=(RemoteErrorInfo&&) = default;

  // The exception's type as the other process saw it (demangled), e.g. "std::invalid_argument".
  const std::string& type_name() const noexcept { return type_name_; }
  // The task's own what(), without the details below.
  const std::string& message() const noexcept { return message_; }
  // The process that ran the task, "ForkPoolWorker-2 (pid 4242)"; empty if unknown.
  const std::string& worker() const noexcept { return worker_; }
  // map / starmap / imap: the failing item's position in the input.
  std::optional<size_t> item_index() const noexcept { return item_index_; }
  // " (raised in ForkPoolWorker-2 (pid 4242), item 3)", or "" when nothing is known.
  std::string origin() const {
    std::string s;
    if (!worker_.empty()) s = "raised in " + worker_;
    if (item_index_)
      s += (s.empty() ? "" : ", ") + std::string("item ") + std::to_string(*item_index_);
    return s.empty() ? s : " (" + s + ")";
  }

 private:
  std::string type_name_;
  std::string message_;
  std::string worker_;
  std::optional<size_t> item_index_;
};

// A task raised an exception whose type is not registered (see register_exception), or no
// std::exception at all. what() carries "TypeName: message (raised in Worker (pid N), item I)".
class RemoteError : public ProcessError, public RemoteErrorInfo {
 public:
  RemoteError(std::string type_name, std::string message)
      : RemoteError(RemoteErrorInfo(std::move(type_name), std::move(message))) {}
  explicit RemoteError(RemoteErrorInfo info)
      : ProcessError(info.type_name() + ": " + info.message() + info.origin()),
        RemoteErrorInfo(std::move(info)) {}
};

namespace detail {
// A task's exception thrown again as its own type E, with where it came from. what() is the
// task's message followed by origin().
template <class E>
class RemoteException final : public E, public RemoteErrorInfo {
 public:
  explicit RemoteException(RemoteErrorInfo info)
      : E(info.message() + info.origin()), RemoteErrorInfo(std::move(info)) {}
};
using RemoteExceptionFactory = std::exception_ptr (*)(RemoteErrorInfo&&);
// src/pool/remote_error.cpp: the registry, by demangled type name.
void register_remote_exception(const std::type_info& type, RemoteExceptionFactory make);
}  // namespace detail

// The exception a result throws for a task that raised `info`: the registered type named by
// info.type_name() (the standard exceptions that take a message are registered: std::logic_error,
// std::invalid_argument, std::domain_error, std::length_error, std::out_of_range,
// std::runtime_error, std::range_error, std::overflow_error, std::underflow_error), otherwise
// RemoteError.
std::exception_ptr make_remote_exception(RemoteErrorInfo info);

// Lets a task's exception of type E reach the caller as an E (Python re-raises the task's
// exception type). E must be constructible from its message; call it in the process that reads
// results, before they arrive. The rethrown exception's dynamic type derives from E and
// RemoteErrorInfo, so catch it by reference.
template <class E>
void register_exception() {
  static_assert(std::is_base_of_v<std::exception, E>,
                "register_exception<E>: E must derive from std::exception");
  static_assert(std::is_constructible_v<E, std::string>,
                "register_exception<E>: E must be constructible from its message (a std::string)");
  static_assert(!std::is_final_v<E>, "register_exception<E>: E must not be final");
  static_assert(!std::is_base_of_v<RemoteErrorInfo, E>,
                "register_exception<E>: E must not derive from RemoteErrorInfo");
  detail::register_remote_exception(typeid(E), [](RemoteErrorInfo&& info) {
    return std::make_exception_ptr(detail::RemoteException<E>(std::move(info)));
  });
}

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
