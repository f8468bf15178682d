#include <multiproc/detail/robust_mutex.hpp>

#include <fcntl.h>
#include <pthread.h>
#include <sys/syscall.h>
#include <unistd.h>
#include <cstdio>

namespace multiproc::detail {
namespace {

// Bumped in every child after fork(), so thread-local caches of ids know they are stale.
std::atomic<uint64_t> g_fork_generation{1};
void on_fork_child() {
  g_fork_generation.fetch_add(1, std::memory_order_relaxed);
}
[[maybe_unused]] const int g_atfork_registered = pthread_atfork(nullptr, nullptr, on_fork_child);

// How long a waiter sleeps before it looks whether the owner is still alive.
constexpr auto kOwnerCheckInterval = std::chrono::milliseconds(20);

}  // namespace

uint32_t current_tid() {
  thread_local uint64_t cached_generation = 0;
  thread_local uint32_t cached_tid = 0;
  uint64_t gen = g_fork_generation.load(std::memory_order_relaxed);
  if (cached_generation != gen) {
    cached_tid = static_cast<uint32_t>(syscall(SYS_gettid));
    cached_generation = gen;
  }
  return cached_tid;
}

bool thread_alive(uint32_t tid) {
  char path[64];
  std::snprintf(path, sizeof path, "/proc/%u/stat", tid);
  int fd = ::open(path, O_RDONLY | O_CLOEXEC);
  if (fd < 0) return false;
  char buf[512];
  ssize_t n = ::read(fd, buf, sizeof buf - 1);
  ::close(fd);
  if (n <= 0) return false;
  buf[n] = 0;
  // Format: "tid (comm) S ..." - comm may contain ')' so look for the last one.
  const char* close_paren = nullptr;
  for (const char* p = buf; *p; ++p)
    if (*p == ')') close_paren = p;
  if (!close_paren || close_paren[1] == 0) return true;
  char state = close_paren[2];
  return state != 'Z' && state != 'X' && state != 'x';
}

LockStatus robust_lock_slow(RobustMutexData& m, uint32_t self, const Deadline& deadline) {
  // Brief spin: the lock is held only while moving bytes.
  for (int i = 0; i < 200; ++i) {
    uint32_t cur = m.owner.load(std::memory_order_relaxed);
    if (cur == 0 && robust_try_lock(m, self)) return LockStatus::acquired;
    if (i % 32 == 31)
      yield_cpu();
    else
      cpu_relax();
  }
  for (;;) {
    uint32_t cur = m.owner.load(std::memory_order_relaxed);
    if (cur == 0) {
      if (robust_try_lock(m, self)) return LockStatus::acquired;
      continue;
    }
    if (deadline.expired()) return LockStatus::timed_out;
    Deadline nap{Deadline::Clock::now() + kOwnerCheckInterval};
    if (deadline.at && *deadline.at < *nap.at) nap = deadline;
    m.waiters.fetch_add(1, std::memory_order_seq_cst);
    bool woke = futex_wait(&m.owner, cur, nap);
    m.waiters.fetch_sub(1, std::memory_order_relaxed);
    if (!woke && m.owner.load(std::memory_order_relaxed) == cur && cur != self &&
        !thread_alive(cur & kOwnerTidMask)) {
      // The owner died holding the lock. Whoever wins this CAS inherits it.
      if (m.owner.compare_exchange_strong(cur, self, std::memory_order_acquire,
                                          std::memory_order_relaxed)) {
        m.owner_deaths.fetch_add(1, std::memory_order_relaxed);
        return LockStatus::acquired_owner_died;
      }
    }
  }
}

}  // namespace multiproc::detail
