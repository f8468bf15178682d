// Asymmetric memory barriers between processes (membarrier(2), GLOBAL_EXPEDITED).
//
// A fast path that runs all the time (a queue's biased producer, queue_core.hpp) can then do
// without any fence, as long as the rare side that must be ordered against it (a producer
// revoking the bias, a consumer about to sleep) calls membarrier_global(): that runs a full
// barrier on every CPU currently running a thread of a registered process.
#pragma once

namespace multiproc::detail {

// Registers this process as a target of membarrier_global() (once per process; again after
// fork). Returns false where the kernel (or a seccomp filter) does not offer it: callers then
// keep their fences.
bool membarrier_register();
// A full memory barrier on every CPU running a thread of a registered process, and here.
void membarrier_global();

}  // namespace multiproc::detail
