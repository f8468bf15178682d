#include <multiproc/process.hpp>

#include <poll.h>
#include <unistd.h>
#include <algorithm>
#include <atomic>
#include <cerrno>
#include <csignal>
#include <cstdlib>
#include <mutex>
#include <vector>

#include <multiproc/errors.hpp>
#include "children.hpp"
#include "current_process.hpp"

namespace multiproc {
namespace detail {
namespace {

std::mutex g_name_mu;
std::string& process_name() {
  static auto* n = new std::string("MainProcess");
  return *n;
}

// Children this process started, so that exit can join (or, for daemons, terminate) them.
struct ChildRecord {
  std::shared_ptr<Popen> popen;
  bool daemon;
};
std::mutex g_children_mu;
std::vector<ChildRecord>& children() {
  static auto* v = new std::vector<ChildRecord>;
  return *v;
}

void at_exit_children() {
  std::vector<ChildRecord> list;
  {
    std::lock_guard lk(g_children_mu);
    list.swap(children());
  }
  for (auto& c : list)
    if (c.daemon && !c.popen->poll()) c.popen->send_signal(SIGTERM);
  for (auto& c : list) c.popen->wait(Deadline::never());
}

}  // namespace

void set_current_process_name(const std::string& name) {
  std::lock_guard lk(g_name_mu);
  process_name() = name;
}

void register_child(std::shared_ptr<Popen> p, bool daemon) {
  static bool installed = (std::atexit(at_exit_children), true);
  (void)installed;
  std::lock_guard lk(g_children_mu);
  auto& v = children();
  v.erase(std::remove_if(v.begin(), v.end(),
                         [](ChildRecord& c) { return c.popen->poll().has_value(); }),
          v.end());
  v.push_back({std::move(p), daemon});
}

void unregister_child_if_done(const std::shared_ptr<Popen>& p) {
  if (!p || !p->poll()) return;
  std::lock_guard lk(g_children_mu);
  std::erase_if(children(), [&](const ChildRecord& c) { return c.popen == p; });
}

void forget_children_after_fork() {
  // A forked child's copy of the list names its siblings, not its children. Leaked on purpose:
  // the records belong to the parent.
  new (&children()) std::vector<ChildRecord>();
}

size_t count_live_children() {
  std::lock_guard lk(g_children_mu);
  size_t n = 0;
  for (auto& c : children())
    if (!c.popen->poll()) ++n;
  return n;
}

// ---- Popen: what every start method shares -------------------------------------------------

Popen::~Popen() {
  if (sentinel_fd_ >= 0) ::close(sentinel_fd_);
}

std::optional<int> Popen::poll() {
  std::lock_guard lk(mu_);
  if (!exitcode_) exitcode_ = poll_exit();
  return exitcode_;
}

std::optional<int> Popen::wait(const Deadline& deadline) {
  for (;;) {
    if (auto code = poll()) return code;
    int ms = -1;
    if (deadline.at) {
      auto left = *deadline.at - Deadline::Clock::now();
      if (left <= Deadline::Clock::duration::zero()) return poll();
      ms = static_cast<int>(std::chrono::ceil<std::chrono::milliseconds>(left).count());
    }
    pollfd pfd{sentinel_fd_, POLLIN, 0};
    int r = ::poll(&pfd, 1, ms);
    if (r < 0 && errno != EINTR) return poll();
  }
}

void Popen::send_signal(int sig) {
  if (pid_ > 0 && !poll()) ::kill(pid_, sig);
}

std::unique_ptr<Popen> launch(StartMethod method, const std::string& payload) {
  switch (method) {
    case StartMethod::fork:
      return launch_fork(payload);
    case StartMethod::spawn:
      return launch_spawn(payload);
    case StartMethod::forkserver:
      return launch_forkserver(payload);
  }
  throw ProcessError("unknown start method");
}

}  // namespace detail

// ---- Process ---------------------------------------------------------------------------------

Process::Process(Process&&) noexcept = default;
Process& Process::operator=(Process&&) noexcept = default;
// A running child stays registered, and is joined (or terminated, if a daemon) at exit.
Process::~Process() {
  detail::unregister_child_if_done(popen_);
}

std::string Process::next_default_name() {
  static std::atomic<unsigned> counter{0};
  return "Process-" + std::to_string(counter.fetch_add(1) + 1);
}

void Process::start() {
  if (!has_task_) throw ProcessError("Process::start(): this Process has no task");
  if (popen_) throw ProcessError("Process::start(): a process can only be started once");
  StartMethod method = method_.value_or(get_start_method());
  detail::check_can_start_processes(method);
  detail::ChildPayload payload;
  payload.code = code_;
  payload.args = args_.bytes();
  payload.name = name_;
  payload.start_method = static_cast<uint8_t>(get_start_method());
  payload.start_method_set = 1;
  std::string bytes;
  detail::dump(bytes, payload);
  detail::note_process_started();
  popen_ = detail::launch(method, bytes);
  args_.sent();
  detail::register_child(popen_, daemon_);
}

bool Process::join(Timeout timeout) {
  if (!popen_) throw ProcessError("Process::join(): can only join a started process");
  return popen_->wait(detail::Deadline::after(timeout)).has_value();
}

bool Process::is_alive() {
  return popen_ && !popen_->poll().has_value();
}

std::optional<int> Process::exitcode() {
  if (!popen_) return std::nullopt;
  return popen_->poll();
}

pid_t Process::pid() const {
  return popen_ ? popen_->pid() : -1;
}
void Process::terminate() {
  if (popen_) popen_->send_signal(SIGTERM);
}
void Process::kill() {
  if (popen_) popen_->send_signal(SIGKILL);
}
void Process::daemon(bool d) {
  if (popen_) throw ProcessError("Process::daemon(): set it before start()");
  daemon_ = d;
}
int Process::sentinel() const {
  return popen_ ? popen_->sentinel() : -1;
}
StartMethod Process::start_method() const {
  return method_.value_or(get_start_method());
}

ProcessInfo current_process() {
  std::lock_guard lk(detail::g_name_mu);
  return {detail::process_name(), getpid(), getppid()};
}

size_t active_children() {
  return detail::count_live_children();
}

}  // namespace multiproc
