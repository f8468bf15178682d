// The calling process's identity as multiproc sees it (name, whether it is a child). Internal.
#pragma once

#include <string>

namespace multiproc::detail {
void set_current_process_name(const std::string& name);
}
