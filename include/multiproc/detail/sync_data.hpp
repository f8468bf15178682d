// What the synchronisation primitives and shared values keep in shared memory, and SyncCore, the
// process-local object that maps one of them.
//
// Every object is one refcounted segment (SegmentKind::sync for Lock, RLock, Semaphore, Event,
// Condition and Barrier; SegmentKind::shared for Value and Array) whose payload starts with a
// SyncTag: the segment header says "a multiproc sync segment", the tag says which primitive, which
// layout version and (Value/Array) which element type, so that attaching a Lock's name as a
// Semaphore or a Value<int> as a Value<double> fails loudly instead of misreading memory.
//
// The *Data structs hold no pointers and no process-local state; the payload is 64-byte aligned
// (it follows the 64-byte segment header in a page-aligned mapping), and every alignas(64) below
// keeps a word that waiters spin on away from words written by others. Zeroed memory is the
// initial state of every field except those the creator sets before the handle is shared.
#pragma once

#include <sys/types.h>
#include <unistd.h>
#include <atomic>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>
#include <type_traits>

#include <multiproc/detail/futex.hpp>
#include <multiproc/detail/robust_mutex.hpp>
#include <multiproc/detail/segment.hpp>

namespace multiproc::detail {

enum class SyncType : uint16_t {
  lock = 1,
  rlock = 2,
  semaphore = 3,
  event = 4,
  condition = 5,
  barrier = 6,
  value = 7,
  array = 8,
};

// The public class's name, for error messages.
inline const char* sync_type_name(SyncType t) {
  switch (t) {
    case SyncType::lock:
      return "Lock";
    case SyncType::rlock:
      return "RLock";
    case SyncType::semaphore:
      return "Semaphore";
    case SyncType::event:
      return "Event";
    case SyncType::condition:
      return "Condition";
    case SyncType::barrier:
      return "Barrier";
    case SyncType::value:
      return "Value";
    case SyncType::array:
      return "Array";
  }
  return "synchronization object";
}

inline constexpr uint32_t kSyncMagic = 0x4d505359;  // "MPSY"
inline constexpr uint16_t kSyncLayoutVersion = 1;

struct SyncTag {
  uint32_t magic;
  uint16_t type;     // SyncType
  uint16_t version;  // kSyncLayoutVersion
  uint64_t check;    // per type: element type fingerprint for Value/Array, 0 otherwise
};
static_assert(sizeof(SyncTag) == 16);

static_assert(std::atomic<uint32_t>::is_always_lock_free);
static_assert(std::atomic<uint64_t>::is_always_lock_free);
static_assert(std::atomic<int64_t>::is_always_lock_free);

// --- Lock, RLock -------------------------------------------------------------------------------

// The tag and the mutex share a line: the tag is read only when a handle is opened.
struct alignas(64) LockData {
  SyncTag tag;
  RobustMutexData m;
};
static_assert(sizeof(LockData) == 64 && std::is_standard_layout_v<LockData>);
static_assert(offsetof(LockData, m) == 16);

struct alignas(64) RLockData {
  SyncTag tag;
  RobustMutexData m;
  // Recursion depth; read and written only by the owner (relaxed), reset by whoever takes over.
  std::atomic<uint32_t> count;
};
static_assert(sizeof(RLockData) == 64 && std::is_standard_layout_v<RLockData>);
static_assert(offsetof(RLockData, count) == 32);

// --- Semaphore ---------------------------------------------------------------------------------

inline constexpr uint32_t kSemHolderSlots = 64;
// A slot whose dead holder is being given back (no thread has this id: ids are < 2^22 on Linux).
inline constexpr uint32_t kSemSlotReclaiming = 0xffffffffu;

// One thread that holds units it acquired and has not released.
struct SemHolder {
  std::atomic<uint32_t> tid;    // 0 = free slot
  std::atomic<uint32_t> count;  // units held
};
static_assert(sizeof(SemHolder) == 8);

struct SemaphoreData {
  SyncTag tag;
  uint32_t initial;  // the value at creation: BoundedSemaphore's maximum, recovery's ceiling
  uint32_t bounded;  // 1 for BoundedSemaphore
  std::atomic<int64_t> last_scan_ns;   // steady clock; dead-holder scans are rate-limited by it
  std::atomic<uint32_t> holders_used;  // slots [0, holders_used) have ever been claimed
  std::atomic<uint32_t> recovered;     // units given back from dead holders, ever
  // Hot: acquire/release CAS `value`; waiters sleep on `ww`.
  alignas(64) std::atomic<uint32_t> value;
  WaitWord ww;
  alignas(64) SemHolder holders[kSemHolderSlots];
};
static_assert(std::is_standard_layout_v<SemaphoreData>);
static_assert(offsetof(SemaphoreData, value) == 64);
static_assert(offsetof(SemaphoreData, holders) == 128);
static_assert(sizeof(SemaphoreData) == 128 + 8 * kSemHolderSlots);

// --- Event -------------------------------------------------------------------------------------

struct EventData {
  SyncTag tag;
  alignas(64) std::atomic<uint32_t> flag;
  WaitWord ww;
};
static_assert(std::is_standard_layout_v<EventData>);
static_assert(offsetof(EventData, flag) == 64 && sizeof(EventData) == 128);

// --- Condition ---------------------------------------------------------------------------------

// One waiter. Claimed, read by notifiers and freed only with the condition's lock held; `state`
// is also moved waiting -> sleeping by its waiter without the lock, and is the waiter's futex word.
struct CondSlot {
  std::atomic<uint32_t> state;   // kCondFree, kCondWaiting, kCondSleeping, kCondNotified
  std::atomic<uint32_t> tid;     // the waiting thread (for reclaiming slots of dead waiters)
  std::atomic<uint32_t> ticket;  // arrival order: notify() wakes the oldest waiters first
  uint32_t reserved;
};
static_assert(sizeof(CondSlot) == 16);

inline constexpr uint32_t kCondFree = 0;
inline constexpr uint32_t kCondWaiting = 1;   // registered, spinning
inline constexpr uint32_t kCondSleeping = 2;  // registered, (about to be) asleep on `state`
inline constexpr uint32_t kCondNotified = 3;
inline constexpr uint32_t kCondSlots = 248;  // the whole object fits one page

struct CondData {
  SyncTag tag;
  std::atomic<uint32_t> next_ticket;  // under the lock
  std::atomic<uint32_t> slots_used;   // slots [0, slots_used) have ever been claimed
  alignas(64) CondSlot slots[kCondSlots];
};
static_assert(std::is_standard_layout_v<CondData>);
static_assert(offsetof(CondData, slots) == 64);
static_assert(sizeof(SegmentHeader) + sizeof(CondData) <= 4096);

// --- Barrier -----------------------------------------------------------------------------------

struct BarrierData {
  SyncTag tag;
  RobustMutexData m;  // guards every field below but `ww`
  uint32_t parties;   // set at creation
  uint32_t reserved;
  int64_t default_timeout_ns;  // set at creation; < 0 = none
  // Read lock-free by waiters (their wake-up predicate), written under `m`.
  alignas(64) std::atomic<uint32_t> gen;  // generation: +1 when the barrier trips or resets
  std::atomic<uint32_t> count;            // arrivals in the current generation
  std::atomic<uint32_t> broken;           // 1 after a timeout or abort(), until reset()
  std::atomic<uint32_t> reserved2;
  std::atomic<uint64_t> released_bits;  // bit g % 64: generation g ended by tripping
  WaitWord ww;
};
static_assert(std::is_standard_layout_v<BarrierData>);
static_assert(offsetof(BarrierData, gen) == 64);

// --- the process-local side --------------------------------------------------------------------

// One mapped object in this process. Every handle of one object in this process shares one
// SyncCore (handles opened from serialized copies find it by name), so per-process facts such as
// Lock::previous_owner_died() are the same through all of them.
class SyncCore {
 public:
  // A fresh object of `data_size` zeroed bytes, its SyncTag filled in.
  static std::shared_ptr<SyncCore> create(SegmentKind kind, SyncType type, size_t data_size,
                                          uint64_t check = 0);
  // Opens a serialized handle's object (consuming the in-flight reference). Throws ProcessError
  // if the name is gone or is not a `type` object with the same `check` and at least
  // `min_data_size` bytes.
  static std::shared_ptr<SyncCore> attach(const std::string& name, SegmentKind kind, SyncType type,
                                          size_t min_data_size, uint64_t check = 0);
  ~SyncCore();
  SyncCore(const SyncCore&) = delete;
  SyncCore& operator=(const SyncCore&) = delete;

  void* data() const { return seg_->payload(); }
  size_t data_size() const { return seg_->payload_size(); }
  const std::string& name() const { return seg_->name(); }
  // Serializing a handle: a reference for the copy in flight.
  void add_flight_ref() const { seg_->add_flight_ref(); }

  // Lock/RLock: what this process's most recent successful acquire found (see
  // Lock::previous_owner_died). The pid makes a forked child start with "no".
  void note_acquired(bool took_over) {
    if (took_over)
      took_over_pid_.store(::getpid(), std::memory_order_relaxed);
    else if (took_over_pid_.load(std::memory_order_relaxed) != 0)
      took_over_pid_.store(0, std::memory_order_relaxed);
  }
  bool took_over() const {
    pid_t p = took_over_pid_.load(std::memory_order_relaxed);
    return p != 0 && p == ::getpid();
  }

 private:
  explicit SyncCore(std::shared_ptr<Segment> seg) : seg_(std::move(seg)) {}
  std::shared_ptr<Segment> seg_;
  std::atomic<pid_t> took_over_pid_{0};
};

// Takes `m` for the calling thread, waiting until `deadline` when `block` (a non-blocking try
// also takes over from a dead owner). Records the outcome in `core`. Returns false on timeout.
bool mutex_acquire(SyncCore& core, RobustMutexData& m, bool block, const Deadline& deadline);
// Frees `m` whoever holds it. Throws ProcessError if it is not held.
void mutex_release_any(RobustMutexData& m, const char* what);

}  // namespace multiproc::detail
