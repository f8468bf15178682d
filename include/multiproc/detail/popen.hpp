// One started child process, whatever the start method (CPython's popen_*.py). Each start
// method is one file in src/process/ (popen_fork.cpp, popen_spawn.cpp, popen_forkserver.cpp) that
// implements launch; they share this small surface: pid, a sentinel descriptor that becomes
// readable when the child ends, poll, wait, and signals.
#pragma once

#include <sys/types.h>
#include <memory>
#include <mutex>
#include <optional>
#include <string>

#include <multiproc/timeout.hpp>

namespace multiproc {
enum class StartMethod;
}

namespace multiproc::detail {

class Popen {
 public:
  virtual ~Popen();
  pid_t pid() const { return pid_; }
  // Readable once the child has ended. Owned by the Popen.
  int sentinel() const { return sentinel_fd_; }
  // The exit code (negative: killed by that signal) once the child has ended; never blocks.
  // Thread-safe: the pool's monitor and a terminating thread may poll one child together.
  std::optional<int> poll();
  std::optional<int> wait(const Deadline& deadline);
  void send_signal(int sig);

 protected:
  // The start method's way of learning the exit code; called under mu_ until it answers.
  virtual std::optional<int> poll_exit() = 0;
  pid_t pid_ = -1;
  int sentinel_fd_ = -1;

 private:
  std::mutex mu_;
  std::optional<int> exitcode_;
};

// What a child needs: the encoded ChildPayload (see child.hpp).
std::unique_ptr<Popen> launch_fork(const std::string& payload);
std::unique_ptr<Popen> launch_spawn(const std::string& payload);
std::unique_ptr<Popen> launch_forkserver(const std::string& payload);
std::unique_ptr<Popen> launch(StartMethod method, const std::string& payload);

}  // namespace multiproc::detail
