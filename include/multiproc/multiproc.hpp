// multiproc: Python's multiprocessing model for C++20. One header for everything:
//   context.hpp       init(), start methods, contexts, cpu_count()
//   process.hpp       Process
//   queues.hpp        Queue, JoinableQueue, SimpleQueue, LifoQueue, PriorityQueue (shared memory)
//   synchronize.hpp   Lock, RLock, Semaphore, BoundedSemaphore, Event, Condition, Barrier
//   sharedctypes.hpp  Value, Array
//   pool.hpp          Pool, AsyncResult
//   serialization.hpp what can cross a process boundary
//   errors.hpp        ProcessError and its family
#pragma once

#include <multiproc/context.hpp>
#include <multiproc/errors.hpp>
#include <multiproc/process.hpp>
#include <multiproc/serialization.hpp>
#include <multiproc/timeout.hpp>
#include <multiproc/version.hpp>
#if __has_include(<multiproc/queues.hpp>)
#include <multiproc/queues.hpp>
#endif
#if __has_include(<multiproc/synchronize.hpp>)
#include <multiproc/synchronize.hpp>
#endif
#if __has_include(<multiproc/sharedctypes.hpp>)
#include <multiproc/sharedctypes.hpp>
#endif
#if __has_include(<multiproc/pool.hpp>)
#include <multiproc/pool.hpp>
#endif
#include <multiproc/managers.hpp>  // connection.hpp too
