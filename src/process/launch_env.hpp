// How a process learns, before main(), that spawn or forkserver launched it: the parent puts
// MULTIPROC_LAUNCH=<kind>:<fd>:<fd>:<fd> in its environment. The descriptors keep in the child
// the numbers they had in the parent (any number below the parent's limit is below the child's,
// which inherits it), so a low `ulimit -n` never breaks a launch. Internal to src/process/.
#pragma once

#include <multiproc/context.hpp>

namespace multiproc::detail {

enum class LaunchKind { none, spawn, forkserver };

struct LaunchEnv {
  LaunchKind kind = LaunchKind::none;
  int fds[3] = {-1, -1, -1};
};

inline constexpr const char* kLaunchVar = "MULTIPROC_LAUNCH";

LaunchEnv read_launch_env();
[[noreturn]] void run_launched(const LaunchEnv& env);
void set_child_start_method(StartMethod m, bool explicitly_set);

}  // namespace multiproc::detail
