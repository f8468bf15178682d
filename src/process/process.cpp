#include <multiproc/process.hpp>

#include <fcntl.h>
#include <poll.h>
#include <unistd.h>
#include <algorithm>
#include <atomic>
#include <cerrno>
#include <csignal>
#include <cstdio>
#include <cstdlib>
#include <mutex>
#include <vector>

#include <multiproc/errors.hpp>
#include "children.hpp"
#include "current_process.hpp"

namespace multiproc {
namespace detail {
namespace {

// This process's identity; leaked on purpose, so that it outlives static destruction.
std::mutex g_name_mu;
std::string& process_name() {
  static auto* n = new std::string("MainProcess");
  return *n;
}
bool g_daemon = false;
std::optional<ProcessInfo>& parent_info() {
  static auto* p = new std::optional<ProcessInfo>;
  return *p;
}

// Children this process started, so that exit can join (or, for daemons, terminate) them.
struct ChildRecord {
  std::shared_ptr<Popen> popen;
  bool daemon;
  std::string name;
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

void set_current_process(const std::string& name, bool daemon, const ParentIdentity& parent) {
  std::lock_guard lk(g_name_mu);
  process_name() = name;
  g_daemon = daemon;
  ProcessInfo info;
  info.name = parent.name;
  info.pid = parent.pid;
  info.start_time = parent.start_time;
  parent_info() = std::move(info);
}

std::string current_process_name() {
  std::lock_guard lk(g_name_mu);
  return process_name();
}

ParentIdentity identity_for_child() {
  ParentIdentity id;
  id.name = current_process_name();
  id.pid = getpid();
  id.start_time = live_process_start_time(id.pid);
  return id;
}

unsigned long long live_process_start_time(pid_t pid) {
  if (pid <= 0) return 0;
  char path[40];
  std::snprintf(path, sizeof path, "/proc/%d/stat", static_cast<int>(pid));
  int fd = ::open(path, O_RDONLY | O_CLOEXEC);
  if (fd < 0) return 0;
  char buf[1024];
  ssize_t len = ::read(fd, buf, sizeof buf - 1);
  ::close(fd);
  if (len <= 0) return 0;
  buf[len] = 0;
  // The command name may hold spaces and parentheses: the fields start after the last ')'.
  const char* p = nullptr;
  for (ssize_t i = len - 1; i >= 0; --i)
    if (buf[i] == ')') {
      p = buf + i + 1;
      break;
    }
  if (!p || p[0] != ' ') return 0;
  // An ended process (a zombie, or being torn down) no longer runs.
  if (p[1] == 'Z' || p[1] == 'X' || p[1] == 'x') return 0;
  // After "(comm)" come " state ppid ...": field 22 (starttime) follows the 20th space.
  for (int spaces = 0; spaces < 20 && *p; ++p)
    if (*p == ' ') ++spaces;
  unsigned long long v = 0;
  for (; *p >= '0' && *p <= '9'; ++p) v = v * 10 + static_cast<unsigned long long>(*p - '0');
  return v;
}

void register_child(std::shared_ptr<Popen> p, bool daemon, const std::string& name) {
  static bool installed = (std::atexit(at_exit_children), true);
  (void)installed;
  std::lock_guard lk(g_children_mu);
  auto& v = children();
  v.erase(std::remove_if(v.begin(), v.end(),
                         [](ChildRecord& c) { return c.popen->poll().has_value(); }),
          v.end());
  v.push_back({std::move(p), daemon, name});
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

std::vector<ProcessInfo> live_children() {
  std::vector<ProcessInfo> list;
  const pid_t self = getpid();
  std::lock_guard lk(g_children_mu);
  for (auto& c : children()) {
    if (c.popen->poll()) continue;
    ProcessInfo info;
    info.name = c.name;
    info.pid = c.popen->pid();
    info.ppid = self;
    info.daemon = c.daemon;
    // Not reaped yet, so the pid is still this child's.
    info.start_time = live_process_start_time(info.pid);
    list.push_back(std::move(info));
  }
  return list;
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

void Process::check_not_closed(const char* what) const {
  if (closed_)
    throw ProcessError(std::string("Process::") + what + "(): the process object is closed");
}

void Process::close() {
  if (closed_) return;
  if (popen_ && !popen_->poll())
    throw ProcessError(
        "Process::close(): cannot close a process while it is still running; call "
        "join() or terminate() first");
  detail::unregister_child_if_done(popen_);
  popen_.reset();
  args_ = detail::EncodedArgs();  // handles no child took are given back now
  closed_ = true;
}

void Process::start() {
  check_not_closed("start");
  if (!has_task_) throw ProcessError("Process::start(): this Process has no task");
  if (popen_) throw ProcessError("Process::start(): a process can only be started once");
  StartMethod method = method_.value_or(get_start_method());
  detail::check_can_start_processes(method);
  detail::ChildPayload payload;
  payload.code = code_;
  payload.args = args_.bytes();
  payload.name = name_;
  payload.start_method = static_cast<uint8_t>(method);  // Python: the child reports its own method
  payload.start_method_set = 1;
  payload.daemon = daemon_ ? 1 : 0;
  std::string bytes;
  detail::dump(bytes, payload);
  detail::note_process_started();
  popen_ = detail::launch(method, bytes);
  args_.sent();
  detail::register_child(popen_, daemon_, name_);
}

bool Process::join(Timeout timeout) {
  check_not_closed("join");
  if (!popen_) throw ProcessError("Process::join(): can only join a started process");
  return popen_->wait(detail::Deadline::after(timeout)).has_value();
}

bool Process::is_alive() {
  check_not_closed("is_alive");
  return popen_ && !popen_->poll().has_value();
}

std::optional<int> Process::exitcode() {
  check_not_closed("exitcode");
  if (!popen_) return std::nullopt;
  return popen_->poll();
}

pid_t Process::pid() const {
  check_not_closed("pid");
  return popen_ ? popen_->pid() : -1;
}
void Process::terminate() {
  check_not_closed("terminate");
  if (popen_) popen_->send_signal(SIGTERM);
}
void Process::kill() {
  check_not_closed("kill");
  if (popen_) popen_->send_signal(SIGKILL);
}
void Process::daemon(bool d) {
  if (popen_) throw ProcessError("Process::daemon(): set it before start()");
  daemon_ = d;
}
int Process::sentinel() const {
  check_not_closed("sentinel");
  return popen_ ? popen_->sentinel() : -1;
}
StartMethod Process::start_method() const {
  return method_.value_or(get_start_method());
}

bool ProcessInfo::is_alive() const {
  if (pid <= 0) return false;
  unsigned long long now = detail::live_process_start_time(pid);
  return now != 0 && (start_time == 0 || now == start_time);
}

ProcessInfo current_process() {
  ProcessInfo me;
  {
    std::lock_guard lk(detail::g_name_mu);
    me.name = detail::process_name();
    me.daemon = detail::g_daemon;
  }
  me.authkey = process_authkey();
  me.pid = getpid();
  me.ppid = getppid();
  me.start_time = detail::live_process_start_time(me.pid);
  return me;
}

std::optional<ProcessInfo> parent_process() {
  std::lock_guard lk(detail::g_name_mu);
  return detail::parent_info();
}

std::vector<ProcessInfo> active_children() {
  return detail::live_children();
}

}  // namespace multiproc
