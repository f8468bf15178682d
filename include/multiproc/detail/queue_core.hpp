// The untyped queue shared by Queue<T>, SimpleQueue<T> and JoinableQueue<T>.
//
// Layout. A control segment (QueueData) and a chain of byte rings (RingData + bytes). Items are
// records in a ring: an 8-byte header (size, kind) and the payload padded to 8 bytes; a record
// that would straddle the ring's end is preceded by a "wrap" record. Items over kMaxInlineItem go
// to a blob segment of their own and the ring holds its name.
//
// Concurrency. Producers serialize on put_lock, consumers on get_lock; each lock is held only while
// bytes move (serialization happens outside). Between the two sides the ring works as a
// single-producer single-consumer ring: the producer publishes `tail` with a release store, the
// consumer publishes `head`; each side caches the other's index and re-reads it only when it
// seems to have run out (the trick that makes SPSC rings fast).
//
// Crash safety. Every operation commits with one final store (tail, head, or a generation
// counter) made while holding its lock. A process killed before that store leaves the queue as if
// the operation never began; the locks are robust (robust_mutex.hpp), so the next process takes
// over. At most the dying process's own item in flight is lost.
//
// Growth. An unbounded queue never blocks a producer: when a ring is full (or an item is too big
// for it) the producer chains a larger ring and moves `tail_ring` on; consumers drain the old ring,
// follow its next_name, and unlink it.
#pragma once

#include <atomic>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>

#include <multiproc/detail/futex.hpp>
#include <multiproc/detail/robust_mutex.hpp>
#include <multiproc/detail/segment.hpp>
#include <multiproc/timeout.hpp>

namespace multiproc::detail {

inline constexpr uint32_t kQueueLayoutVersion = 1;
inline constexpr uint64_t kInitialRingCapacity = 256 * 1024;
inline constexpr uint64_t kMaxRingCapacity = 1ULL << 30;
inline constexpr uint64_t kMaxInlineItem = 2 * 1024 * 1024;

struct RecordHeader {
  uint32_t size;
  uint32_t kind;
};
inline constexpr uint32_t kRecordItem = 0;
inline constexpr uint32_t kRecordBlob = 1;  // payload is a BlobRef
inline constexpr uint32_t kRecordWrap = 2;  // skip to the start of the ring
static_assert(sizeof(RecordHeader) == 8);

struct BlobRef {
  char name[kMaxSegmentName];
  uint64_t size;
};

struct RingData {
  // Producer side (written under put_lock).
  alignas(64) std::atomic<uint64_t> tail;  // bytes ever published
  uint64_t cached_head;
  // Consumer side (written under get_lock). Own cache line: no false sharing with the producer.
  alignas(64) std::atomic<uint64_t> head;  // bytes ever consumed
  uint64_t cached_tail;
  // Set at creation, then only next_name changes (before the queue's tail ring moves on).
  alignas(64) uint64_t capacity;  // a power of two
  uint64_t id;                    // the tail generation at which this ring became the tail
  char next_name[kMaxSegmentName];
};
static_assert(offsetof(RingData, head) == 64 && offsetof(RingData, capacity) == 128);
inline constexpr size_t kRingDataSize = 256;  // bytes before the ring's data
static_assert(sizeof(RingData) <= kRingDataSize);

// Each group below sits on cache lines of its own, so that a side's per-item writes never
// steal a line the other side reads per item (the cost that dominates an item's transfer).
struct QueueData {
  uint32_t layout_version;
  uint32_t joinable;  // put() counts unfinished tasks (JoinableQueue)
  uint64_t maxsize;   // items; 0 = unbounded
  // Producer side: the lock and what a takeover needs, touched only by producers.
  alignas(64) RobustMutexData put_lock;
  // Written just before a publish, so that whoever takes put_lock over from a producer that died
  // between publishing `tail` and `put_count` can finish the count.
  std::atomic<uint64_t> put_intent_ring, put_intent_tail, put_intent_count;
  uint64_t put_seen_get_count;  // producers' cached view of get_count (bounded queues)
  alignas(64) std::atomic<uint64_t> put_count;  // items ever published; consumers read it to wait
  // Ring chain: written once per growth, read rarely.
  alignas(64) std::atomic<uint64_t> tail_ring_gen;  // id of the ring producers write to
  char tail_ring_name[2][kMaxSegmentName];          // indexed by generation & 1
  // Consumer side.
  alignas(64) RobustMutexData get_lock;
  std::atomic<uint64_t> get_intent_ring, get_intent_head, get_intent_count;
  alignas(64) std::atomic<uint64_t> get_count;  // items ever consumed
  alignas(64) std::atomic<uint64_t> head_ring_gen;  // id of the ring consumers read from
  char head_ring_name[2][kMaxSegmentName];
  // Sleepers.
  alignas(64) WaitWord not_empty;
  alignas(64) WaitWord not_full;
  alignas(64) std::atomic<uint32_t> closed;
  std::atomic<int64_t> unfinished;  // JoinableQueue: put() minus task_done()
  WaitWord all_done;
};
static_assert(offsetof(QueueData, put_count) - offsetof(QueueData, put_lock) >= 64);
static_assert(offsetof(QueueData, get_count) - offsetof(QueueData, get_lock) >= 64);
static_assert(offsetof(QueueData, get_lock) - offsetof(QueueData, put_count) >= 64);
static_assert(offsetof(QueueData, get_lock) % 64 == 0 && offsetof(QueueData, not_empty) % 64 == 0);
static_assert(std::atomic<uint64_t>::is_always_lock_free &&
              std::atomic<int64_t>::is_always_lock_free);

// Callbacks of the untyped core: fill writes an item's bytes; deliver receives them (called with
// get_lock held: copy, do not deserialize there).
using FillFn = void (*)(void* ctx, size_t index, char* dst);
using DeliverFn = void (*)(void* ctx, const char* src, size_t size);

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

  // Puts `count` items; item i has sizes[i * size_stride] bytes (stride 0: all the same size),
  // written by fill(ctx, i, dst). Waits for room (bounded queues) until the deadline. Returns how
  // many were put. Throws QueueClosed.
  size_t put(size_t count, const size_t* sizes, size_t size_stride, FillFn fill, void* ctx,
             const Deadline& deadline);
  // Gets up to `max_items`, waiting until the deadline for the first. Returns how many.
  // Throws QueueClosed when the queue is closed and drained. `spin` false sleeps at once; a
  // non-zero *interrupt makes a waiting get() return 0 (wake it with wake_getters()).
  size_t get(size_t max_items, DeliverFn deliver, void* ctx, const Deadline& deadline,
             bool spin = true, const std::atomic<uint32_t>* interrupt = nullptr);
  void wake_getters() { q_->not_empty.notify_all(); }
  // Removes the queue's segments now, whoever still holds handles (owners of private queues).
  void destroy();

  uint64_t qsize() const;
  bool empty() const { return qsize() == 0; }
  bool full() const;
  uint64_t maxsize() const { return q_->maxsize; }
  void close();
  bool closed() const { return q_->closed.load(std::memory_order_acquire) != 0; }

  // JoinableQueue.
  void task_done();
  bool join(const Deadline& deadline);

 private:
  struct RingView {
    std::shared_ptr<Segment> seg;
    RingData* r = nullptr;
    char* data = nullptr;
    uint64_t id = 0;
  };
  explicit QueueCore(std::shared_ptr<Segment> seg);
  static std::shared_ptr<QueueCore> open(const std::string& name, bool consume_flight_ref);
  void refresh_put_ring();
  void refresh_get_ring();
  // Under put_lock: room for one record of `payload` bytes, growing the chain if needed.
  char* reserve(size_t payload, uint32_t kind);
  bool grow(uint64_t min_record);
  void publish_put();
  void publish_get(uint64_t head, uint64_t items);
  void lock_put();
  void lock_get();
  void switch_get_ring();
  size_t put_all(size_t count, const size_t* sizes, size_t stride, FillFn fill, void* ctx,
                 const Deadline& deadline);
  size_t put_locked(size_t first, size_t count, const size_t* sizes, size_t stride, FillFn fill,
                    void* ctx);
  size_t get_locked(size_t max_items, DeliverFn deliver, void* ctx);

  std::shared_ptr<Segment> seg_;
  QueueData* q_;
  RingView put_ring_;             // touched only with put_lock held
  RingView get_ring_;             // touched only with get_lock held
  uint64_t put_pos_ = 0;          // put_ring_'s tail while reserving (put_lock held)
  uint64_t put_unpublished_ = 0;  // items reserved but not yet published (put_lock held)
};

}  // namespace multiproc::detail
