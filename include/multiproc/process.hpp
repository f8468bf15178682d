// Process: a task run in a child process (CPython's process.py).
//
//   mp::Process p(task, queue, 42);   // task: free function or capture-free lambda
//   p.start();  p.join();  p.exitcode();   // 0 on return, 1 if the task threw, -N if killed by N
//
// The arguments are encoded at construction, as the task's parameter types, and decoded in the
// child, so a queue, lock or value handle works as an argument under every start method. A
// Process owns its child: destroying a started Process that is still running leaves the child
// running (as Python does) and reaps it at exit; daemon children are terminated at exit.
//
// Also Python's module functions about processes: current_process(), parent_process() and
// active_children(), which describe processes as ProcessInfo values.
#pragma once

#include <sys/types.h>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include <multiproc/context.hpp>
#include <multiproc/detail/child.hpp>
#include <multiproc/detail/popen.hpp>
#include <multiproc/detail/task.hpp>
#include <multiproc/logging.hpp>
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

  // Starts the child. Throws ProcessError if already started, closed or without a task.
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

  // Releases what the Process holds for its child (its sentinel descriptor, its entry in the
  // list of children) once the child has ended; Python's Process.close(). Throws ProcessError
  // while the child runs. Afterwards every method but name(), daemon(), start_method() and
  // close() throws ProcessError (Python's ValueError "process object is closed").
  void close();

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
  void check_not_closed(const char* what) const;

  detail::TaskCode code_;
  detail::EncodedArgs args_;  // handles in it are released if no child takes them
  bool has_task_ = false;
  std::string name_;
  bool daemon_ = false;
  std::optional<StartMethod> method_;
  std::shared_ptr<detail::Popen> popen_;
  bool closed_ = false;
};

// A process as current_process(), parent_process() and active_children() describe it (the
// fields of Python's Process object that make sense for a process this one does not own).
struct ProcessInfo {
  std::string name;
  pid_t pid = -1;
  pid_t ppid = -1;  // the kernel's parent (under forkserver, the fork server); -1 where unknown
  bool daemon = false;
  // The process auth key (Python's authkey): set by current_process() only; other processes'
  // keys are not known here.
  std::string authkey;
  // The kernel's start time of `pid` (clock ticks since boot): tells that process from a later
  // one given the same pid. 0 = unknown.
  unsigned long long start_time = 0;

  // Whether this process still runs (an ended child not yet joined does not). A pid reused by
  // another process never counts: the start time must match.
  bool is_alive() const;
};

// The calling process: "MainProcess" in the main process, else the Process's name and daemon flag.
ProcessInfo current_process();
// This program's default auth key: 32 random bytes from the kernel, made once per program and
// inherited by every process it starts (fork: memory; spawn and forkserver: the launch
// environment). Never written to disk. current_process().authkey is the same.
const std::string& process_authkey();
// The process that started this one (Python's parent_process()): empty in the main process. Under
// forkserver it is the process that asked for this child, not the fork server.
std::optional<ProcessInfo> parent_process();
// Processes this one started through Process that are still alive (Python's active_children();
// pool workers are not listed, as the pool owns them).
std::vector<ProcessInfo> active_children();

}  // namespace multiproc
