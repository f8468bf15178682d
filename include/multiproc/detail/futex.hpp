// Waiting between processes. Every blocking operation in multiproc waits here: it spins briefly
// (a wake-up across CPUs costs ~30 us on this class of machine, a spin sees the peer in ~0.2 us),
// yields so that a peer sharing our CPU can run, and then sleeps on a futex in shared memory.
//
// WaitWord is an event count: a notifier that has made a condition true calls notify(); a
// waiter re-checks its predicate after announcing itself, so a wake-up is never lost. Both use
// sequentially consistent operations on `waiters` and the condition (a Dekker handshake).
#pragma once

#include <atomic>
#include <cstdint>

#include <multiproc/timeout.hpp>

namespace multiproc::detail {

static_assert(std::atomic<uint32_t>::is_always_lock_free);
static_assert(std::atomic<uint64_t>::is_always_lock_free);

// Sleeps while *word == expected, until woken or the deadline passes. Returns false on timeout.
// Spurious returns are possible; callers re-check their condition.
bool futex_wait(std::atomic<uint32_t>* word, uint32_t expected, const Deadline& deadline);
void futex_wake(std::atomic<uint32_t>* word, int count);
void yield_cpu();  // sched_yield(), kept out of line so headers need not include <sched.h>

inline void cpu_relax() {
#if defined(__x86_64__) || defined(__i386__)
  __builtin_ia32_pause();
#elif defined(__aarch64__)
  asm volatile("yield");
#endif
}

// Lives in shared memory. Zero-initialised memory is a valid WaitWord.
struct WaitWord {
  std::atomic<uint32_t> seq{0};
  std::atomic<uint32_t> waiters{0};

  // Wakes up to `count` sleepers. Call after the condition has been made true. The caller must
  // have executed a seq_cst operation (or fence) between publishing and calling this.
  void notify(int count = 1) {
    if (waiters.load(std::memory_order_seq_cst) != 0) {
      seq.fetch_add(1, std::memory_order_seq_cst);
      futex_wake(&seq, count);
    }
  }
  void notify_all() { notify(0x7fffffff); }
};

// How long a waiter keeps the CPU before sleeping. Short enough not to burn a core forever,
// long enough to catch a reply from a peer on another CPU without paying a futex wake-up.
inline constexpr auto kSpinBudget = std::chrono::microseconds(50);
inline constexpr int kPureSpins = 16;  // PAUSE-only iterations before we start yielding

// Waits until ready() returns true or the deadline passes; returns ready()'s final answer.
// `spin` false skips straight to sleeping (for background threads that must not compete for CPU).
// `before_sleep`, if given, runs after the waiter has announced itself and before its last
// look (a queue whose producers notify without a fence issues membarrier_global() there).
struct NothingBeforeSleep {
  void operator()() const {}
};
template <class Ready, class BeforeSleep = NothingBeforeSleep>
bool wait_for(WaitWord& w, Ready&& ready, const Deadline& deadline, bool spin = true,
              BeforeSleep before_sleep = {}) {
  if (ready()) return true;
  for (int i = 0; spin && i < kPureSpins; ++i) {
    cpu_relax();
    if (ready()) return true;
  }
  const auto spin_until = spin ? Deadline::Clock::now() + kSpinBudget : Deadline::Clock::now();
  while (Deadline::Clock::now() < spin_until) {
    yield_cpu();
    for (int i = 0; i < 8; ++i) {
      if (ready()) return true;
      cpu_relax();
    }
    if (deadline.expired()) return ready();
  }
  for (;;) {
    uint32_t s = w.seq.load(std::memory_order_seq_cst);
    w.waiters.fetch_add(1, std::memory_order_seq_cst);
    before_sleep();
    if (ready()) {
      w.waiters.fetch_sub(1, std::memory_order_relaxed);
      return true;
    }
    bool woke = futex_wait(&w.seq, s, deadline);
    w.waiters.fetch_sub(1, std::memory_order_relaxed);
    if (ready()) return true;
    if (!woke && deadline.expired()) return false;
  }
}

}  // namespace multiproc::detail
