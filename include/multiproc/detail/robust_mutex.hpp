// A mutex in shared memory that survives its owner's death.
//
// The futex word holds the owner's thread id (0 = free), so one CAS takes the lock and a waiter
// always knows whom it waits for. A waiter that has slept a while asks the kernel whether the
// owner still runs (thread_alive: no descriptor needed, and any doubt means alive); only when it
// does not, the waiter takes the lock over and is told so
// (LockStatus::owner_died). Code that holds this mutex must keep the protected state consistent
// at every single store (commit by one final index store), so a takeover needs no repair.
//
// Limitation: owner liveness is judged by thread id; if the id is reused by a new thread before a
// waiter looks (pid_max wraps), the waiter keeps waiting until that thread exits.
#pragma once

#include <atomic>
#include <cstdint>

#include <multiproc/detail/futex.hpp>
#include <multiproc/timeout.hpp>

namespace multiproc::detail {

// Bits of an owner word above any thread id (pid_max is at most 2^22): a user of the mutex may
// mark its ownership with them (a queue's biased put lock does); liveness is judged on the id.
inline constexpr uint32_t kOwnerTidBits = 22;
inline constexpr uint32_t kOwnerTidMask = (1u << kOwnerTidBits) - 1;

// This thread's kernel id, cached: 0 until the thread first asks, and reset to 0 in a fork()ed
// child (a pthread_atfork handler: the child's one thread has a new id).
//
// initial-exec: the library is built -fPIC, where the default model reaches a thread_local
// through a call to __tls_get_addr, and this is read several times per queue item. With
// initial-exec it is one %fs-relative load. That is fine for libmultiproc.so loaded at program
// start (the variable is placed in the static TLS block) and for a dlopen()ed module holding it
// (glibc keeps a static TLS surplus for such small initial-exec variables; these are 4 bytes).
// __thread rather than thread_local: a constant-initialised POD, so no TLS wrapper call either.
extern __thread uint32_t t_current_tid __attribute__((tls_model("initial-exec")));
uint32_t current_tid_slow();
inline uint32_t current_tid() {
  const uint32_t tid = t_current_tid;
  return tid != 0 ? tid : current_tid_slow();
}
// Whether thread `tid` still runs (exists and is not a zombie). Errs on "alive": an answer it
// cannot get (no free descriptor, no /proc) never makes a live owner dead. tid 0 is no thread.
bool thread_alive(uint32_t tid);

enum class LockStatus { acquired, acquired_owner_died, timed_out };

struct RobustMutexData {
  std::atomic<uint32_t> owner{0};         // futex word: owner's tid, 0 when free
  std::atomic<uint32_t> waiters{0};       // threads asleep (or about to sleep) on `owner`
  std::atomic<uint32_t> owner_deaths{0};  // how many times an owner died holding it
  uint32_t reserved{0};
};
static_assert(sizeof(RobustMutexData) == 16);

LockStatus robust_lock_slow(RobustMutexData& m, uint32_t self, const Deadline& deadline);

inline bool robust_try_lock(RobustMutexData& m, uint32_t self = current_tid()) {
  uint32_t expected = 0;
  return m.owner.compare_exchange_strong(expected, self, std::memory_order_acquire,
                                         std::memory_order_relaxed);
}

inline LockStatus robust_lock(RobustMutexData& m, const Deadline& deadline = Deadline::never()) {
  uint32_t self = current_tid();
  if (robust_try_lock(m, self)) return LockStatus::acquired;
  return robust_lock_slow(m, self, deadline);
}

// For code that never locks one mutex twice from a thread (queue internals): finding our own id
// in the owner word can then only mean a dead owner whose id the kernel has given to us, so we
// take the lock over instead of waiting for ourselves.
inline LockStatus robust_lock_nonrecursive(RobustMutexData& m,
                                           const Deadline& deadline = Deadline::never()) {
  uint32_t self = current_tid();
  if (m.owner.load(std::memory_order_acquire) == self) {
    m.owner_deaths.fetch_add(1, std::memory_order_relaxed);
    return LockStatus::acquired_owner_died;
  }
  if (robust_try_lock(m, self)) return LockStatus::acquired;
  return robust_lock_slow(m, self, deadline);
}

inline void robust_unlock(RobustMutexData& m) {
  // exchange is a full barrier on x86: it orders the release before the waiters check.
  m.owner.exchange(0, std::memory_order_seq_cst);
  if (m.waiters.load(std::memory_order_seq_cst) != 0) futex_wake(&m.owner, 1);
}

// RAII holder for code paths that cannot time out (queue internals).
class RobustGuard {
 public:
  explicit RobustGuard(RobustMutexData& m) : m_(m) { robust_lock(m_); }
  ~RobustGuard() { robust_unlock(m_); }
  RobustGuard(const RobustGuard&) = delete;
  RobustGuard& operator=(const RobustGuard&) = delete;

 private:
  RobustMutexData& m_;
};

}  // namespace multiproc::detail
