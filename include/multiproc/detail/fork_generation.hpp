// fork_generation(): how many fork()s this process descends from, counted by an atfork handler.
// An object that records it when made can tell a copy of itself inherited by a forked child (whose
// threads, workers and connections are the parent's, and must not be used there) without a
// getpid() system call on every use. One counter for every part that needs it (Pool, the
// executors and ThreadPool, the Manager's per-thread connections).
#pragma once

#include <cstdint>

namespace multiproc::detail {

uint32_t fork_generation() noexcept;

}  // namespace multiproc::detail
