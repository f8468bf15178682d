// The child's side of every start method.
#include <multiproc/detail/child.hpp>

#include <cxxabi.h>
#include <unistd.h>
#include <charconv>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <exception>
#include <iostream>
#include <string>
#include <string_view>
#include <typeinfo>

#include <multiproc/detail/resource_tracker.hpp>
#include <multiproc/detail/segment.hpp>
#include <multiproc/errors.hpp>
#include <multiproc/logging.hpp>
#include "current_process.hpp"
#include "forkserver.hpp"
#include "launch_env.hpp"

namespace multiproc::detail {

std::string current_exception_type() {
  std::type_info* t = abi::__cxa_current_exception_type();
  if (!t) return "unknown";
  int status = 0;
  char* demangled = abi::__cxa_demangle(t->name(), nullptr, nullptr, &status);
  std::string name = (status == 0 && demangled) ? demangled : t->name();
  std::free(demangled);
  return name;
}

std::string current_exception_message() {
  try {
    throw;
  } catch (const std::exception& e) {
    return e.what();
  } catch (const std::string& s) {
    return s;
  } catch (const char* s) {
    return s ? s : "";
  } catch (...) {
    return "(an exception that is not a std::exception)";
  }
}

ResolvedTask resolve_task(const TaskCode& code) {
  ResolvedTask r;
  r.invoker = reinterpret_cast<Invoker>(const_cast<void*>(decode_code_address(code.invoker)));
  if (code.has_fn) r.fn = decode_code_address(code.fn);
  return r;
}

void exit_child(int code) {
  // Every child ends here (pool workers too), so this is where Python's exit record is written.
  get_logger().info("process exiting with exitcode " + std::to_string(code));
  std::cout.flush();
  std::cerr.flush();
  std::fflush(nullptr);
  release_all_segments();
  _exit(code);
}

void run_child(const char* payload, size_t size) {
  int code = 0;
  std::string name = "Process";
  try {
    ChildPayload p = load<ChildPayload>(std::string_view(payload, size));
    name = p.name;
    set_current_process(p.name, p.daemon != 0, p.parent);
    set_child_start_method(static_cast<StartMethod>(p.start_method), p.start_method_set != 0);
    adopt_logger_state(p.logger_state);
    ResolvedTask task = resolve_task(p.code);
    get_logger().info("child process calling self.run()");
    task.invoker(task.fn, p.args.data(), p.args.data() + p.args.size(), nullptr);
  } catch (...) {
    // Python prints the traceback and exits with 1.
    std::string type = current_exception_type();
    std::string msg = current_exception_message();
    std::fprintf(stderr, "Process %s (pid %d):\n%s: %s\n", name.c_str(), static_cast<int>(getpid()),
                 type.c_str(), msg.c_str());
    code = 1;
  }
  exit_child(code);
}

LaunchEnv read_launch_env() {
  LaunchEnv env;
  const char* v = std::getenv(kLaunchVar);
  if (!v) return env;
  // "<kind>:<fd>:<fd>:<fd>", parsed strictly: a number out of int's range is an error here, where
  // sscanf's %d would be undefined behaviour.
  std::string_view text(v);
  const size_t colon = text.find(':');
  std::string_view kind = text.substr(0, colon);
  int fds[3] = {-1, -1, -1};
  bool ok = colon != std::string_view::npos;
  const char* p = v + (ok ? colon : 0);
  const char* end = v + text.size();
  for (int& fd : fds) {
    if (!ok || p == end || *p != ':') {
      ok = false;
      break;
    }
    auto [next, ec] = std::from_chars(p + 1, end, fd);
    ok = ec == std::errc{};
    p = next;
  }
  if (ok && p == end && (kind == "spawn" || kind == "forkserver")) {
    env.kind = kind == "spawn" ? LaunchKind::spawn : LaunchKind::forkserver;
    for (int i = 0; i < 3; ++i) env.fds[i] = fds[i];
  }
  // Read once, in init() before the program starts any thread: no concurrent getenv to race.
  unsetenv(kLaunchVar);  // NOLINT(concurrency-mt-unsafe)
  return env;
}

namespace {
bool read_all_fd(int fd, std::string& out) {
  char buf[65536];
  for (;;) {
    ssize_t n = ::read(fd, buf, sizeof buf);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) return false;
    if (n == 0) return true;
    out.append(buf, static_cast<size_t>(n));
  }
}
}  // namespace

void run_launched(const LaunchEnv& env) {
  if (env.fds[2] >= 0) tracker_adopt(env.fds[2]);
  if (env.kind == LaunchKind::forkserver) forkserver_main(env.fds[0], env.fds[1]);
  // spawn: fds[0] is a memfd holding the payload, fds[1] the acknowledgement pipe.
  std::string payload;
  bool ok = read_all_fd(env.fds[0], payload);
  ::close(env.fds[0]);
  if (env.fds[1] >= 0) {
    char ack = 'A';
    (void)!::write(env.fds[1], &ack, 1);
    ::close(env.fds[1]);
  }
  if (!ok) {
    std::fprintf(stderr, "multiproc: spawned child could not read its task\n");
    exit_child(1);
  }
  run_child(payload.data(), payload.size());
}

}  // namespace multiproc::detail
