// multiproc: Python's multiprocessing model for C++20. One header for everything:
//   context.hpp       init(), start methods, contexts, cpu_count()
//   process.hpp       Process
//   queues.hpp        Queue, JoinableQueue, SimpleQueue (shared memory)
//   ordered_queues.hpp LifoQueue, PriorityQueue (shared memory)
//   synchronize.hpp   Lock, RLock, Semaphore, BoundedSemaphore, Event, Condition, Barrier
//   sharedctypes.hpp  Value, Array
//   pool.hpp          Pool, AsyncResult
//   connection.hpp    Pipe, Connection, Listener, Client, wait()
//   managers.hpp      Manager and its proxies
//   shared_memory.hpp SharedMemory, ShareableList, SharedMemoryManager
//   thread_pool.hpp   ThreadPool (Pool's API on threads)
//   futures.hpp       ProcessPoolExecutor, ThreadPoolExecutor, Future
//   serialization.hpp what can cross a process boundary
//   errors.hpp        ProcessError and its family
#pragma once

#include <multiproc/connection.hpp>
#include <multiproc/context.hpp>
#include <multiproc/errors.hpp>
#include <multiproc/futures.hpp>
#include <multiproc/managers.hpp>
#include <multiproc/ordered_queues.hpp>
#include <multiproc/pool.hpp>
#include <multiproc/process.hpp>
#include <multiproc/queues.hpp>
#include <multiproc/serialization.hpp>
#include <multiproc/shared_memory.hpp>
#include <multiproc/sharedctypes.hpp>
#include <multiproc/synchronize.hpp>
#include <multiproc/thread_pool.hpp>
#include <multiproc/timeout.hpp>
#include <multiproc/version.hpp>
