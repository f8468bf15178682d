// Synchronisation primitives shared between processes (CPython's synchronize.py): Lock, RLock,
// Semaphore, BoundedSemaphore, Event, Condition and Barrier.
//
//   mp::Lock lock;                       // made in the parent...
//   mp::Process p(task, lock);  p.start();    // ...passed to a child (or inherited by fork)
//   { std::lock_guard g(lock); ... }     // Lock, RLock and Condition are std Lockables
//
// Every primitive is a handle: copies share one object, in this process and in any process the
// handle reaches (fork inheritance, a Process or Pool argument under any start method, a queue
// item). The object lives in a shared-memory segment while any process holds a handle.
//
// Waiting spins briefly, then sleeps on a futex in shared memory (detail/futex.hpp): no thread,
// pipe or descriptor per object. All operations are safe between threads and processes alike.
//
// Holders that die. A Lock or RLock whose owner thread dies while holding it is taken over by the
// next acquirer (within ~20 ms of sleeping, or at once by a non-blocking acquire), which is told
// so by previous_owner_died(): the protected data may be half-updated. A Semaphore gives back
// units held by threads that died (see Semaphore). Condition and Barrier keep their own state
// consistent when a process dies inside one of their calls (each class says what a dead waiter
// means). Liveness is judged by thread id: a thread that exits (not only a process) while holding
// a Lock or Semaphore units counts as dead.
#pragma once

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>
#include <type_traits>
#include <utility>
#include <variant>

#include <multiproc/detail/code_address.hpp>
#include <multiproc/detail/handle.hpp>
#include <multiproc/detail/sync_data.hpp>
#include <multiproc/errors.hpp>
#include <multiproc/timeout.hpp>

namespace multiproc {

// Barrier::wait() on a barrier that is broken (a wait timed out, abort() was called) or was
// reset while waiting (Python's threading.BrokenBarrierError).
class BrokenBarrierError : public ProcessError {
 public:
  BrokenBarrierError() : ProcessError("the barrier is broken") {}
  using ProcessError::ProcessError;
};

class Lock;
class RLock;

namespace detail {
// Internal access to the handles' shared state, for Condition, Value and Array.
struct LockAccess;

// What every synchronization handle shares: the object in shared memory (core_, and d_ pointing at
// its data) and the handle protocol (what travels is the name).
template <class Data, SyncType kType>
class SyncHandle {
 public:
  // The shared-memory name (diagnostics; /dev/shm<name> exists while the object lives).
  const std::string& name() const { return core().name(); }

  template <class Archive>
  void save(Archive& ar) const {
    core().add_flight_ref();
    ar(core().name());
  }
  template <class Archive>
  void load(Archive& ar) {
    std::string n;
    ar(n);
    open(SyncCore::attach(n, SegmentKind::sync, kType, sizeof(Data)));
  }

 protected:
  // A new object, unless this handle is being default-constructed for load() (handle.hpp).
  void create() {
    if (!loading_handles()) open(SyncCore::create(SegmentKind::sync, kType, sizeof(Data)));
  }
  void open(std::shared_ptr<SyncCore> c) {
    d_ = static_cast<Data*>(c->data());
    core_ = std::move(c);
  }
  SyncCore& core() const {
    if (!core_) throw_empty_handle(sync_type_name(kType));
    return *core_;
  }
  Data& data() const {
    if (!d_) throw_empty_handle(sync_type_name(kType));
    return *d_;
  }

  std::shared_ptr<SyncCore> core_;
  Data* d_ = nullptr;
};
}  // namespace detail

// A mutual exclusion lock (Python's multiprocessing.Lock). Not recursive: a thread that acquires
// it twice waits for itself (until its timeout). As in Python, any thread of any process may
// release it, not only the one that acquired it.
class Lock : public detail::SyncHandle<detail::LockData, detail::SyncType::lock> {
 public:
  // A new, unlocked lock.
  Lock() { create(); }

  // Takes the lock. block = false: tries once and returns at once (the timeout is ignored).
  // Otherwise waits at most `timeout` (forever when empty; negative = zero). Returns whether
  // the lock was taken. A lock whose owner thread died is taken over: see previous_owner_died().
  bool acquire(bool block = true, Timeout timeout = std::nullopt) {
    auto& d = data();
    detail::check_timeout(timeout);
    if (detail::robust_try_lock(d.m)) {
      core_->note_acquired(false);
      return true;
    }
    return detail::mutex_acquire(*core_, d.m, block, detail::Deadline::after(timeout));
  }
  // Frees the lock, whichever thread or process holds it, and wakes one waiter. Throws
  // ProcessError if the lock is not held (Python raises ValueError).
  void release() { detail::mutex_release_any(data().m, "Lock.release()"); }

  // std::BasicLockable / Lockable, so std::lock_guard and std::unique_lock work.
  void lock() { acquire(); }
  bool try_lock() { return acquire(false); }
  void unlock() { release(); }

  // True when this process's most recent successful acquire of this lock (through any of its
  // handles, in any thread) took it over from an owner thread that had died holding it: the data
  // the lock protects may be half-updated. False after a normal acquire, and in a forked child
  // until it acquires.
  bool previous_owner_died() const {
    data();
    return core_->took_over();
  }
  // How many times, in all processes, an owner died holding this lock and was taken over from.
  uint32_t owner_deaths() const { return data().m.owner_deaths.load(std::memory_order_relaxed); }
  // Whether some thread of some process holds the lock now (Python's Lock.locked()); a snapshot.
  // A lock whose owner died holding it reads as locked until another acquire takes it over.
  bool locked() const { return data().m.owner.load(std::memory_order_relaxed) != 0; }

  bool operator==(const Lock& other) const { return core_ == other.core_; }

 private:
  friend struct detail::LockAccess;
};

// A recursive lock (Python's multiprocessing.RLock): the owning thread may acquire it again and
// must release it as many times. Only the owner may release it. An owner thread that dies is
// taken over as for Lock (the new owner starts at depth 1).
class RLock : public detail::SyncHandle<detail::RLockData, detail::SyncType::rlock> {
 public:
  RLock() { create(); }

  // As Lock::acquire; when the calling thread already owns the lock, adds one level at once.
  bool acquire(bool block = true, Timeout timeout = std::nullopt) {
    auto& d = data();
    detail::check_timeout(timeout);
    uint32_t self = detail::current_tid();
    if (d.m.owner.load(std::memory_order_relaxed) == self) {
      d.count.store(d.count.load(std::memory_order_relaxed) + 1, std::memory_order_relaxed);
      return true;
    }
    bool got;
    if (detail::robust_try_lock(d.m, self)) {
      core_->note_acquired(false);
      got = true;
    } else {
      got = detail::mutex_acquire(*core_, d.m, block, detail::Deadline::after(timeout));
    }
    if (got) d.count.store(1, std::memory_order_relaxed);
    return got;
  }
  // Drops one level; the last one frees the lock. Throws ProcessError if the calling thread
  // does not own it (Python raises AssertionError).
  void release() {
    auto& d = data();
    if (d.m.owner.load(std::memory_order_relaxed) != detail::current_tid())
      throw ProcessError(
          "RLock.release(): the lock is not held by this thread (only its owner may release it)");
    uint32_t c = d.count.load(std::memory_order_relaxed);
    if (c > 1) {
      d.count.store(c - 1, std::memory_order_relaxed);
      return;
    }
    d.count.store(0, std::memory_order_relaxed);
    detail::robust_unlock(d.m);
  }

  void lock() { acquire(); }
  bool try_lock() { return acquire(false); }
  void unlock() { release(); }

  // As Lock::previous_owner_died / owner_deaths.
  bool previous_owner_died() const {
    data();
    return core_->took_over();
  }
  uint32_t owner_deaths() const { return data().m.owner_deaths.load(std::memory_order_relaxed); }
  // The calling thread's recursion depth (0 when another thread or nobody owns it).
  uint32_t depth() const {
    auto& d = data();
    if (d.m.owner.load(std::memory_order_relaxed) != detail::current_tid()) return 0;
    return d.count.load(std::memory_order_relaxed);
  }
  // As Lock::locked(): whether any thread holds it, at any depth.
  bool locked() const { return data().m.owner.load(std::memory_order_relaxed) != 0; }

  bool operator==(const RLock& other) const { return core_ == other.core_; }

 private:
  friend struct detail::LockAccess;
};

// A counting semaphore (Python's multiprocessing.Semaphore).
//
// Holders that die: each thread that acquired units and has not released them is noted in a
// table of 64 (thread id, units) slots in shared memory. A waiter that has waited ~20 ms (and a
// non-blocking acquire that fails), at most once per 20 ms for all processes together, looks for
// noted threads that have died and gives their units back. What is recovered:
//   - units acquired by a thread that then died without releasing them;
//   - never more than brings the value back up to its initial value (so a semaphore used for
//     signalling, Semaphore(0) with release() in one process and acquire() in another, never
//     gains phantom units when the acquirer exits).
// What is not: units of holders that did not fit the table (more than 64 threads holding at
// once); a unit whose holder died in the instant between taking it and noting it. A release by a
// thread that holds nothing (a different process than the acquirer) takes the units off
// whichever noted holders it can, so the table stays a fair account of what is still held.
class Semaphore : public detail::SyncHandle<detail::SemaphoreData, detail::SyncType::semaphore> {
 public:
  // Starts with `value` units. Throws ProcessError if value is negative.
  explicit Semaphore(int value = 1) : Semaphore(value, false) {}

  // Takes one unit. block = false: tries once. Otherwise waits at most `timeout` (forever when
  // empty; negative = zero). Returns whether a unit was taken.
  bool acquire(bool block = true, Timeout timeout = std::nullopt);
  // Gives back n units and wakes up to n waiters. Throws ProcessError if the value would exceed
  // INT_MAX, or, for a BoundedSemaphore, its initial value (nothing is released then).
  void release(uint32_t n = 1);
  // The number of units available now (Python's get_value; a snapshot).
  int get_value() const { return static_cast<int>(data().value.load(std::memory_order_relaxed)); }
  // Units given back from dead holders so far, by any process.
  uint32_t recovered_units() const { return data().recovered.load(std::memory_order_relaxed); }

  void lock() { acquire(); }
  bool try_lock() { return acquire(false); }
  void unlock() { release(); }

  bool operator==(const Semaphore& other) const { return core_ == other.core_; }

 protected:
  Semaphore(int value, bool bounded);

 private:
};

// A Semaphore whose value may never exceed its initial value: releasing more than was acquired
// throws ProcessError (Python raises ValueError).
class BoundedSemaphore : public Semaphore {
 public:
  explicit BoundedSemaphore(int value = 1) : Semaphore(value, true) {}
};

// A flag that processes wait for (Python's multiprocessing.Event). Starts clear.
class Event : public detail::SyncHandle<detail::EventData, detail::SyncType::event> {
 public:
  Event() { create(); }

  bool is_set() const { return data().flag.load(std::memory_order_seq_cst) != 0; }
  // Sets the flag and wakes every waiter.
  void set() {
    auto& d = data();
    d.flag.store(1, std::memory_order_seq_cst);  // seq_cst: ordered before notify's check
    d.ww.notify_all();
  }
  void clear() { data().flag.store(0, std::memory_order_seq_cst); }
  // Waits until the flag is set, at most `timeout` (forever when empty; negative = zero).
  // Returns the flag as it was on return (false: timed out).
  bool wait(Timeout timeout = std::nullopt) const {
    auto& d = data();
    return detail::wait_for(
        d.ww, [&d] { return d.flag.load(std::memory_order_seq_cst) != 0; },
        detail::Deadline::after(timeout));
  }

  bool operator==(const Event& other) const { return core_ == other.core_; }

 private:
};

// A condition variable over a Lock or an RLock (Python's multiprocessing.Condition; by default
// over a new RLock of its own). Several Conditions may share one lock.
//
// Waiters are woken in the order they started waiting; notify(n) wakes exactly the n oldest
// (fewer if fewer wait), never one that started waiting after the call. At most 248 threads may
// wait on one Condition at once (slots of waiters that died are reused). A waiter that dies
// while waiting may absorb one notify().
class Condition : public detail::SyncHandle<detail::CondData, detail::SyncType::condition> {
 public:
  Condition() : lock_(std::in_place_type<RLock>) { create(); }
  explicit Condition(Lock lock) : lock_(std::move(lock)) { create(); }
  explicit Condition(RLock lock) : lock_(std::move(lock)) { create(); }

  // The underlying lock's acquire/release.
  bool acquire(bool block = true, Timeout timeout = std::nullopt) {
    return std::visit([&](auto& l) { return l.acquire(block, timeout); }, lock_);
  }
  void release() {
    std::visit([](auto& l) { l.release(); }, lock_);
  }
  void lock() { acquire(); }
  bool try_lock() { return acquire(false); }
  void unlock() { release(); }

  // Releases the lock (all levels of an RLock), waits until notified or `timeout` passes
  // (forever when empty; negative = zero), then re-acquires the lock (to the same depth), however
  // long that takes. Returns false if it timed out without being notified. Throws ProcessError if
  // the calling thread does not hold the lock (Python raises RuntimeError).
  bool wait(Timeout timeout = std::nullopt);
  // Waits until predicate() is true, at most `timeout` in all (Python's wait_for). The lock must
  // be held; predicate is called with it held. Returns predicate()'s last answer.
  template <class Predicate>
  bool wait_for(Predicate predicate, Timeout timeout = std::nullopt) {
    bool result = static_cast<bool>(predicate());
    auto deadline = detail::Deadline::after(timeout);
    while (!result) {
      Timeout left;
      if (deadline.at) {
        auto d = *deadline.at - detail::Deadline::Clock::now();
        if (d <= decltype(d)::zero()) break;
        left = std::chrono::duration<double>(d);
      }
      wait(left);
      result = static_cast<bool>(predicate());
    }
    return result;
  }
  // Wakes the n oldest waiters (all of them if fewer wait). The lock must be held by the calling
  // thread (otherwise ProcessError, as Python's RuntimeError).
  void notify(size_t n = 1);
  void notify_all();

  bool operator==(const Condition& other) const { return core_ == other.core_; }

  // What travels: the condition's name, then its lock.
  template <class Archive>
  void save(Archive& ar) const {
    core().add_flight_ref();
    ar(core().name());
    auto kind = static_cast<uint8_t>(lock_.index());
    ar(kind);
    std::visit([&](const auto& l) { ar(l); }, lock_);
  }
  template <class Archive>
  void load(Archive& ar) {
    std::string name;
    uint8_t kind = 0;
    ar(name);
    open(detail::SyncCore::attach(name, detail::SegmentKind::sync, detail::SyncType::condition,
                                  sizeof(detail::CondData)));
    ar(kind);
    detail::HandleLoadScope scope;
    if (kind == 0) {
      RLock l;
      ar(l);
      lock_ = std::move(l);
    } else if (kind == 1) {
      Lock l;
      ar(l);
      lock_ = std::move(l);
    } else {
      throw ProcessError("Condition: malformed serialized handle (lock kind " +
                         std::to_string(kind) + ")");
    }
  }

 private:
  void require_owned(const char* what) const;

  std::variant<RLock, Lock> lock_;
};

// A barrier for a fixed number of parties (Python's multiprocessing.Barrier, with
// threading.Barrier's semantics): each wait() blocks until `parties` waits are in progress, then
// all return together and the barrier is ready for the next round.
//
// Broken state: a wait that times out, or abort(), breaks the barrier: every wait in progress and
// every later one throws BrokenBarrierError until reset(). A party that dies after arriving still
// counts as arrived; one that dies before arriving leaves the others waiting until their timeout.
// Limitation: a waiter that sleeps through 64 further rounds (possible only with more processes
// than parties) may misjudge how its own round ended.
//
// Action (Python's Barrier(parties, action, timeout)): the party that trips the barrier (the last
// to arrive, arrival index parties-1) calls it before any party is released, under the barrier's
// lock, so it must not call this barrier's wait(), reset() or abort(). If it throws, the barrier
// breaks: that party gets the exception and the others BrokenBarrierError. The action crosses to
// other processes with the handle as a task does: it is a free function or capture-free lambda
// taking nothing, sent as its code address, and it reaches state through the globals of the
// process that runs it. A process that dies inside the action leaves the others waiting until
// their timeout.
class Barrier : public detail::SyncHandle<detail::BarrierData, detail::SyncType::barrier> {
 public:
  // `timeout` is the default for wait(). Throws ProcessError if parties is 0 or above
  // UINT32_MAX, or if the timeout is NaN.
  explicit Barrier(size_t parties, Timeout timeout = std::nullopt);
  // With an action (see above).
  template <class F>
  requires(!std::is_convertible_v<F, Timeout>)
      Barrier(size_t parties, F action, Timeout timeout = std::nullopt)
      : Barrier(parties, timeout) {
    static_assert(std::is_convertible_v<F, void (*)()>,
                  "a Barrier action must be a free function or a capture-free lambda taking no "
                  "arguments: it crosses to other processes like a task (pass state through "
                  "globals of the process that runs it)");
    action_ = action;
  }

  // Waits for all parties, at most `timeout` (the barrier's default when empty; forever if that is
  // empty too). Returns this party's arrival index, 0 .. parties-1 (the last to arrive gets
  // parties-1). Throws BrokenBarrierError if the barrier is broken or breaks meanwhile (this
  // wait's timeout breaks it for everyone) or is reset while this party waits.
  size_t wait(Timeout timeout = std::nullopt);
  // Resets the barrier to its empty, unbroken state; parties waiting now get BrokenBarrierError.
  void reset();
  // Breaks the barrier: waits in progress and later ones throw BrokenBarrierError until reset().
  void abort();
  size_t parties() const { return data().parties; }
  // Parties waiting in the current round (0 when broken).
  size_t n_waiting() const {
    auto& d = data();
    if (d.broken.load(std::memory_order_relaxed)) return 0;
    return d.count.load(std::memory_order_relaxed);
  }
  bool broken() const { return data().broken.load(std::memory_order_relaxed) != 0; }

  bool operator==(const Barrier& other) const { return core_ == other.core_; }

  // An empty handle (what deserialization fills in with load()); every method but load() and
  // operator= throws ProcessError on it. Use Barrier(parties) to make a barrier.
  Barrier() = default;

  // What travels: the barrier's name, then its action's code address (if any).
  template <class Archive>
  void save(Archive& ar) const {
    SyncHandle::save(ar);
    const bool has_action = action_ != nullptr;
    ar(has_action);
    if (has_action) ar(detail::encode_code_address(reinterpret_cast<const void*>(action_)));
  }
  template <class Archive>
  void load(Archive& ar) {
    SyncHandle::load(ar);
    bool has_action = false;
    ar(has_action);
    action_ = nullptr;
    if (has_action) {
      detail::CodeAddress code;
      ar(code);
      action_ = reinterpret_cast<void (*)()>(const_cast<void*>(detail::decode_code_address(code)));
    }
  }

 private:
  void (*action_)() = nullptr;  // process-local: each handle carries it
};

namespace detail {

struct LockAccess {
  static RobustMutexData& mutex(const Lock& l) { return l.data().m; }
  static SyncCore& core(const Lock& l) { return l.core(); }
  static RLockData& data(const RLock& l) { return l.data(); }
  static SyncCore& core(const RLock& l) { return l.core(); }
  // Whether the calling thread holds `l`.
  static bool held_by_me(const Lock& l) {
    return l.data().m.owner.load(std::memory_order_relaxed) == current_tid();
  }
};

}  // namespace detail

}  // namespace multiproc
