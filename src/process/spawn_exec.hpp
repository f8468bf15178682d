// Executes this program again with MULTIPROC_LAUNCH=<kind>:... and up to three descriptors passed
// at fixed numbers (see launch_env.hpp). Shared by spawn and by the fork server's start.
#pragma once

#include <sys/types.h>

namespace multiproc::detail {
pid_t spawn_self(const char* kind, const int (&fds)[3]);
}
