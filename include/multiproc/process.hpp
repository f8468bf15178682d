// Process: a task run in a child process (CPython's process.py).
//
//   mp::Process p(task, queue, 42);   // task: free function or capture-free lambda
//   p.start();  p.join();  p.exitcode();   // 0 on return, 1 if the task threw, -N if killed by N
//
// The arguments are encoded at construction, as the task's parameter types, and decoded in the
// child, so a queue, lock or value handle works as an argument under every start method. A
// Process owns its child: destroying a started Process that is still running leaves the child
// running (as Python does) and reaps it at exit; daemon children are terminated at exit.
#pragma once

#include <sys/types.h>
#include <memory>
#include <optional>
#include <string>

#include <multiproc/context.hpp>
#include <multiproc/detail/child.hpp>
#include <multiproc/detail/popen.hpp>
#include <multiproc/detail/task.hpp>
#include <multiproc/timeout.hpp>

namespace multiproc {

class Process {
 public:
  Process() = default;

  template <class F, class... Args>
  requires(!std::is_same_v<std::decay_t<F>, Context>) explicit Process(F task, Args&&... args) {
    prepare<F>(task, std::forward<Args>(args)...);
  }
  // A process that starts with the context's start method.
  template <class F, class... Args>
  Process(const Context& ctx, F task, Args&&... args) : method_(ctx.start_method()) {
    prepare<F>(task, std::forward<Args>(args)...);
  }

  Process(Process&&) noexcept;
  Process& operator=(Process&&) noexcept;
  Process(const Process&) = delete;
  Process& operator=(const Process&) = delete;
  ~Process();

  // Starts the child. Throws ProcessError if already started or without a task.
  void start();
  // Waits for the child to end, at most `timeout`. Returns whether it has ended.
  bool join(Timeout timeout = std::nullopt);
  bool is_alive();
  // Empty while running (or not started); otherwise the exit code (negative: signal number).
  std::optional<int> exitcode();
  pid_t pid() const;
  // SIGTERM / SIGKILL. No effect if the child has already ended.
  void terminate();
  void kill();

  const std::string& name() const { return name_; }
  void name(std::string n) { name_ = std::move(n); }
  bool daemon() const { return daemon_; }
  // Must be set before start(). Daemon children are terminated when the parent exits.
  void daemon(bool d);
  // A descriptor that becomes readable when the child ends (-1 before start).
  int sentinel() const;
  StartMethod start_method() const;

 private:
  template <class F, class... Args>
  void prepare(F task, Args&&... args) {
    code_ = detail::make_task_code<F, Args...>();
    detail::set_task_function(code_, task);
    detail::encode_task_args<F>(args_, std::forward<Args>(args)...);
    has_task_ = true;
    name_ = next_default_name();
  }
  static std::string next_default_name();

  detail::TaskCode code_;
  detail::EncodedArgs args_;  // handles in it are released if no child takes them
  bool has_task_ = false;
  std::string name_;
  bool daemon_ = false;
  std::optional<StartMethod> method_;
  std::shared_ptr<detail::Popen> popen_;
};

// The calling process: its name ("MainProcess" in the parent) and pid.
struct ProcessInfo {
  std::string name;
  pid_t pid;
  pid_t ppid;
};
ProcessInfo current_process();
// Processes started by this one that have not been joined yet and are still alive.
size_t active_children();

}  // namespace multiproc
