#include <multiproc/detail/ordered_queue_core.hpp>

#include <algorithm>
#include <cstring>
#include <new>
#include <vector>

#include <multiproc/errors.hpp>

namespace multiproc::detail {
namespace {

constexpr uint64_t align8(uint64_t n) {
  return (n + 7) & ~uint64_t{7};
}

// Sizes beyond this are refused before any arithmetic can overflow.
constexpr uint64_t kMaxStoreBytes = uint64_t{1} << 46;

uint64_t next_pow2(uint64_t n) {
  uint64_t p = 1;
  while (p < n) p <<= 1;
  return p;
}

uint64_t round_up(uint64_t n, uint64_t to) {
  return (n + to - 1) / to * to;
}

void copy_name(char* dst, const std::string& name) {
  std::memset(dst, 0, kMaxSegmentName);
  std::memcpy(dst, name.data(), std::min(name.size(), kMaxSegmentName - 1));
}

std::string read_name(const char* src) {
  return std::string(src, strnlen(src, kMaxSegmentName));
}

// Keeps the compiler from moving memory accesses across a step of a transaction. A process can
// be killed between any two instructions; what the next lock owner finds is exactly the stores
// made before that instant, so program order is what the undo protocol relies on.
inline void step() {
  std::atomic_signal_fence(std::memory_order_seq_cst);
}

// Called when the last handle anywhere goes: remove the stores (a crashed switch may have left
// a second one behind).
void finalize_ordered_queue(Segment& seg) {
  auto* q = static_cast<OrderedQueueData*>(seg.payload());
  // Items still queued give back the references their handles took (kRecordItemRefs). Not
  // after a crash inside a transaction: the index may then name items twice.
  if (!q->undo.active.load(std::memory_order_acquire)) {
    try {
      const char* name = q->store_name[q->store_gen.load(std::memory_order_acquire) & 1];
      auto store = Segment::attach(read_name(name), SegmentKind::blob, false, false);
      const auto* base = static_cast<const char*>(store->payload());
      const auto* h = reinterpret_cast<const StoreHeader*>(base);
      const uint64_t size = store->payload_size();
      const uint64_t index_cap = h->index_capacity, arena_cap = h->arena_capacity;
      const uint64_t arena_off = h->arena_offset, n = q->count.load();
      if (size >= sizeof(StoreHeader) && h->magic == kStoreMagic &&
          index_cap <= (size - sizeof(StoreHeader)) / sizeof(StoreEntry) && n <= index_cap &&
          arena_off >= sizeof(StoreHeader) + index_cap * sizeof(StoreEntry) && arena_off <= size &&
          arena_cap <= size - arena_off) {
        const auto* index = reinterpret_cast<const StoreEntry*>(base + sizeof(StoreHeader));
        for (uint64_t i = 0; i < n; ++i) {
          const StoreEntry& e = index[i];
          if (e.has_refs() && e.offset() <= arena_cap && e.size <= arena_cap - e.offset())
            release_item_refs(base + arena_off + e.offset(), e.size);
        }
      }
    } catch (const ProcessError&) {
      // No store to read: nothing to give back.
    }
  }
  for (auto& name : q->store_name)
    if (name[0]) unlink_segment(read_name(name));
}

[[maybe_unused]] const bool g_finalizer_registered =
    (register_segment_finalizer(SegmentKind::ordered_queue, finalize_ordered_queue), true);

const char* order_name(uint32_t order) {
  return order == static_cast<uint32_t>(QueueOrder::lifo)       ? "LifoQueue"
         : order == static_cast<uint32_t>(QueueOrder::priority) ? "PriorityQueue"
                                                                : "unknown queue";
}

}  // namespace

// ---- creation -----------------------------------------------------------------------------------

std::shared_ptr<OrderedQueueCore> OrderedQueueCore::create(QueueOrder order, uint64_t maxsize) {
  auto seg = Segment::create(SegmentKind::ordered_queue, sizeof(OrderedQueueData), true);
  auto* q = new (seg->payload()) OrderedQueueData{};
  q->layout_version = kOrderedQueueLayoutVersion;
  q->order = static_cast<uint32_t>(order);
  q->maxsize = normalize_maxsize(maxsize);
  std::shared_ptr<OrderedQueueCore> core(new OrderedQueueCore(std::move(seg)));
  // The first store: generation 0 names nothing, so this makes store 1. No other process can
  // see the queue yet, so the lock is not needed.
  core->rebuild(0, 0);
  return core;
}

std::shared_ptr<OrderedQueueCore> OrderedQueueCore::attach(const std::string& name,
                                                           QueueOrder order) {
  auto seg = Segment::attach(name, SegmentKind::ordered_queue, true, true);
  auto* q = static_cast<OrderedQueueData*>(seg->payload());
  if (seg->payload_size() < sizeof(OrderedQueueData) ||
      q->layout_version != kOrderedQueueLayoutVersion)
    throw ProcessError("queue " + name + " was made by an incompatible multiproc version");
  if (q->order != static_cast<uint32_t>(order))
    throw ProcessError("queue " + name + " is a " + order_name(q->order) + ", not a " +
                       order_name(static_cast<uint32_t>(order)));
  return std::shared_ptr<OrderedQueueCore>(new OrderedQueueCore(std::move(seg)));
}

OrderedQueueCore::OrderedQueueCore(std::shared_ptr<Segment> seg)
    : seg_(std::move(seg)),
      q_(static_cast<OrderedQueueData*>(seg_->payload())),
      order_(static_cast<QueueOrder>(q_->order)) {}

OrderedQueueCore::~OrderedQueueCore() = default;

// ---- the lock, and the repair a takeover needs --------------------------------------------------

void OrderedQueueCore::lock() {
  robust_lock_nonrecursive(q_->lock);
  try {
    refresh_store();
    // An open transaction means its owner died (robust_lock said acquired_owner_died, now or
    // to a repairer that died too): undo it. The log is left intact until the undo is done, so
    // a repair cut short is simply done again.
    if (q_->undo.active.load(std::memory_order_acquire)) rollback();
  } catch (...) {
    robust_unlock(q_->lock);
    throw;
  }
}

void OrderedQueueCore::unlock() {
  robust_unlock(q_->lock);  // a full barrier: orders our stores before the waiter checks
}

void OrderedQueueCore::refresh_store() {
  uint64_t gen = q_->store_gen.load(std::memory_order_acquire);
  if (gen == store_.gen && store_.h) return;
  StoreView v;
  v.seg = Segment::attach(read_name(q_->store_name[gen & 1]), SegmentKind::blob, false, false);
  auto* base = static_cast<char*>(v.seg->payload());
  v.h = reinterpret_cast<StoreHeader*>(base);
  const uint64_t size = v.seg->payload_size();
  if (size < sizeof(StoreHeader) || v.h->magic != kStoreMagic ||
      v.h->layout_version != kOrderedQueueLayoutVersion)
    corrupt("its store " + v.seg->name() + " is damaged or of another version");
  v.index_cap = v.h->index_capacity;
  v.arena_cap = v.h->arena_capacity;
  const uint64_t arena_offset = v.h->arena_offset;
  if (v.index_cap > (size - sizeof(StoreHeader)) / sizeof(StoreEntry) ||
      arena_offset < sizeof(StoreHeader) + v.index_cap * sizeof(StoreEntry) ||
      arena_offset > size || v.arena_cap > size - arena_offset || arena_offset % 8 != 0)
    corrupt("its store " + v.seg->name() + " has an index or arena that does not fit");
  v.index = reinterpret_cast<StoreEntry*>(base + sizeof(StoreHeader));
  v.arena = base + arena_offset;
  v.gen = gen;
  store_ = std::move(v);
}

void OrderedQueueCore::corrupt(const std::string& what) const {
  throw ProcessError("queue " + name() + " is corrupt: " + what +
                     " (a process wrote over its shared memory)");
}

void OrderedQueueCore::bad_entry(const StoreEntry& e) const {
  corrupt("an item of " + std::to_string(e.size) + " bytes at arena offset " +
          std::to_string(e.offset()) + " of " + std::to_string(store_.arena_cap));
}

uint64_t OrderedQueueCore::count_checked() const {
  const uint64_t n = q_->count.load(std::memory_order_relaxed);
  if (n > store_.index_cap)
    corrupt("it counts " + std::to_string(n) + " items in an index of " +
            std::to_string(store_.index_cap));
  return n;
}

uint64_t OrderedQueueCore::used_checked() const {
  const uint64_t used = store_.h->used;
  if (used > store_.arena_cap || used % 8 != 0)
    corrupt("its arena's bump pointer is " + std::to_string(used) + " of " +
            std::to_string(store_.arena_cap));
  return used;
}

// ---- transactions -------------------------------------------------------------------------------

void OrderedQueueCore::begin() {
  auto& u = q_->undo;
  u.count = q_->count.load(std::memory_order_relaxed);
  u.used = store_.h->used;
  u.live = store_.h->live;
  u.len.store(0, std::memory_order_relaxed);
  step();
  u.active.store(1, std::memory_order_release);
  step();
}

void OrderedQueueCore::write_slot(uint64_t slot, const StoreEntry& e) {
  auto& u = q_->undo;
  uint32_t k = u.len.load(std::memory_order_relaxed);
  if (k >= kUndoCapacity) throw ProcessError("queue undo log overflow (corrupted heap?)");
  u.rec[k].slot = slot;
  u.rec[k].old = store_.index[slot];
  step();
  u.len.store(k + 1, std::memory_order_release);  // the record counts from here
  step();
  store_.index[slot] = e;
}

void OrderedQueueCore::commit() {
  step();
  q_->undo.active.store(0, std::memory_order_release);  // the commit
  step();
}

void OrderedQueueCore::rollback() {
  auto& u = q_->undo;
  uint32_t len = std::min(u.len.load(std::memory_order_acquire), kUndoCapacity);
  for (uint32_t i = len; i-- > 0;)
    if (u.rec[i].slot < store_.index_cap) store_.index[u.rec[i].slot] = u.rec[i].old;
  store_.h->used = u.used;
  store_.h->live = u.live;
  q_->count.store(u.count, std::memory_order_seq_cst);
  step();
  u.active.store(0, std::memory_order_release);
  step();
}

// ---- storage ------------------------------------------------------------------------------------

void OrderedQueueCore::ensure_room(uint64_t aligned_size) {
  const uint64_t n = count_checked();
  if (n < store_.index_cap && store_.arena_cap - used_checked() >= aligned_size) return;
  const uint64_t live = store_.h->live;
  if (live > store_.arena_cap) corrupt("its arena's live bytes exceed the arena");
  rebuild(n + 1, live + aligned_size);
}

void OrderedQueueCore::rebuild(uint64_t min_entries, uint64_t min_bytes) {
  if (min_bytes > kMaxStoreBytes || min_entries > kMaxStoreBytes / sizeof(StoreEntry))
    throw ProcessError("queue item too large: " + std::to_string(min_bytes) +
                       " bytes of queue storage needed");
  const uint64_t entries = std::max(kMinStoreEntries, next_pow2(2 * min_entries));
  const uint64_t arena = std::max(kMinStoreArena, round_up(2 * min_bytes, uint64_t{64} * 1024));
  const uint64_t arena_offset = sizeof(StoreHeader) + entries * sizeof(StoreEntry);

  // Whatever a crashed switch (or the store before last) left in the slot we reuse goes first.
  const uint64_t gen = store_.h ? store_.gen : q_->store_gen.load(std::memory_order_relaxed);
  char* slot = q_->store_name[(gen + 1) & 1];
  if (slot[0]) {
    unlink_segment(read_name(slot));
    std::memset(slot, 0, kMaxSegmentName);
  }
  auto seg = Segment::create(SegmentKind::blob, arena_offset + arena, false);  // may throw
  copy_name(slot, seg->name());

  StoreView v;
  v.seg = std::move(seg);
  auto* base = static_cast<char*>(v.seg->payload());
  v.h = new (base) StoreHeader{};
  v.h->magic = kStoreMagic;
  v.h->layout_version = kOrderedQueueLayoutVersion;
  v.h->index_capacity = entries;
  v.h->arena_capacity = arena;
  v.h->arena_offset = arena_offset;
  v.index = reinterpret_cast<StoreEntry*>(base + sizeof(StoreHeader));
  v.arena = base + arena_offset;
  v.gen = gen + 1;
  v.index_cap = entries;
  v.arena_cap = arena;
  // Copy the live items in index order (for a LIFO queue that keeps the top item last in the
  // arena, so that pops keep giving space back).
  uint64_t pos = 0;
  const uint64_t n = store_.h ? count_checked() : 0;
  if (n > entries) corrupt("it counts more items than its store's live bytes allow");
  for (uint64_t i = 0; i < n; ++i) {
    StoreEntry e = store_.index[i];
    if (!e.is_inline()) {
      const char* src = item(e);
      if (align8(e.size) > arena - pos) corrupt("its items exceed its arena's live bytes");
      std::memcpy(v.arena + pos, src, e.size);
      e.set_offset(pos);
      pos += align8(e.size);
    }
    v.index[i] = e;
  }
  v.h->used = pos;
  v.h->live = pos;
  step();
  q_->store_gen.store(gen + 1, std::memory_order_release);  // the commit
  step();

  StoreView old = std::move(store_);
  store_ = std::move(v);
  if (old.seg) {
    old.seg->unlink();
    std::memset(q_->store_name[gen & 1], 0, kMaxSegmentName);
  }
}

// ---- the index: a stack or a binary heap --------------------------------------------------------

void OrderedQueueCore::push(const StoreEntry& e, const OrderOps* ops) {
  const uint64_t n = count_checked();
  if (n >= store_.index_cap) corrupt("its index is full");
  if (order_ == QueueOrder::lifo) {
    store_.index[n] = e;  // beyond the count: no record needed
  } else {
    ops->decode(ops->ctx, 0, item(e), item_size(e));
    uint64_t pos = n;
    while (pos > 0) {
      const uint64_t parent = (pos - 1) / 2;
      const StoreEntry pe = store_.index[parent];
      ops->decode(ops->ctx, 1, item(pe), item_size(pe));
      if (!ops->before(ops->ctx, 0, 1)) break;
      write_slot(pos, pe);
      pos = parent;
    }
    write_slot(pos, e);
  }
  q_->count.store(n + 1, std::memory_order_seq_cst);
}

void OrderedQueueCore::pop_top(const OrderOps* ops) {
  const uint64_t n = count_checked();
  const uint64_t m = n - 1;
  StoreEntry top;
  if (order_ == QueueOrder::lifo) {
    top = store_.index[m];
  } else {
    top = store_.index[0];
    if (m > 0) {
      const StoreEntry last = store_.index[m];
      ops->decode(ops->ctx, 0, item(last), item_size(last));
      uint64_t pos = 0;
      for (;;) {
        const uint64_t l = 2 * pos + 1;
        if (l >= m) break;
        uint64_t c = l;
        int c_slot = 1;
        ops->decode(ops->ctx, 1, item(store_.index[l]), item_size(store_.index[l]));
        if (l + 1 < m) {
          ops->decode(ops->ctx, 2, item(store_.index[l + 1]), item_size(store_.index[l + 1]));
          if (ops->before(ops->ctx, 2, 1)) {
            c = l + 1;
            c_slot = 2;
          }
        }
        if (!ops->before(ops->ctx, c_slot, 0)) break;
        write_slot(pos, store_.index[c]);
        pos = c;
      }
      write_slot(pos, last);
    }
  }
  StoreHeader* h = store_.h;
  if (m == 0) {
    h->used = 0;
    h->live = 0;
  } else if (!top.is_inline()) {
    const uint64_t asz = align8(top.size);
    h->live -= asz;
    if (top.offset() + asz == h->used) h->used = top.offset();  // the newest allocation
  }
  q_->count.store(m, std::memory_order_seq_cst);
}

// ---- producer side ------------------------------------------------------------------------------

size_t OrderedQueueCore::put_locked(size_t first, size_t count, const size_t* sizes, size_t stride,
                                    FillFn fill, void* ctx, const OrderOps* ops) {
  size_t n = first;
  for (; n < first + count; ++n) {
    uint64_t size = sizes[n * stride];
    const bool refs = (size & kItemHasRefs) != 0;
    size &= ~kItemHasRefs;
    if (size > kMaxStoreBytes) throw ProcessError("queue item too large");
    StoreEntry e{};
    e.size = size;
    if (refs) {
      if (e.is_inline()) throw ProcessError("queue item's references trailer is malformed");
      e.set_has_refs();
    }
    const uint64_t asz = e.is_inline() ? 0 : align8(size);
    ensure_room(asz);
    StoreHeader* h = store_.h;
    if (e.is_inline()) {
      fill(ctx, n, e.data);
    } else {
      const uint64_t used = used_checked();
      if (store_.arena_cap - used < asz) corrupt("its arena's bump pointer moved under the lock");
      e.set_offset(used);
      fill(ctx, n, store_.arena + used);  // free space: no entry refers to it yet
    }
    begin();
    try {
      h->used += asz;
      h->live += asz;
      push(e, ops);
    } catch (...) {
      rollback();
      throw;
    }
    commit();
  }
  return n - first;
}

size_t OrderedQueueCore::put(size_t count, const size_t* sizes, size_t stride, FillFn fill,
                             void* ctx, const OrderOps* ops, const Deadline& deadline) {
  if (order_ == QueueOrder::priority && !ops)
    throw ProcessError("PriorityQueue core used without an ordering");
  if (closed_pid_.load(std::memory_order_relaxed)) check_open("put");
  size_t done = 0;
  while (done < count) {
    if (is_shutdown()) throw ShutDown("put() on queue " + name() + ", which was shut down");
    const uint64_t maxsize = q_->maxsize;
    if (maxsize) {
      auto has_room = [&] {
        return q_->count.load(std::memory_order_seq_cst) < maxsize || is_shutdown();
      };
      if (!has_room() && !wait_for(q_->not_full, has_room, deadline)) return done;
      if (is_shutdown()) throw ShutDown("put() on queue " + name() + ", which was shut down");
    }
    lock();
    size_t limit = std::min(count - done, kPutBatch);
    if (maxsize) {
      const uint64_t used = q_->count.load(std::memory_order_relaxed);
      limit = used >= maxsize ? 0 : std::min<uint64_t>(limit, maxsize - used);
    }
    size_t n = 0;
    try {
      n = limit ? put_locked(done, limit, sizes, stride, fill, ctx, ops) : 0;
    } catch (...) {
      unlock();
      q_->not_empty.notify_all();  // items before the failing one may be in
      throw;
    }
    unlock();
    if (n) q_->not_empty.notify(static_cast<int>(std::min<size_t>(n, 0x7fffffff)));
    done += n;
    if (done < count && n == 0 && deadline.expired()) return done;
  }
  return done;
}

// ---- consumer side ------------------------------------------------------------------------------

size_t OrderedQueueCore::get_locked(size_t max_items, DeliverFn deliver, void* ctx,
                                    const OrderOps* ops) {
  size_t delivered = 0;
  while (delivered < max_items) {
    const uint64_t n = count_checked();
    if (n == 0) break;
    const StoreEntry top = order_ == QueueOrder::lifo ? store_.index[n - 1] : store_.index[0];
    // Copy first: if this process dies or deliver throws, nothing has changed yet.
    deliver(ctx, item(top), item_size(top));
    begin();
    try {
      pop_top(ops);
    } catch (...) {
      rollback();
      throw;
    }
    commit();
    ++delivered;
  }
  // An empty queue gives a store that a burst (or a huge item) made big back to the system.
  if (q_->count.load(std::memory_order_relaxed) == 0 &&
      store_.index_cap * sizeof(StoreEntry) + store_.arena_cap > kShrinkStoreAbove) {
    try {
      rebuild(0, 0);
    } catch (const ProcessError&) {
      // No memory for the small store: keep the big one.
    }
  }
  return delivered;
}

size_t OrderedQueueCore::get(size_t max_items, DeliverFn deliver, void* ctx, const OrderOps* ops,
                             const Deadline& deadline) {
  if (closed_pid_.load(std::memory_order_relaxed)) check_open("get");
  if (max_items == 0) return 0;
  if (order_ == QueueOrder::priority && !ops)
    throw ProcessError("PriorityQueue core used without an ordering");
  auto available = [&] { return q_->count.load(std::memory_order_seq_cst) > 0 || is_shutdown(); };
  for (;;) {
    if (q_->shut_down.load(std::memory_order_acquire) == kShutDownImmediate)
      throw ShutDown("get() on queue " + name() + ", which was shut down (immediate)");
    if (available()) {
      lock();
      size_t n;
      try {
        n = get_locked(max_items, deliver, ctx, ops);
      } catch (...) {
        unlock();
        throw;
      }
      unlock();
      if (n) {
        q_->not_full.notify(static_cast<int>(std::min<size_t>(n, 0x7fffffff)));
        return n;
      }
      if (is_shutdown() && qsize() == 0)
        throw ShutDown("get() on queue " + name() + ", which was shut down, with no items left");
    }
    if (deadline.expired() && !available()) return 0;
    if (!wait_for(q_->not_empty, available, deadline)) return 0;
  }
}

void OrderedQueueCore::check_open(const char* what) const {
  if (closed())
    throw ProcessError(std::string(what) + "() on queue " + name() +
                       " through a handle that was closed (close() means this process uses the "
                       "handle no more; shutdown() is the stop for everyone)");
}

void OrderedQueueCore::shutdown(bool immediate) {
  if (immediate) {
    q_->shut_down.store(kShutDownImmediate, std::memory_order_seq_cst);
    // Discard what is queued in one transaction; the references its items' handles took are
    // given back after the commit (a repair could otherwise bring back items already released).
    std::vector<std::string> trailers;
    lock();
    try {
      const uint64_t n = count_checked();
      for (uint64_t i = 0; i < n; ++i) {
        const StoreEntry& e = store_.index[i];
        if (e.has_refs()) trailers.emplace_back(item(e), e.size);
      }
      begin();
      store_.h->used = 0;
      store_.h->live = 0;
      q_->count.store(0, std::memory_order_seq_cst);
      commit();
    } catch (...) {
      unlock();
      throw;
    }
    unlock();
    for (const auto& t : trailers) release_item_refs(t.data(), t.size());
  } else {
    uint32_t expected = kNotShutDown;
    q_->shut_down.compare_exchange_strong(expected, kShutDown, std::memory_order_seq_cst);
  }
  q_->not_empty.notify_all();
  q_->not_full.notify_all();
}

}  // namespace multiproc::detail
