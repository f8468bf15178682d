#include <multiproc/detail/robust_mutex.hpp>

#include <fcntl.h>
#include <pthread.h>
#include <sys/syscall.h>
#include <sys/uio.h>
#include <unistd.h>
#include <cerrno>
#include <climits>
#include <csignal>
#include <cstdint>
#include <cstdio>

namespace multiproc::detail {
namespace {

// A fork()ed child's only thread has a new kernel id: forget the parent's (the handler runs in
// that thread). A child made by a raw clone (the resource tracker's) calls no library code.
void on_fork_child() {
  t_current_tid = 0;
}
[[maybe_unused]] const int g_atfork_registered = pthread_atfork(nullptr, nullptr, on_fork_child);

// How long a waiter sleeps before it looks whether the owner is still alive.
constexpr auto kOwnerCheckInterval = std::chrono::milliseconds(20);

}  // namespace

__thread uint32_t t_current_tid __attribute__((tls_model("initial-exec"))) = 0;

uint32_t current_tid_slow() {
  t_current_tid = static_cast<uint32_t>(syscall(SYS_gettid));
  return t_current_tid;
}

// Liveness is asked of the kernel without a file wherever it can answer, and every doubt
// means "alive, keep waiting": taking a lock from a live owner corrupts what it guards (two
// producers in one ring), while waiting a little longer for a dead one costs only time.
//
// Why not the kernel's robust-futex list (set_robust_list, FUTEX_OWNER_DIED)? glibc owns the one
// list head per thread for its own robust mutexes, and the list's word format (tid in bits
// 0-29, OWNER_DIED in bit 30, WAITERS in bit 31) clashes with the bits a queue's biased put lock
// keeps above kOwnerTidBits. Why not pidfds? One fd per check (the very resource whose lack
// caused the theft), and they name processes, not threads.
//
// So two questions that need no fd, then a file only where they cannot answer:
//  1. kill(tid, 0): ESRCH means no task has this id: dead. (The lookup is by thread id, so any
//     thread of any process is found; EPERM means it exists.)
//  2. process_vm_readv of one byte: a task that has exited but is not reaped yet (a SIGKILLed
//     process's zombie main thread) has no memory any more, and the kernel answers ESRCH before
//     it checks permissions. EFAULT (address 0 is not readable) means a live task with memory.
//  3. Otherwise (EPERM under Yama or seccomp, ENOSYS): /proc/<tid>/stat as a second opinion on a
//     zombie; if it cannot be read for any reason (EMFILE, ENFILE, no /proc: ENOENT), alive. A
//     task that went meanwhile is found by kill() at the next look.
bool thread_alive(uint32_t tid) {
  if (tid == 0) return false;                               // no thread
  if (tid > static_cast<uint32_t>(INT32_MAX)) return true;  // not an id we can ask about
  const pid_t id = static_cast<pid_t>(tid);
  if (::kill(id, 0) != 0 && errno == ESRCH) return false;
  char byte;
  iovec local{&byte, 1};
  iovec remote{nullptr, 1};
  if (::process_vm_readv(id, &local, 1, &remote, 1, 0) < 0) {
    if (errno == ESRCH) return false;
    if (errno == EFAULT) return true;
  } else {
    return true;
  }
  char path[64];
  std::snprintf(path, sizeof path, "/proc/%u/stat", tid);
  int fd = ::open(path, O_RDONLY | O_CLOEXEC);
  if (fd < 0) return true;
  char buf[512];
  ssize_t n = ::read(fd, buf, sizeof buf - 1);
  ::close(fd);
  if (n <= 0) return true;
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
    if (deadline.expired()) {
      // A short deadline (a get_nowait()) can pass before any nap below has looked at the owner:
      // a dead owner's lock is free to take, never reported busy.
      if (cur != self && !thread_alive(cur & kOwnerTidMask) &&
          m.owner.compare_exchange_strong(cur, self, std::memory_order_acquire,
                                          std::memory_order_relaxed)) {
        m.owner_deaths.fetch_add(1, std::memory_order_relaxed);
        return LockStatus::acquired_owner_died;
      }
      return LockStatus::timed_out;
    }
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
