// The untyped queue shared by Queue<T>, SimpleQueue<T> and JoinableQueue<T>.
//
// Layout. A control segment (QueueData) and a chain of byte rings (RingData + bytes). Items are
// records in a ring: an 8-byte header word (size, kind) and the payload padded to 8 bytes; a
// record that would straddle the ring's end is preceded by a "wrap" record. Items over
// kMaxInlineItem go to a blob segment of their own and the ring holds its name.
//
// Concurrency. Producers serialize on put_lock, consumers on get_lock; each lock is held only while
// bytes move (serialization happens outside). Between the two sides the ring works as a
// single-producer single-consumer ring whose records carry their own "ready" mark: the producer
// stores a record's header word last (release), and a consumer learns that a record is there by
// reading that word, never the producer's indices. Before sealing a record the producer zeroes
// the header slot after it, so the word after the last record is always 0 ("nothing yet"). This
// is what makes the queue fast across CPUs: a consumer waiting on an empty queue polls the one
// cache line the producer writes next anyway, and the producer's indices and counts stay in its
// own cache (reading them cost two or three cache-line transfers per item, and made a consumer
// that keeps up with its producer slow it down to a few million items per second).
//
// Crash safety. A producer commits a batch by storing the ring's `tail` (then `put_count`, with an
// intent record so that a takeover can finish the count); a consumer commits by storing `head`
// (then `get_count`). A process killed before its commit leaves the queue as if the operation had
// not happened, except that consumers may already have taken records a dead producer sealed: the
// producer that takes put_lock over (robust_mutex.hpp) walks the sealed records past `tail` and
// commits them. At most the dying process's own item in flight is lost.
//
// Growth. An unbounded queue never blocks a producer: when a ring is full (or an item is too big
// for it) the producer chains a larger ring and moves `tail_ring` on; consumers drain the old ring,
// follow its next_name, and unlink it.
//
// Zero copy (Queue<T>::put_with / get_view). A put's fill callback always wrote the item in place
// (the ring, or a blob); put_with hands it the user's writer, and a writer that throws takes its
// record back (abandon_record) before anything is sealed. get_hold() stops where get() would
// deliver: the item stays at the head, get_lock stays held by the reading thread, and
// release_held() commits the head as get() would have. A holder killed before that commit
// consumed nothing: the lock's next taker finds the item still at the head.
//
// Fast paths. put(x)/get() of one plain item (put_one_plain, get_one_plain) run the same stores
// and loads in the same order as the general path (reserve + seal + commit; look + copy + commit)
// without its loops and callbacks; get_many/put_many of plain items copy runs of records in
// loops of their own. Anything unusual (a wrap, a full ring, another record kind, a dead lock
// owner) falls back to the general path before it has written anything.
#pragma once

#include <atomic>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>

#include <unistd.h>

#include <multiproc/detail/futex.hpp>
#include <multiproc/detail/robust_mutex.hpp>
#include <multiproc/detail/segment.hpp>
#include <multiproc/timeout.hpp>

namespace multiproc::detail {

inline constexpr uint32_t kQueueLayoutVersion = 3;
inline constexpr uint64_t kInitialRingCapacity = uint64_t{256} * 1024;
inline constexpr uint64_t kMaxRingCapacity = 1ULL << 30;
inline constexpr uint64_t kMaxInlineItem = uint64_t{2} * 1024 * 1024;

// Python's rule: a maxsize of 0 or less means unbounded. The typed constructors take size_t, so
// a negative count arrives as a huge one; anything past INT64_MAX can only be that (and would
// overflow the producers' room arithmetic, which made put() spin). Stored as 0.
constexpr uint64_t normalize_maxsize(uint64_t maxsize) {
  return maxsize > uint64_t{INT64_MAX} ? 0 : maxsize;
}

// A record's header: one 8-byte word, (kind + 1) << 32 | payload size; 0 = no record (yet).
inline constexpr uint64_t kHeaderSize = 8;
inline constexpr uint32_t kRecordItem = 0;
inline constexpr uint32_t kRecordBlob = 1;  // payload is a BlobRef
inline constexpr uint32_t kRecordWrap = 2;  // skip to the start of the ring
inline constexpr uint32_t kRecordSkip = 3;  // filler: skip its payload (aligns the next record's)
// An item that holds handles (queues, locks, values...): its bytes are followed by the in-flight
// references its handles took (FlightRefLog entries) and a u64 footer, the item's own length.
// A consumer delivers the item alone (opening its handles consumes those references); a queue
// destroyed with the item still in it releases them (the finalizer), so the handles' segments
// go with it instead of staying until the program ends. Out of line, the same bytes are the
// blob's, and BlobRef::size carries kItemHasRefs.
inline constexpr uint32_t kRecordItemRefs = 4;
// Where the item ends in `size` bytes that end with a references trailer (false: the footer is
// damaged); and the release of the references such bytes list (a destroyed queue's finalizer).
bool split_refs(const char* p, uint64_t size, uint64_t& item_len);
void release_item_refs(const char* p, uint64_t size);
// In QueueCore::put's sizes: this item's bytes end with the trailer described above.
inline constexpr size_t kItemHasRefs = size_t{1} << 63;
// Appends the trailer for the item that starts at `item_start` in `bytes`; returns the flag to
// put into its size.
inline size_t append_refs_trailer(std::string& bytes, size_t item_start, const std::string& refs) {
  if (refs.empty()) return 0;
  const uint64_t item_len = bytes.size() - item_start;
  bytes.append(refs);
  bytes.append(reinterpret_cast<const char*>(&item_len), sizeof item_len);
  return kItemHasRefs;
}
// Items from these sizes on get their payload on a 64-byte boundary (a filler record before the
// header), so that no cache line holds the end of one item and the start of the next. Which size
// pays depends on who is the slower side. A consumer that copies items out is the slower side of a
// stream of big items; for it the filler is one more line to move per item (a 1 KiB item spans 17
// lines aligned, 16.1 packed): plain items copied in by put() are aligned only from 4 KiB (1 KiB
// items 8% faster packed, 15.6 against 14.4 M/s from one process to another on a Xeon; 64 KiB and
// 1 MiB ran as fast misaligned). A consumer that reads in place (get_view) keeps up with its
// producer, and then reads the line the producer is writing the next item into: items a callback
// writes (put_with's writer, a serializer) are aligned from 512 bytes (1 KiB put_with + get_view:
// 11.0 M/s aligned, 5.3 packed).
inline constexpr uint64_t kAlignPayloadFrom = 4096;
inline constexpr uint64_t kAlignWrittenFrom = 512;
constexpr uint64_t header_word(uint64_t size, uint32_t kind) {
  return (uint64_t{kind} + 1) << 32 | size;
}
constexpr uint32_t header_size(uint64_t word) {
  return static_cast<uint32_t>(word);
}
constexpr uint32_t header_kind(uint64_t word) {
  return static_cast<uint32_t>(word >> 32) - 1;
}
// The header word at `p` (8-byte aligned, in a ring).
inline std::atomic_ref<uint64_t> header_at(char* p) {
  return std::atomic_ref<uint64_t>(*reinterpret_cast<uint64_t*>(p));
}
static_assert(std::atomic_ref<uint64_t>::is_always_lock_free);

struct BlobRef {
  char name[kMaxSegmentName];
  uint64_t size;
};

struct RingData {
  // Producer side (written under put_lock).
  alignas(64) std::atomic<uint64_t> tail;  // bytes ever committed by producers
  uint64_t cached_head;
  // Consumer side (written under get_lock). Own cache line: no false sharing with the producer.
  alignas(64) std::atomic<uint64_t> head;  // bytes ever consumed
  // Set at creation, then only next_name changes (before the queue's tail ring moves on).
  alignas(64) uint64_t capacity;  // a power of two
  uint64_t id;                    // the tail generation at which this ring became the tail
  char next_name[kMaxSegmentName];
};
static_assert(offsetof(RingData, head) == 64 && offsetof(RingData, capacity) == 128);
inline constexpr size_t kRingDataSize = 256;  // bytes before the ring's data
static_assert(sizeof(RingData) <= kRingDataSize);

// A producing thread's slot in a queue (claimed when it is first biased). `busy` is written by
// that thread only: 1 while it puts under its bias.
struct ProducerSlot {
  alignas(64) std::atomic<uint32_t> tid;
  std::atomic<uint32_t> busy;
};
inline constexpr int kProducerSlots = 16;
// put_lock's owner word while biased: the thread id, a bias epoch (so that a revoker's
// compare-and-swap cannot succeed on a later bias of the same thread), and this flag.
inline constexpr uint32_t kPutLockBiased = 1u << 30;
inline constexpr uint32_t kBiasEpochMask = (kPutLockBiased - 1) & ~kOwnerTidMask;

// Each group below sits on cache lines of its own, so that a side's per-item writes never
// steal a line the other side reads per item (the cost that dominates an item's transfer).
struct QueueData {
  uint32_t layout_version;
  uint32_t joinable;  // made as a JoinableQueue
  uint64_t maxsize;   // items; 0 = unbounded
  // Producer side: the lock and what a takeover needs, touched only by producers.
  alignas(64) RobustMutexData put_lock;
  // Written just before a publish, so that whoever takes put_lock over from a producer that died
  // between publishing `tail` and `put_count` can finish the count.
  std::atomic<uint64_t> put_intent_ring, put_intent_tail, put_intent_count;
  uint64_t put_seen_get_count;  // producers' cached view of get_count (bounded queues)
  alignas(64) std::atomic<uint64_t> put_count;  // items ever published; consumers read it to wait
  // Biased put lock (queue_core_bias.cpp): while bias_slot is set, put_lock is held (its owner
  // word flagged kPutLockBiased) on behalf of the thread in that producer slot, which then puts
  // with no atomic read-modify-write and no fence: those wait for the cache line a consumer is
  // reading, and made a producer run in step with its consumer at one line transfer per item.
  alignas(64) std::atomic<uint32_t> bias_slot;  // 1 + the biased thread's slot index; 0: none
  std::atomic<uint32_t> bias_used;              // ever biased: consumers fence before they sleep
  uint32_t last_putter;                         // thread id of the last locked put (put_lock held)
  uint32_t bias_epoch;                          // biases ever taken (put_lock held)
  std::atomic<uint64_t> bias_allowed_after_puts;  // no new bias before put_count gets there
  ProducerSlot producer_slots[kProducerSlots];
  // Ring chain: written once per growth, read rarely.
  alignas(64) std::atomic<uint64_t> tail_ring_gen;  // id of the ring producers write to
  char tail_ring_name[2][kMaxSegmentName];          // indexed by generation & 1
  // Consumer side.
  alignas(64) RobustMutexData get_lock;
  std::atomic<uint64_t> get_intent_ring, get_intent_head, get_intent_count;
  alignas(64) std::atomic<uint64_t> get_count;      // items ever consumed
  alignas(64) std::atomic<uint64_t> head_ring_gen;  // id of the ring consumers read from
  char head_ring_name[2][kMaxSegmentName];
  // Sleepers.
  alignas(64) WaitWord not_empty;
  alignas(64) WaitWord not_full;
  alignas(64) std::atomic<uint32_t> shut_down;  // a QueueShutdown value
  std::atomic<uint64_t> tasks_done;             // JoinableQueue: task_done() calls (see task_done)
  WaitWord all_done;
};
static_assert(offsetof(QueueData, put_count) - offsetof(QueueData, put_lock) >= 64);
static_assert(offsetof(QueueData, get_count) - offsetof(QueueData, get_lock) >= 64);
static_assert(offsetof(QueueData, get_lock) - offsetof(QueueData, put_count) >= 64);
static_assert(offsetof(QueueData, get_lock) % 64 == 0 && offsetof(QueueData, not_empty) % 64 == 0);
static_assert(std::atomic<uint64_t>::is_always_lock_free);

// A queue's global stop (Queue::shutdown, Python 3.13's): puts throw ShutDown; gets drain what is
// left and then throw ShutDown, or throw at once after an immediate shutdown (which discarded
// what was queued).
enum QueueShutdown : uint32_t { kNotShutDown = 0, kShutDown = 1, kShutDownImmediate = 2 };

// Fault injection for the crash-safety tests: when set, called at these instants of a producer's
// commit (the test kills the process there). Never set outside tests.
enum class PutCrashPoint { before_first_seal, before_commit };
inline void (*g_put_crash_point)(PutCrashPoint) = nullptr;

// Callbacks of the untyped core: fill writes an item's bytes; deliver receives them (called with
// get_lock held: copy, do not deserialize there).
using FillFn = void (*)(void* ctx, size_t index, char* dst);
using DeliverFn = void (*)(void* ctx, const char* src, size_t size);
// With deliver null, get() copies items of item_size bytes into the array at ctx (a PlainSink),
// throwing ProcessError for an item of another size.
struct PlainSink {
  char* out;
  size_t item_size;
  size_t count = 0;  // items copied so far
};

// An item that get_hold() left in place for its reader (Queue<T>::get_view): its bytes, and what
// release_held() needs to consume it. get_lock stays held by the thread that got it until then.
struct HeldItem {
  const char* data = nullptr;
  size_t size = 0;
  uint64_t end = 0;  // the ring position just past its record
  uint32_t tid = 0;  // the thread that holds get_lock for it (0: nothing held)
  // data stays mapped without a reference of its own: the ring can only change under get_lock.
  std::shared_ptr<Segment> blob;  // an out-of-line item's segment, unlinked on release
};

class QueueCore {
 public:
  static std::shared_ptr<QueueCore> create(uint64_t maxsize, bool joinable = false);
  // Opens a queue named by a serialized handle (consumes its in-flight reference).
  static std::shared_ptr<QueueCore> attach(const std::string& name);
  // Opens a queue by name, taking a reference of its own (no handle in flight).
  static std::shared_ptr<QueueCore> attach_existing(const std::string& name);
  ~QueueCore();

  const std::string& name() const { return seg_->name(); }
  void add_flight_ref() { seg_->add_flight_ref(); }

  // Puts `count` items; item i has sizes[i * size_stride] bytes (stride 0: all the same size;
  // kItemHasRefs flags an item with a references trailer, see kRecordItemRefs),
  // written by fill(ctx, i, dst), or, with fill null and stride 0, copied from the array at ctx.
  // Waits for room (bounded queues) until the deadline. Returns how many were put. Throws
  // ShutDown, or ProcessError through a closed handle.
  size_t put(size_t count, const size_t* sizes, size_t size_stride, FillFn fill, void* ctx,
             const Deadline& deadline);
  // Gets up to `max_items`, waiting until the deadline for the first. Returns how many.
  // Throws ShutDown when the queue is shut down and drained (at once after an immediate
  // shutdown), ProcessError through a closed handle. `spin` false sleeps at once; a
  // non-zero *interrupt makes a waiting get() return 0 (wake it with wake_getters()).
  size_t get(size_t max_items, DeliverFn deliver, void* ctx, const Deadline& deadline,
             bool spin = true, const std::atomic<uint32_t>* interrupt = nullptr) {
    // One plain item when get_lock is free: get_one_fast in a small frame of its own. Anything
    // else (an empty queue, a dead lock owner to repair after) takes get_impl's loop, which an
    // empty queue enters with the lock still held (consumers that find the queue empty take
    // turns at the lock once, not twice).
    int fast = 0;
    if (max_items == 1 && !deliver) {
      fast = get_one_fast(*static_cast<PlainSink*>(ctx));
      if (fast > 0) return 1;
    }
    return get_impl(max_items, deliver, ctx, deadline, spin, interrupt, nullptr, fast < 0);
  }
  void wake_getters() { q_->not_empty.notify_all(); }
  // Zero-copy get: waits like get() for one item, then leaves it in place and get_lock held by
  // this thread; `out` describes it. Returns false if the deadline passed first. The item is
  // consumed by release_held() (on this thread); if this thread's process dies first, the lock's
  // next taker finds the item still at the head and delivers it again.
  bool get_hold(HeldItem& out, const Deadline& deadline);
  void release_held(HeldItem& item);
  // Removes the queue's segments now, whoever still holds handles (owners of private queues).
  void destroy();

  uint64_t qsize() const;
  bool empty() const { return qsize() == 0; }
  bool full() const;
  uint64_t maxsize() const { return q_->maxsize; }
  // Python's close(): this handle (this object, in this process) puts and gets no more. A forked
  // child's copy, and the handle other processes get, stay open.
  void close() { closed_pid_.store(getpid(), std::memory_order_relaxed); }
  bool closed() const {
    const int pid = closed_pid_.load(std::memory_order_relaxed);
    return pid != 0 && pid == getpid();  // getpid() only once closed: not on the fast path
  }
  // For everyone; immediate also discards what is queued (a JoinableQueue counts it done).
  void shutdown(bool immediate);
  bool is_shutdown() const { return q_->shut_down.load(std::memory_order_acquire) != 0; }

  // JoinableQueue.
  void task_done();
  bool join(const Deadline& deadline);

 private:
  // A mapped ring. `cap` is its capacity as checked when it was mapped: every offset is masked
  // with this copy, never with the shared field, which another process may overwrite.
  struct RingView {
    std::shared_ptr<Segment> seg;
    RingData* r = nullptr;
    char* data = nullptr;
    uint64_t id = 0;
    uint64_t cap = 0;
  };
  RingView map_ring(const char* name_field, uint64_t id) const;
  // What a process reads from shared memory that others can write is checked (a few compares
  // on the slow paths and per record): damage gives this error, never an access out of bounds.
  [[noreturn]] void corrupt(const std::string& what) const;
  explicit QueueCore(std::shared_ptr<Segment> seg);
  static std::shared_ptr<QueueCore> open(const std::string& name, bool consume_flight_ref);
  // What a waiting consumer watches (without get_lock): the header slot at the head it last saw.
  struct Watch {
    std::shared_ptr<Segment> ring;  // keeps the slot mapped if another thread moves to a new ring
    char* slot = nullptr;
    uint64_t ring_id = 0;
    uint64_t get_count = 0;
  };
  // Map the ring producers (consumers) are at now, if it is not the one mapped; the check is
  // inline, on every put (get).
  void refresh_put_ring() {
    const uint64_t gen = q_->tail_ring_gen.load(std::memory_order_acquire);
    if (gen != put_ring_.id || !put_ring_.r) remap_put_ring(gen);
  }
  void refresh_get_ring() {
    const uint64_t gen = q_->head_ring_gen.load(std::memory_order_acquire);
    if (gen != get_ring_.id || !get_ring_.r) remap_get_ring(gen);
  }
  void remap_put_ring(uint64_t gen);
  void remap_get_ring(uint64_t gen);
  void repair_dead_producer();
  // put_lock, biased (queue_core_bias.cpp). enter_put() returns whether this put runs under
  // this thread's bias (no lock operation at all); leave_put() ends the put either way.
  bool enter_put();
  void leave_put(bool biased);
  void lock_put();
  void begin_put_section();
  LockStatus revoke_bias(uint32_t owner_word, uint32_t self);
  bool end_bias(uint32_t self);  // with put_lock's word held; true if its holder died mid-put
  bool maybe_take_bias(uint32_t self);
  void drop_bias();
  bool claim_slot(uint32_t self);
  void release_bias();
  // Under put_lock: room for one record of `payload` bytes (its payload 64-byte aligned from
  // `align_from` bytes on), growing the chain if needed. The record is sealed (made visible) by
  // seal_pending(), after its payload is written.
  char* reserve(size_t payload, uint32_t kind, uint64_t align_from);
  // The first record of a batch is sealed at the end (seal_pending); the others at once.
  void seal_or_defer(char* header, uint64_t word) {
    if (pending_header_) {
      header_at(header).store(word, std::memory_order_relaxed);
    } else {
      pending_header_ = header;
      pending_word_ = word;
    }
  }
  void seal_pending();
  // The commit of what put_pos_/put_unpublished_ say was written and sealed (publish_put's end).
  void commit_put();
  // One item, the common put(x): reserve, copy (from src, or fill(src, 0, dst)) and publish in
  // one piece. False (nothing written) when it needs put_locked's general path (a wrap, a full
  // or small ring, an item out of line or with references).
  bool put_one_plain(const char* src, size_t size, FillFn fill = nullptr);
  // The common get() of one plain item at the head: false when get_locked must look (nothing
  // there, another kind of record, the ring's end).
  bool get_one_plain(PlainSink& sink);
  // get()'s first try for one plain item: 1 got it; 0 did nothing (get_lock not taken); -1
  // took get_lock, found the ring current and nothing for it at the head, and keeps the lock.
  int get_one_fast(PlainSink& sink);
  // get_hold()'s look at the head the same way: an item record (after a filler) left in place.
  bool hold_one(HeldItem& item);
  // Under put_lock: up to max_items plain items of `size` bytes from `src`, as many as fit before
  // the ring's end and in its free space; 0 when the next one needs reserve().
  size_t put_run(const char* src, size_t size, size_t max_items);
  bool grow(uint64_t min_record);
  void publish_put();
  void publish_get(uint64_t head, uint64_t items);
  void lock_get() { lock_get(Deadline::never()); }
  void switch_get_ring();
  size_t put_all(size_t count, const size_t* sizes, size_t stride, FillFn fill, void* ctx,
                 const Deadline& deadline);
  size_t put_locked(size_t first, size_t count, const size_t* sizes, size_t stride, FillFn fill,
                    void* ctx);
  size_t get_locked(size_t max_items, DeliverFn deliver, void* ctx, Watch* watch,
                    HeldItem* hold = nullptr);
  // `locked`: get() took get_lock and found nothing at the head (the loop starts with it held).
  size_t get_impl(size_t max_items, DeliverFn deliver, void* ctx, const Deadline& deadline,
                  bool spin, const std::atomic<uint32_t>* interrupt, HeldItem* hold,
                  bool locked = false);
  bool lock_get(const Deadline& deadline);
  // The thread that holds get_lock for a HeldItem (0: none): that thread's own get() would take
  // its lock over as a dead owner's, so it is refused instead.
  std::atomic<uint32_t> held_tid_{0};
  void check_not_holding(const char* what) const;
  // Takes back the record a failed fill was writing (at ring position `start`, put_lock held).
  void abandon_record(uint64_t start);
  bool watch_fired(const Watch& w) const;

  std::shared_ptr<Segment> seg_;
  QueueData* q_;
  RingView put_ring_;             // touched only with put_lock held
  RingView get_ring_;             // touched only with get_lock held
  uint64_t put_pos_ = 0;          // put_ring_'s tail while reserving (put_lock held)
  uint64_t put_unpublished_ = 0;  // items sealed but not yet committed (put_lock held)
  // This process's biased producer thread, if it has one for this queue.
  std::atomic<uint32_t> bias_tid_{0};
  std::atomic<int> bias_index_{-1};     // its slot in producer_slots
  std::atomic<bool> bias_held_{false};  // it holds the bias now (written by that thread)
  std::atomic<uint32_t> bias_word_{0};  // put_lock's owner word for that bias
  std::atomic<int> closed_pid_{0};      // the process that closed this handle (close())
  void check_open(const char* what) const;
  void discard_all();
  uint64_t items_ever_queued() const;  // JoinableQueue (see task_done)
  int bias_pid_ = 0;  // the process that claimed the slot (a forked copy must not give it back)
  // The first record of the batch being written, not sealed yet (put_lock held). The records
  // after it are sealed as they are reserved: no consumer can reach them before the first, which
  // is sealed last (release), so a consumer sees a batch whole and never reads a cache line the
  // producer is still filling; a producer that dies mid-batch leaves none of it reachable.
  char* pending_header_ = nullptr;
  uint64_t pending_word_ = 0;
};

}  // namespace multiproc::detail
