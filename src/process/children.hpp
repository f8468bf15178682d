// This process's record of the children it started (internal).
#pragma once

#include <memory>
#include <string>
#include <vector>

#include <multiproc/detail/popen.hpp>
#include <multiproc/process.hpp>

namespace multiproc::detail {
void register_child(std::shared_ptr<Popen> p, bool daemon, const std::string& name);
void unregister_child_if_done(const std::shared_ptr<Popen>& p);
void forget_children_after_fork();
std::vector<ProcessInfo> live_children();
// Counted out of the "is this process multi-threaded?" check before fork: threads multiproc
// itself runs, which it keeps away from what a forked child touches.
void note_internal_thread(int delta);
}  // namespace multiproc::detail
