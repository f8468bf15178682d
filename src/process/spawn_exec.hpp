// Executes this program again (the running binary, /proc/self/exe) with MULTIPROC_LAUNCH=<kind>:...
// and up to three descriptors passed at their own numbers (see launch_env.hpp). Shared by spawn
// and by the fork server's start. Throws ProcessError naming the setup call that failed.
#pragma once

#include <sys/types.h>

namespace multiproc::detail {
pid_t spawn_self(const char* kind, const int (&fds)[3]);
}
