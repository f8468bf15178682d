// The untyped core of LifoQueue<T> and PriorityQueue<T, Compare> (ordered_queues.hpp).
//
// Layout. A refcounted control segment (OrderedQueueData: the lock, the item count, the undo log,
// the sleepers) names the current *store*: one owned segment holding a StoreHeader, an index of
// 32-byte entries and an arena of item bytes. An entry holds an item of up to 24 bytes itself,
// or the {size, offset} of a larger one in the arena. The index is a stack (LIFO: the top is
// the last entry) or a binary heap (priority: the first entry comes out first). Arena space is
// handed out by a bump pointer (`used`); a LIFO pop gives back the space of the top item, an
// empty queue gives back everything, and other holes are reclaimed when the store is rebuilt.
//
//   control: [lock | count | store_gen | store_name[2] | waits | undo log]
//                                 |
//                                 v
//   store:   [StoreHeader | StoreEntry index[index_capacity] | arena bytes ........... ]
//                           {size, item bytes | offset} ------------^
//
// Concurrency. One robust lock serializes every producer and consumer (ordering needs a global
// view anyway). It is held while bytes move and, for a priority queue, while the heap is sifted
// (comparisons decode items through the OrderOps callbacks). Serialization of non-plain items
// happens outside the lock, as for Queue. `count` is also read without the lock (qsize, waiters'
// predicates); it is stored just before a commit, and a rollback may take it back.
//
// Crash safety. Every change of the index or of the store's counters is a transaction on an undo
// log in the control segment: begin() snapshots count/used/live and sets `active`; each index
// slot below the count is appended to the log (record first, then the log length) before it is
// overwritten; the commit is the single store `active = 0`. Whoever takes the lock over from a
// dead owner (LockStatus::acquired_owner_died) finds `active` set, replays the log backwards and
// restores the snapshot, so the structure is exactly as before the dead process's unfinished
// operation (a repairer killed while repairing leaves the log for the next one). Arena item
// bytes are written beyond `used` before the transaction, where no entry refers to them. What the
// dying process relies on is program order at the instant it is killed (compiler fences between
// the steps): stores already made become visible to the next owner, later ones never happen.
//
// Growth. A store that has no room is never changed in place: a new one is created, filled with
// the live entries (holes squeezed out), and switched to with one store of `store_gen`, outside
// any transaction. The store names live in two slots indexed by generation; a switch first
// unlinks whatever a crashed switch left in the slot it is about to reuse, and unlinks the old
// store after the commit. The control segment's finalizer unlinks both slots, so nothing is left
// in /dev/shm once the last handle is gone (the resource tracker covers processes that crash).
#pragma once

#include <atomic>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <memory>
#include <string>
#include <type_traits>

#include <multiproc/detail/futex.hpp>
#include <multiproc/detail/queue_core.hpp>  // FillFn, DeliverFn
#include <multiproc/detail/robust_mutex.hpp>
#include <multiproc/detail/segment.hpp>
#include <multiproc/timeout.hpp>

namespace multiproc::detail {

inline constexpr uint32_t kOrderedQueueLayoutVersion = 1;
inline constexpr uint64_t kStoreMagic = 0x45524f5453514f4dULL;  // "MOQSTORE"
inline constexpr uint64_t kMinStoreEntries = 64;
inline constexpr uint64_t kMinStoreArena = uint64_t{64} * 1024;
// An empty queue whose store has grown past this goes back to a minimal store.
inline constexpr uint64_t kShrinkStoreAbove = uint64_t{4} * 1024 * 1024;
// Items put per lock hold in put_many(); others get a turn between batches.
inline constexpr size_t kPutBatch = 256;
// Heap sifts write at most one slot per level (64 levels at most) plus one.
inline constexpr uint32_t kUndoCapacity = 130;

enum class QueueOrder : uint32_t { lifo = 1, priority = 2 };

// Items of up to kInlineItem bytes live in their index entry (no arena space, and a heap sift
// finds them without touching the arena); larger ones in the arena.
inline constexpr uint64_t kInlineItem = 24;

struct StoreEntry {
  uint64_t size;  // the item's bytes
  // size <= kInlineItem: the item's bytes; otherwise a uint64_t, the item's offset from the start
  // of the arena (a multiple of 8), then a uint64_t, non-zero when the bytes end with a
  // references trailer (kRecordItemRefs in queue_core.hpp; such items are never inline).
  alignas(8) char data[kInlineItem];

  bool is_inline() const { return size <= kInlineItem; }
  uint64_t offset() const {
    uint64_t off;
    std::memcpy(&off, data, sizeof off);
    return off;
  }
  void set_offset(uint64_t off) { std::memcpy(data, &off, sizeof off); }
  bool has_refs() const {
    uint64_t f;
    std::memcpy(&f, data + 8, sizeof f);
    return !is_inline() && f != 0;
  }
  void set_has_refs() {
    const uint64_t f = 1;
    std::memcpy(data + 8, &f, sizeof f);
  }
};
static_assert(sizeof(StoreEntry) == 32 && std::is_trivially_copyable_v<StoreEntry>);

struct StoreHeader {
  uint64_t magic;
  uint32_t layout_version;
  uint32_t reserved;
  uint64_t index_capacity;  // entries
  uint64_t arena_capacity;  // bytes
  uint64_t arena_offset;    // from the start of the payload
  // Changed only inside a transaction (snapshotted by the undo log), under the lock.
  uint64_t used;  // bump pointer: arena bytes handed out
  uint64_t live;  // arena bytes that entries refer to (aligned sizes)
  uint64_t reserved2;
};
static_assert(sizeof(StoreHeader) == 64);  // keeps the index and the arena 16-byte aligned

struct UndoRecord {
  uint64_t slot;
  StoreEntry old;
};

struct UndoLog {
  std::atomic<uint32_t> active;  // 1 while a transaction is open; its clearing is the commit
  std::atomic<uint32_t> len;     // records that are valid
  uint64_t count, used, live;    // snapshot taken by begin()
  UndoRecord rec[kUndoCapacity];
};

struct OrderedQueueData {
  uint32_t layout_version;
  uint32_t order;    // QueueOrder
  uint64_t maxsize;  // items; 0 = unbounded
  alignas(64) RobustMutexData lock;
  std::atomic<uint64_t> count;      // items in the queue (read without the lock: approximate)
  std::atomic<uint64_t> store_gen;  // the current store is store_name[store_gen & 1]
  char store_name[2][kMaxSegmentName];
  // Sleepers: own cache lines, as they are hammered by waiters.
  alignas(64) WaitWord not_empty;
  alignas(64) WaitWord not_full;
  alignas(64) std::atomic<uint32_t> shut_down;  // a QueueShutdown value (queue_core.hpp)
  alignas(64) UndoLog undo;
};
static_assert(offsetof(OrderedQueueData, lock) % 64 == 0 &&
              offsetof(OrderedQueueData, not_empty) % 64 == 0 &&
              offsetof(OrderedQueueData, undo) % 64 == 0);
static_assert(std::atomic<uint32_t>::is_always_lock_free &&
              std::atomic<uint64_t>::is_always_lock_free);

// How a priority queue orders items, supplied by the typed layer: decode() puts the item held
// in `bytes` into scratch slot 0, 1 or 2 of ctx; before(a, b) says whether the item in slot a
// comes out before the item in slot b. Called with the lock held; they may throw (the operation
// is then rolled back).
struct OrderOps {
  void* ctx;
  void (*decode)(void* ctx, int slot, const char* bytes, size_t size);
  bool (*before)(void* ctx, int a, int b);
};

class OrderedQueueCore {
 public:
  static std::shared_ptr<OrderedQueueCore> create(QueueOrder order, uint64_t maxsize);
  // Opens a queue named by a serialized handle (consumes its in-flight reference). Throws
  // ProcessError if it is not a queue of this order.
  static std::shared_ptr<OrderedQueueCore> attach(const std::string& name, QueueOrder order);
  ~OrderedQueueCore();
  OrderedQueueCore(const OrderedQueueCore&) = delete;
  OrderedQueueCore& operator=(const OrderedQueueCore&) = delete;

  const std::string& name() const { return seg_->name(); }
  void add_flight_ref() { seg_->add_flight_ref(); }

  // Puts `count` items; item i has sizes[i * size_stride] bytes, written by fill(ctx, i, dst).
  // `ops` is required for a priority queue, ignored otherwise. Waits for room (bounded queues)
  // until the deadline. Returns how many were put. Throws ShutDown, or ProcessError when no
  // storage can be had (the queue is unchanged by the refused item).
  size_t put(size_t count, const size_t* sizes, size_t size_stride, FillFn fill, void* ctx,
             const OrderOps* ops, const Deadline& deadline);
  // Gets up to `max_items` in queue order, waiting until the deadline for the first; deliver is
  // called with the lock held (copy, do not deserialize there). Returns how many. Throws
  // ShutDown when the queue is shut down and drained (at once after an immediate shutdown).
  // Both throw ProcessError through a closed handle.
  size_t get(size_t max_items, DeliverFn deliver, void* ctx, const OrderOps* ops,
             const Deadline& deadline);

  uint64_t qsize() const { return q_->count.load(std::memory_order_acquire); }
  bool empty() const { return qsize() == 0; }
  bool full() const { return q_->maxsize != 0 && qsize() >= q_->maxsize; }
  uint64_t maxsize() const { return q_->maxsize; }
  // As QueueCore's: close() is this handle's (this process's), shutdown() everyone's.
  void close() { closed_pid_.store(getpid(), std::memory_order_relaxed); }
  bool closed() const {
    const int pid = closed_pid_.load(std::memory_order_relaxed);
    return pid != 0 && pid == getpid();
  }
  void shutdown(bool immediate);
  bool is_shutdown() const { return q_->shut_down.load(std::memory_order_acquire) != 0; }

 private:
  // The mapped store. index_cap and arena_cap are its sizes as checked when it was mapped:
  // bounds are checked against these copies, never against the shared header, which another
  // process may overwrite.
  struct StoreView {
    std::shared_ptr<Segment> seg;
    StoreHeader* h = nullptr;
    StoreEntry* index = nullptr;
    char* arena = nullptr;
    uint64_t gen = 0;
    uint64_t index_cap = 0;
    uint64_t arena_cap = 0;
  };
  // What this process reads from shared memory that others can write is checked (a few
  // compares per item): damage gives this error, never an access out of bounds.
  [[noreturn]] void corrupt(const std::string& what) const;
  // The item count, checked against the index (lock held).
  uint64_t count_checked() const;
  // The arena's bump pointer, checked against the arena (lock held).
  uint64_t used_checked() const;
  explicit OrderedQueueCore(std::shared_ptr<Segment> seg);

  void lock();  // takes the lock, repairs after a dead owner, maps the current store
  void unlock();
  void refresh_store();
  void rollback();
  // Transactions (lock held).
  void begin();
  void write_slot(uint64_t slot, const StoreEntry& e);
  void commit();
  // Storage (lock held, no transaction open).
  void ensure_room(uint64_t aligned_size);
  void rebuild(uint64_t min_entries, uint64_t min_bytes);

  size_t put_locked(size_t first, size_t count, const size_t* sizes, size_t stride, FillFn fill,
                    void* ctx, const OrderOps* ops);
  size_t get_locked(size_t max_items, DeliverFn deliver, void* ctx, const OrderOps* ops);
  // Where an entry's item bytes are: inside the entry itself (valid while it does not move) or
  // in the arena.
  const char* item(const StoreEntry& e) const {
    if (e.is_inline()) return e.data;
    const uint64_t off = e.offset();
    if (off > store_.arena_cap || e.size > store_.arena_cap - off) bad_entry(e);
    return store_.arena + off;
  }
  // The item's own bytes at item(e): all of them, or those before its references trailer.
  uint64_t item_size(const StoreEntry& e) const {
    if (!e.has_refs()) return e.size;
    uint64_t len;
    if (!split_refs(item(e), e.size, len)) bad_entry(e);
    return len;
  }
  [[noreturn]] void bad_entry(const StoreEntry& e) const;
  void push(const StoreEntry& e, const OrderOps* ops);  // inside a transaction
  void pop_top(const OrderOps* ops);                    // inside a transaction

  void check_open(const char* what) const;

  std::shared_ptr<Segment> seg_;
  OrderedQueueData* q_;
  QueueOrder order_;
  std::atomic<int> closed_pid_{0};  // the process that closed this handle (close())
  StoreView store_;                 // touched only with the lock held
};

}  // namespace multiproc::detail
