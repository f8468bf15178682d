// Out-of-line parts of synchronize.hpp (and the SyncCore of detail/sync_data.hpp, which Value and
// Array share): opening objects, the slow paths of Lock, Semaphore's holder table, Condition's
// waiter slots and Barrier's generations.
#include <multiproc/synchronize.hpp>

#include <pthread.h>
#include <algorithm>
#include <chrono>
#include <climits>
#include <mutex>
#include <unordered_map>

namespace multiproc::detail {
namespace {

// One SyncCore per object per process, by name, so that per-process state (previous_owner_died)
// is shared by every handle. Leaked on purpose, as the segment registry: handles in static
// storage may be destroyed after function-local statics.
struct CoreRegistry {
  std::mutex mu;
  std::unordered_map<std::string, std::weak_ptr<SyncCore>> by_name;
};
CoreRegistry& cores() {
  static CoreRegistry* r = new CoreRegistry;
  return *r;
}
// A fork() while another thread holds the registry lock must not leave it locked in the child.
// Never held while taking the segment registry's lock (nor the other way round), so the order
// relative to segments_before_fork() does not matter.
void registry_prepare() {
  cores().mu.lock();
}
void registry_unlock() {
  cores().mu.unlock();
}
[[maybe_unused]] const int g_registry_atfork =
    pthread_atfork(registry_prepare, registry_unlock, registry_unlock);

// A tag read from a segment may hold any value: one that names no type is reported as such.
const char* type_name(uint16_t t) {
  if (t < static_cast<uint16_t>(SyncType::lock) || t > static_cast<uint16_t>(SyncType::array))
    return "unknown object";
  return sync_type_name(static_cast<SyncType>(t));
}

}  // namespace

std::shared_ptr<SyncCore> SyncCore::create(SegmentKind kind, SyncType type, size_t data_size,
                                           uint64_t check) {
  auto seg = Segment::create(kind, std::max(data_size, sizeof(SyncTag)), true);
  auto* tag = static_cast<SyncTag*>(seg->payload());
  tag->magic = kSyncMagic;
  tag->type = static_cast<uint16_t>(type);
  tag->version = kSyncLayoutVersion;
  tag->check = check;
  std::shared_ptr<SyncCore> core(new SyncCore(std::move(seg)));
  std::lock_guard lk(cores().mu);
  cores().by_name[core->name()] = core;
  return core;
}

std::shared_ptr<SyncCore> SyncCore::attach(const std::string& name, SegmentKind kind, SyncType type,
                                           size_t min_data_size, uint64_t check) {
  auto seg = Segment::attach(name, kind, true, /*consume_flight_ref=*/true);
  if (seg->payload_size() < std::max(min_data_size, sizeof(SyncTag)))
    throw ProcessError("shared memory segment " + name + " is too small for a multiproc " +
                       type_name(static_cast<uint16_t>(type)));
  const auto* tag = static_cast<const SyncTag*>(seg->payload());
  if (tag->magic != kSyncMagic || tag->version != kSyncLayoutVersion)
    throw ProcessError("shared memory segment " + name +
                       " is not a multiproc synchronisation object of this layout version");
  if (tag->type != static_cast<uint16_t>(type))
    throw ProcessError("shared memory segment " + name + " holds a " + type_name(tag->type) +
                       ", not a " + type_name(static_cast<uint16_t>(type)));
  if (tag->check != check)
    throw ProcessError("shared memory segment " + name + " holds a " + type_name(tag->type) +
                       " of another element type");
  std::lock_guard lk(cores().mu);
  auto& slot = cores().by_name[name];
  if (auto existing = slot.lock()) return existing;
  std::shared_ptr<SyncCore> core(new SyncCore(std::move(seg)));
  slot = core;
  return core;
}

SyncCore::~SyncCore() {
  std::lock_guard lk(cores().mu);
  auto it = cores().by_name.find(seg_->name());
  if (it != cores().by_name.end() && it->second.expired()) cores().by_name.erase(it);
  // seg_ (and with it this process's reference) goes after the registry lock is released.
}

bool mutex_acquire(SyncCore& core, RobustMutexData& m, bool block, const Deadline& deadline) {
  const uint32_t self = current_tid();
  if (!block) {
    for (int attempt = 0; attempt < 2; ++attempt) {
      if (robust_try_lock(m, self)) {
        core.note_acquired(false);
        return true;
      }
      uint32_t cur = m.owner.load(std::memory_order_relaxed);
      if (cur == 0) continue;  // freed meanwhile: try again
      if (cur == self || thread_alive(cur)) return false;
      if (m.owner.compare_exchange_strong(cur, self, std::memory_order_acquire,
                                          std::memory_order_relaxed)) {
        m.owner_deaths.fetch_add(1, std::memory_order_relaxed);
        core.note_acquired(true);
        return true;
      }
    }
    return false;
  }
  switch (robust_lock_slow(m, self, deadline)) {
    case LockStatus::acquired:
      core.note_acquired(false);
      return true;
    case LockStatus::acquired_owner_died:
      core.note_acquired(true);
      return true;
    case LockStatus::timed_out:
      break;
  }
  return false;
}

void mutex_release_any(RobustMutexData& m, const char* what) {
  // exchange: a full barrier, ordering the critical section before the waiters check; and it
  // tells a release of a free lock apart even when two releases race.
  if (m.owner.exchange(0, std::memory_order_seq_cst) == 0)
    throw ProcessError(std::string(what) +
                       ": the lock is not acquired (released too many times; Python raises "
                       "ValueError)");
  if (m.waiters.load(std::memory_order_seq_cst) != 0) futex_wake(&m.owner, 1);
}

namespace {

// ---- Semaphore -----------------------------------------------------------------------------

constexpr auto kHolderScanInterval = std::chrono::milliseconds(20);

int64_t steady_ns() {
  return std::chrono::duration_cast<std::chrono::nanoseconds>(
             std::chrono::steady_clock::now().time_since_epoch())
      .count();
}

// Takes one unit if there is one. seq_cst: the load is the predicate of wait_for's handshake.
bool sem_try_take(SemaphoreData& d) {
  uint32_t v = d.value.load(std::memory_order_seq_cst);
  while (v > 0)
    if (d.value.compare_exchange_weak(v, v - 1, std::memory_order_seq_cst,
                                      std::memory_order_seq_cst))
      return true;
  return false;
}

uint32_t holders_used(const SemaphoreData& d) {
  return std::min(d.holders_used.load(std::memory_order_acquire), kSemHolderSlots);
}

// Notes that thread `self` holds n more units. Only `self` adds to or claims its own slot, so
// one thread has at most one slot. When the table is full the units go untracked.
void sem_note_holder(SemaphoreData& d, uint32_t self, uint32_t n) {
  const uint32_t used = holders_used(d);
  for (uint32_t i = 0; i < used; ++i)
    if (d.holders[i].tid.load(std::memory_order_relaxed) == self) {
      d.holders[i].count.fetch_add(n, std::memory_order_relaxed);
      return;
    }
  for (uint32_t i = 0; i < kSemHolderSlots; ++i) {
    auto& h = d.holders[i];
    uint32_t expected = 0;
    if (h.tid.load(std::memory_order_relaxed) != 0 ||
        !h.tid.compare_exchange_strong(expected, self, std::memory_order_acq_rel,
                                       std::memory_order_relaxed))
      continue;
    h.count.fetch_add(n, std::memory_order_relaxed);
    uint32_t u = d.holders_used.load(std::memory_order_relaxed);
    while (u < i + 1 && !d.holders_used.compare_exchange_weak(u, i + 1, std::memory_order_release,
                                                              std::memory_order_relaxed)) {
    }
    return;
  }
}

// Takes up to `want` units off slot h (never below zero). Returns how many.
uint32_t take_from_slot(SemHolder& h, uint32_t want) {
  uint32_t c = h.count.load(std::memory_order_relaxed);
  while (c > 0) {
    uint32_t k = std::min(c, want);
    if (h.count.compare_exchange_weak(c, c - k, std::memory_order_acq_rel,
                                      std::memory_order_relaxed))
      return k;
  }
  return 0;
}

// A release of n units: takes them off the releasing thread's slot first, then off any other
// holder's (a release on behalf of another thread or process). Returns how many were found.
uint32_t sem_forget_holder(SemaphoreData& d, uint32_t self, uint32_t n) {
  const uint32_t used = holders_used(d);
  uint32_t left = n;
  for (uint32_t i = 0; i < used && left > 0; ++i) {
    auto& h = d.holders[i];
    if (h.tid.load(std::memory_order_relaxed) != self) continue;
    left -= take_from_slot(h, left);
    // Our own slot, emptied: free it (only we add to it, so it stays empty).
    if (h.count.load(std::memory_order_relaxed) == 0) h.tid.store(0, std::memory_order_release);
    break;
  }
  for (uint32_t i = 0; i < used && left > 0; ++i) {
    auto& h = d.holders[i];
    uint32_t t = h.tid.load(std::memory_order_relaxed);
    if (t == 0 || t == self || t == kSemSlotReclaiming) continue;
    left -= take_from_slot(h, left);
  }
  return n - left;
}

// Whether this caller should scan for dead holders now (at most once per interval, over all
// processes: the stamp lives in shared memory).
bool sem_scan_due(SemaphoreData& d) {
  const int64_t now = steady_ns();
  int64_t last = d.last_scan_ns.load(std::memory_order_relaxed);
  if (now - last < std::chrono::nanoseconds(kHolderScanInterval).count()) return false;
  return d.last_scan_ns.compare_exchange_strong(last, now, std::memory_order_relaxed);
}

// Gives back the units of noted holders that have died, never raising the value above its
// initial value. Returns the units given back.
uint32_t sem_recover_dead(SemaphoreData& d) {
  const uint32_t used = holders_used(d);
  uint32_t given = 0;
  for (uint32_t i = 0; i < used; ++i) {
    auto& h = d.holders[i];
    uint32_t t = h.tid.load(std::memory_order_acquire);
    if (t == 0 || t == kSemSlotReclaiming || thread_alive(t)) continue;
    // The dead thread cannot touch its slot any more; whoever wins this CAS empties it.
    if (!h.tid.compare_exchange_strong(t, kSemSlotReclaiming, std::memory_order_acq_rel,
                                       std::memory_order_relaxed))
      continue;
    uint32_t n = h.count.exchange(0, std::memory_order_acq_rel);
    h.tid.store(0, std::memory_order_release);
    uint32_t v = d.value.load(std::memory_order_relaxed);
    uint32_t k = 0;
    for (;;) {
      k = v >= d.initial ? 0 : std::min(n, d.initial - v);
      if (k == 0) break;
      if (d.value.compare_exchange_weak(v, v + k, std::memory_order_seq_cst,
                                        std::memory_order_relaxed))
        break;
    }
    if (k > 0) {
      given += k;
      d.recovered.fetch_add(k, std::memory_order_relaxed);
      d.ww.notify(static_cast<int>(std::min<uint32_t>(k, INT_MAX)));
    }
  }
  return given;
}

// ---- Condition -----------------------------------------------------------------------------

// Claims a free waiter slot; the caller holds the condition's lock. Throws when all are taken by
// live waiters.
CondSlot& cond_claim_slot(CondData& d, uint32_t self) {
  for (int pass = 0; pass < 2; ++pass) {
    for (uint32_t i = 0; i < kCondSlots; ++i) {
      auto& s = d.slots[i];
      if (s.state.load(std::memory_order_relaxed) != kCondFree) continue;
      s.tid.store(self, std::memory_order_relaxed);
      s.ticket.store(d.next_ticket.fetch_add(1, std::memory_order_relaxed),
                     std::memory_order_relaxed);
      s.state.store(kCondWaiting, std::memory_order_release);
      if (d.slots_used.load(std::memory_order_relaxed) < i + 1)
        d.slots_used.store(i + 1, std::memory_order_relaxed);
      return s;
    }
    // Full: free the slots of waiters that died.
    for (uint32_t i = 0; i < kCondSlots; ++i)
      if (!thread_alive(d.slots[i].tid.load(std::memory_order_relaxed)))
        d.slots[i].state.store(kCondFree, std::memory_order_relaxed);
  }
  throw ProcessError("Condition.wait(): more than " + std::to_string(kCondSlots) +
                     " threads are waiting on this condition at once");
}

// Waits (without the lock) until the slot is notified or the deadline passes.
void cond_wait_slot(CondSlot& s, const Deadline& deadline) {
  auto notified = [&s] { return s.state.load(std::memory_order_acquire) == kCondNotified; };
  for (int i = 0; i < kPureSpins; ++i) {
    if (notified()) return;
    cpu_relax();
  }
  const auto spin_until = Deadline::Clock::now() + kSpinBudget;
  while (Deadline::Clock::now() < spin_until) {
    yield_cpu();
    for (int i = 0; i < 8; ++i) {
      if (notified()) return;
      cpu_relax();
    }
    if (deadline.expired()) return;
  }
  for (;;) {
    uint32_t expected = kCondWaiting;
    // Announce the sleep; a notifier that exchanges in kCondNotified after this will wake us,
    // one that did before makes this CAS fail.
    if (!s.state.compare_exchange_strong(expected, kCondSleeping, std::memory_order_acq_rel,
                                         std::memory_order_acquire) &&
        expected == kCondNotified)
      return;
    futex_wait(&s.state, kCondSleeping, deadline);
    if (notified() || deadline.expired()) return;
  }
}

void cond_wake(CondSlot& s) {
  if (s.state.exchange(kCondNotified, std::memory_order_acq_rel) == kCondSleeping)
    futex_wake(&s.state, 1);
}

bool cond_slot_waiting(const CondSlot& s) {
  uint32_t st = s.state.load(std::memory_order_relaxed);
  return st == kCondWaiting || st == kCondSleeping;
}

}  // namespace
}  // namespace multiproc::detail

namespace multiproc {

using detail::Deadline;

// ---- Semaphore ---------------------------------------------------------------------------------

Semaphore::Semaphore(int value, bool bounded) {
  if (value < 0)
    throw ProcessError("Semaphore: the initial value must be >= 0 (got " + std::to_string(value) +
                       ")");
  if (detail::loading_handles()) return;
  open(detail::SyncCore::create(detail::SegmentKind::sync, detail::SyncType::semaphore,
                                sizeof(detail::SemaphoreData)));
  d_->initial = static_cast<uint32_t>(value);
  d_->bounded = bounded ? 1 : 0;
  d_->value.store(static_cast<uint32_t>(value), std::memory_order_release);
}

bool Semaphore::acquire(bool block, Timeout timeout) {
  auto& d = data();
  detail::check_timeout(timeout);
  auto taken = [&d] {
    detail::sem_note_holder(d, detail::current_tid(), 1);
    return true;
  };
  if (detail::sem_try_take(d)) return taken();
  if (!block) {
    if (detail::sem_scan_due(d) && detail::sem_recover_dead(d) > 0 && detail::sem_try_take(d))
      return taken();
    return false;
  }
  const auto deadline = Deadline::after(timeout);
  for (;;) {
    // Sleep in naps, so that a waiter looks for dead holders now and then.
    Deadline nap{Deadline::Clock::now() + detail::kHolderScanInterval};
    if (deadline.at && *deadline.at < *nap.at) nap = deadline;
    if (detail::wait_for(
            d.ww, [&d] { return detail::sem_try_take(d); }, nap))
      return taken();
    if (deadline.expired()) return false;
    if (detail::sem_scan_due(d)) detail::sem_recover_dead(d);
  }
}

void Semaphore::release(uint32_t n) {
  auto& d = data();
  if (n == 0) return;
  const uint32_t self = detail::current_tid();
  // Forget first, add after: a death in between loses a unit rather than inventing one.
  const uint32_t forgotten = detail::sem_forget_holder(d, self, n);
  const uint64_t limit = d.bounded ? d.initial : static_cast<uint64_t>(INT_MAX);
  uint32_t v = d.value.load(std::memory_order_relaxed);
  do {
    if (static_cast<uint64_t>(v) + n > limit) {
      if (forgotten) detail::sem_note_holder(d, self, forgotten);
      if (d.bounded)
        throw ProcessError(
            "BoundedSemaphore.release(): released too many times (the value "
            "would exceed its initial value " +
            std::to_string(d.initial) + "; Python raises ValueError)");
      throw ProcessError("Semaphore.release(): the value would exceed INT_MAX");
    }
    // seq_cst: ordered before notify()'s look at the waiters.
  } while (!d.value.compare_exchange_weak(v, v + n, std::memory_order_seq_cst,
                                          std::memory_order_relaxed));
  d.ww.notify(static_cast<int>(std::min<uint32_t>(n, INT_MAX)));
}

// ---- Condition ---------------------------------------------------------------------------------

void Condition::require_owned(const char* what) const {
  const uint32_t self = detail::current_tid();
  bool owned = std::visit(
      [self](const auto& l) {
        if constexpr (std::is_same_v<std::decay_t<decltype(l)>, Lock>)
          return detail::LockAccess::mutex(l).owner.load(std::memory_order_relaxed) == self;
        else
          return detail::LockAccess::data(l).m.owner.load(std::memory_order_relaxed) == self;
      },
      lock_);
  if (!owned)
    throw ProcessError(std::string(what) +
                       ": the condition's lock is not held by this thread (acquire it first; "
                       "Python raises RuntimeError)");
}

bool Condition::wait(Timeout timeout) {
  auto& d = data();
  require_owned("Condition.wait()");
  const auto deadline = Deadline::after(timeout);
  auto& slot = detail::cond_claim_slot(d, detail::current_tid());

  // Release the lock completely, remembering an RLock's depth.
  uint32_t depth = 1;
  if (auto* l = std::get_if<Lock>(&lock_)) {
    detail::robust_unlock(detail::LockAccess::mutex(*l));
  } else {
    auto& rd = detail::LockAccess::data(std::get<RLock>(lock_));
    depth = rd.count.load(std::memory_order_relaxed);
    rd.count.store(0, std::memory_order_relaxed);
    detail::robust_unlock(rd.m);
  }

  detail::cond_wait_slot(slot, deadline);

  // Re-acquire, however long it takes (as Python does), to the same depth.
  if (auto* l = std::get_if<Lock>(&lock_)) {
    detail::mutex_acquire(detail::LockAccess::core(*l), detail::LockAccess::mutex(*l), true,
                          Deadline::never());
  } else {
    auto& r = std::get<RLock>(lock_);
    auto& rd = detail::LockAccess::data(r);
    detail::mutex_acquire(detail::LockAccess::core(r), rd.m, true, Deadline::never());
    rd.count.store(depth, std::memory_order_relaxed);
  }

  // With the lock held again: a notify that came after the timeout still counts (it chose us).
  const bool notified = slot.state.load(std::memory_order_acquire) == detail::kCondNotified;
  slot.state.store(detail::kCondFree, std::memory_order_release);
  return notified;
}

void Condition::notify(size_t n) {
  auto& d = data();
  require_owned("Condition.notify()");
  const uint32_t used = std::min(d.slots_used.load(std::memory_order_relaxed), detail::kCondSlots);
  const uint32_t next = d.next_ticket.load(std::memory_order_relaxed);
  for (; n > 0; --n) {
    detail::CondSlot* oldest = nullptr;
    uint32_t oldest_age = 0;
    for (uint32_t i = 0; i < used; ++i) {
      auto& s = d.slots[i];
      if (!detail::cond_slot_waiting(s)) continue;
      uint32_t age = next - s.ticket.load(std::memory_order_relaxed);  // wraps correctly
      if (!oldest || age > oldest_age) {
        oldest = &s;
        oldest_age = age;
      }
    }
    if (!oldest) return;
    detail::cond_wake(*oldest);
  }
}

void Condition::notify_all() {
  auto& d = data();
  require_owned("Condition.notify_all()");
  const uint32_t used = std::min(d.slots_used.load(std::memory_order_relaxed), detail::kCondSlots);
  for (uint32_t i = 0; i < used; ++i)
    if (detail::cond_slot_waiting(d.slots[i])) detail::cond_wake(d.slots[i]);
}

// ---- Barrier -----------------------------------------------------------------------------------

Barrier::Barrier(size_t parties, Timeout timeout) {
  // The count of parties lives in 32 bits of shared memory.
  if (parties == 0 || parties > UINT32_MAX)
    throw ProcessError("Barrier: parties must be between 1 and " + std::to_string(UINT32_MAX) +
                       " (got " + std::to_string(parties) + ")");
  // Checked before anything is created: a NaN throws here, not at the first wait.
  const auto default_timeout = detail::timeout_duration(timeout);
  if (detail::loading_handles()) return;
  open(detail::SyncCore::create(detail::SegmentKind::sync, detail::SyncType::barrier,
                                sizeof(detail::BarrierData)));
  d_->parties = static_cast<uint32_t>(parties);
  // None, infinite or huge: -1, no default (wait forever).
  d_->default_timeout_ns =
      default_timeout
          ? std::chrono::duration_cast<std::chrono::nanoseconds>(*default_timeout).count()
          : -1;
}

namespace {
// The barrier's state is consistent after every single store, so taking the lock over from a
// process that died inside a Barrier call needs no repair.
struct BarrierGuard {
  explicit BarrierGuard(detail::RobustMutexData& m) : m_(m) { detail::robust_lock(m_); }
  ~BarrierGuard() { detail::robust_unlock(m_); }
  BarrierGuard(const BarrierGuard&) = delete;
  BarrierGuard& operator=(const BarrierGuard&) = delete;
  detail::RobustMutexData& m_;
};
bool released_bit(const detail::BarrierData& d, uint32_t gen) {
  return (d.released_bits.load(std::memory_order_relaxed) >> (gen % 64)) & 1;
}
void set_released_bit(detail::BarrierData& d, uint32_t gen, bool released) {
  const uint64_t bit = uint64_t{1} << (gen % 64);
  uint64_t bits = d.released_bits.load(std::memory_order_relaxed);
  d.released_bits.store(released ? bits | bit : bits & ~bit, std::memory_order_relaxed);
}
}  // namespace

size_t Barrier::wait(Timeout timeout) {
  auto& d = data();
  Deadline deadline = Deadline::never();
  if (timeout)
    deadline = Deadline::after(timeout);
  else if (d.default_timeout_ns >= 0)
    deadline = Deadline{Deadline::Clock::now() + std::chrono::nanoseconds(d.default_timeout_ns)};

  uint32_t gen, index;
  {
    BarrierGuard g(d.m);
    if (d.broken.load(std::memory_order_relaxed)) throw BrokenBarrierError();
    gen = d.gen.load(std::memory_order_relaxed);
    index = d.count.load(std::memory_order_relaxed);
    if (index + 1 >= d.parties) {
      if (action_) {
        // Python's order: the action runs before anyone is released; if it throws, the
        // barrier breaks for the others and this party gets the exception.
        try {
          action_();
        } catch (...) {
          d.broken.store(1, std::memory_order_seq_cst);
          d.ww.notify_all();
          throw;
        }
      }
      // The last party trips the barrier: record how this generation ended, then start the next.
      set_released_bit(d, gen, true);
      d.count.store(0, std::memory_order_relaxed);
      d.gen.store(gen + 1, std::memory_order_seq_cst);  // seq_cst: before notify's check
      d.ww.notify_all();
      return index;
    }
    d.count.store(index + 1, std::memory_order_relaxed);
  }
  auto ended = [&d, gen] {
    return d.gen.load(std::memory_order_seq_cst) != gen ||
           d.broken.load(std::memory_order_seq_cst) != 0;
  };
  for (;;) {
    const bool woke = detail::wait_for(d.ww, ended, deadline);
    BarrierGuard g(d.m);
    if (d.gen.load(std::memory_order_relaxed) != gen) {
      if (released_bit(d, gen)) return index;
      throw BrokenBarrierError("Barrier.wait(): the barrier was reset while this party waited");
    }
    if (d.broken.load(std::memory_order_relaxed)) throw BrokenBarrierError();
    if (!woke) {
      // Python's rule: a timeout breaks the barrier for every party.
      d.broken.store(1, std::memory_order_seq_cst);
      d.ww.notify_all();
      throw BrokenBarrierError("Barrier.wait(): timed out; the barrier is now broken");
    }
  }
}

void Barrier::reset() {
  auto& d = data();
  {
    BarrierGuard g(d.m);
    if (d.count.load(std::memory_order_relaxed) > 0) {
      // Parties are (or were, before a break) waiting: end their generation unreleased.
      const uint32_t gen = d.gen.load(std::memory_order_relaxed);
      set_released_bit(d, gen, false);
      d.count.store(0, std::memory_order_relaxed);
      d.gen.store(gen + 1, std::memory_order_seq_cst);
    }
    d.broken.store(0, std::memory_order_seq_cst);
  }
  d.ww.notify_all();
}

void Barrier::abort() {
  auto& d = data();
  {
    BarrierGuard g(d.m);
    d.broken.store(1, std::memory_order_seq_cst);
  }
  d.ww.notify_all();
}

}  // namespace multiproc
