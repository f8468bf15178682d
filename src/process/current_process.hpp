// The calling process's identity as multiproc sees it (name, daemon flag, parent). Internal.
#pragma once

#include <sys/types.h>
#include <string>

#include <multiproc/detail/child.hpp>

namespace multiproc::detail {
// current_process().name without the rest (the logger's, once per record).
std::string current_process_name();
// Called once in a child, before its task runs.
void set_current_process(const std::string& name, bool daemon, const ParentIdentity& parent);
// The start time of `pid` in clock ticks since boot (field 22 of /proc/<pid>/stat), or 0 when it
// does not exist, cannot be read, or has ended (a zombie).
unsigned long long live_process_start_time(pid_t pid);
}  // namespace multiproc::detail
