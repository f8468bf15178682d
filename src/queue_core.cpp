#include <multiproc/detail/queue_core.hpp>

#include <algorithm>
#include <cstring>
#include <new>

#include <multiproc/errors.hpp>

namespace multiproc::detail {
namespace {

constexpr uint64_t align8(uint64_t n) {
  return (n + 7) & ~uint64_t{7};
}

uint64_t next_pow2(uint64_t n) {
  uint64_t p = 1;
  while (p < n) p <<= 1;
  return p;
}

void copy_name(char* dst, const std::string& name) {
  std::memset(dst, 0, kMaxSegmentName);
  std::memcpy(dst, name.data(), std::min(name.size(), kMaxSegmentName - 1));
}

std::string read_name(const char* src) {
  return std::string(src, strnlen(src, kMaxSegmentName));
}

std::shared_ptr<Segment> create_ring(uint64_t capacity, uint64_t id) {
  auto seg = Segment::create(SegmentKind::ring, kRingDataSize + capacity, false);
  auto* r = new (seg->payload()) RingData{};
  r->capacity = capacity;
  r->id = id;
  return seg;
}

// Called when the last handle anywhere goes: remove the rings and any blobs still queued.
void finalize_queue(Segment& seg) {
  auto* q = static_cast<QueueData*>(seg.payload());
  uint64_t gen = q->head_ring_gen.load(std::memory_order_acquire);
  std::string name = read_name(q->head_ring_name[gen & 1]);
  uint64_t last = q->tail_ring_gen.load(std::memory_order_acquire);
  for (int guard = 0; guard < 64 && !name.empty(); ++guard) {
    std::shared_ptr<Segment> ring;
    try {
      ring = Segment::attach(name, SegmentKind::ring, false, false);
    } catch (const ProcessError&) {
      return;
    }
    auto* r = static_cast<RingData*>(ring->payload());
    char* data = static_cast<char*>(ring->payload()) + kRingDataSize;
    uint64_t cap = r->capacity;
    for (uint64_t pos = r->head.load(), end = r->tail.load(); pos < end;) {
      auto* h = reinterpret_cast<RecordHeader*>(data + (pos & (cap - 1)));
      if (h->kind == kRecordWrap) {
        pos += cap - (pos & (cap - 1));
        continue;
      }
      if (h->kind == kRecordBlob) {
        auto* b = reinterpret_cast<BlobRef*>(h + 1);
        unlink_segment(read_name(b->name));
      }
      pos += sizeof(RecordHeader) + align8(h->size);
    }
    bool more = r->id != last;
    std::string next = read_name(r->next_name);
    ring->unlink();
    if (!more) break;
    name = next;
  }
}

[[maybe_unused]] const bool g_finalizer_registered =
    (register_segment_finalizer(SegmentKind::queue, finalize_queue), true);

}  // namespace

std::shared_ptr<QueueCore> QueueCore::create(uint64_t maxsize, bool joinable) {
  auto seg = Segment::create(SegmentKind::queue, sizeof(QueueData), true);
  auto* q = new (seg->payload()) QueueData{};
  q->layout_version = kQueueLayoutVersion;
  q->maxsize = maxsize;
  q->joinable = joinable ? 1 : 0;
  auto ring = create_ring(kInitialRingCapacity, 1);
  copy_name(q->tail_ring_name[1], ring->name());
  copy_name(q->head_ring_name[1], ring->name());
  q->tail_ring_gen.store(1, std::memory_order_release);
  q->head_ring_gen.store(1, std::memory_order_release);
  return std::shared_ptr<QueueCore>(new QueueCore(std::move(seg)));
}

std::shared_ptr<QueueCore> QueueCore::attach(const std::string& name) {
  return open(name, true);
}

std::shared_ptr<QueueCore> QueueCore::attach_existing(const std::string& name) {
  return open(name, false);
}

std::shared_ptr<QueueCore> QueueCore::open(const std::string& name, bool consume_flight_ref) {
  auto seg = Segment::attach(name, SegmentKind::queue, true, consume_flight_ref);
  auto* q = static_cast<QueueData*>(seg->payload());
  if (seg->payload_size() < sizeof(QueueData) || q->layout_version != kQueueLayoutVersion)
    throw ProcessError("queue " + name + " was made by an incompatible multiproc version");
  return std::shared_ptr<QueueCore>(new QueueCore(std::move(seg)));
}

QueueCore::QueueCore(std::shared_ptr<Segment> seg)
    : seg_(std::move(seg)), q_(static_cast<QueueData*>(seg_->payload())) {}

QueueCore::~QueueCore() = default;

// ---- locks, with the repair a takeover needs ------------------------------------------------

void QueueCore::lock_put() {
  if (robust_lock_nonrecursive(q_->put_lock) == LockStatus::acquired_owner_died) {
    refresh_put_ring();
    // The dead producer may have published its records but not yet their count.
    if (q_->put_intent_ring.load() == put_ring_.id &&
        put_ring_.r->tail.load() == q_->put_intent_tail.load() &&
        q_->put_count.load() < q_->put_intent_count.load())
      q_->put_count.store(q_->put_intent_count.load(), std::memory_order_release);
  }
  refresh_put_ring();
  put_pos_ = put_ring_.r->tail.load(std::memory_order_relaxed);
  put_unpublished_ = 0;
}

void QueueCore::lock_get() {
  if (robust_lock_nonrecursive(q_->get_lock) == LockStatus::acquired_owner_died) {
    refresh_get_ring();
    if (q_->get_intent_ring.load() == get_ring_.id &&
        get_ring_.r->head.load() == q_->get_intent_head.load() &&
        q_->get_count.load() < q_->get_intent_count.load())
      q_->get_count.store(q_->get_intent_count.load(), std::memory_order_release);
  }
  refresh_get_ring();
}

void QueueCore::refresh_put_ring() {
  uint64_t gen = q_->tail_ring_gen.load(std::memory_order_acquire);
  if (gen == put_ring_.id && put_ring_.r) return;
  RingView v;
  v.seg = Segment::attach(read_name(q_->tail_ring_name[gen & 1]), SegmentKind::ring, false, false);
  v.r = static_cast<RingData*>(v.seg->payload());
  v.data = static_cast<char*>(v.seg->payload()) + kRingDataSize;
  v.id = gen;
  put_ring_ = std::move(v);
}

void QueueCore::refresh_get_ring() {
  uint64_t gen = q_->head_ring_gen.load(std::memory_order_acquire);
  if (gen == get_ring_.id && get_ring_.r) return;
  RingView v;
  v.seg = Segment::attach(read_name(q_->head_ring_name[gen & 1]), SegmentKind::ring, false, false);
  v.r = static_cast<RingData*>(v.seg->payload());
  v.data = static_cast<char*>(v.seg->payload()) + kRingDataSize;
  v.id = gen;
  get_ring_ = std::move(v);
}

// ---- producer side ----------------------------------------------------------------------------

void QueueCore::publish_put() {
  if (put_unpublished_ == 0) return;
  uint64_t count = q_->put_count.load(std::memory_order_relaxed) + put_unpublished_;
  q_->put_intent_ring.store(put_ring_.id, std::memory_order_relaxed);
  q_->put_intent_tail.store(put_pos_, std::memory_order_relaxed);
  q_->put_intent_count.store(count, std::memory_order_relaxed);
  put_ring_.r->tail.store(put_pos_, std::memory_order_release);  // the commit
  q_->put_count.store(count, std::memory_order_release);
  put_unpublished_ = 0;
}

bool QueueCore::grow(uint64_t min_record) {
  uint64_t cap = put_ring_.r->capacity;
  uint64_t want = std::max(cap * 2, next_pow2(min_record * 4));
  if (want > kMaxRingCapacity) {
    if (cap >= kMaxRingCapacity || min_record * 4 > kMaxRingCapacity) return false;
    want = kMaxRingCapacity;
  }
  publish_put();  // records already written go out in the old ring
  uint64_t id = put_ring_.id + 1;
  auto seg = create_ring(want, id);
  copy_name(put_ring_.r->next_name, seg->name());
  copy_name(q_->tail_ring_name[id & 1], seg->name());
  q_->tail_ring_gen.store(id, std::memory_order_release);  // the commit
  RingView v;
  v.seg = std::move(seg);
  v.r = static_cast<RingData*>(v.seg->payload());
  v.data = static_cast<char*>(v.seg->payload()) + kRingDataSize;
  v.id = id;
  put_ring_ = std::move(v);
  put_pos_ = 0;
  return true;
}

char* QueueCore::reserve(size_t payload, uint32_t kind) {
  const uint64_t rec = sizeof(RecordHeader) + align8(payload);
  for (;;) {
    RingData* r = put_ring_.r;
    const uint64_t cap = r->capacity;
    if (rec > cap / 4) {  // keep big items from hogging (or not fitting) the ring
      if (!grow(rec)) return nullptr;
      continue;
    }
    uint64_t off = put_pos_ & (cap - 1);
    uint64_t pad = off + rec > cap ? cap - off : 0;
    if (put_pos_ + pad + rec - r->cached_head > cap) {
      r->cached_head = r->head.load(std::memory_order_acquire);
      if (put_pos_ + pad + rec - r->cached_head > cap) {
        if (!grow(rec)) return nullptr;
        continue;
      }
    }
    if (pad) {
      auto* w = reinterpret_cast<RecordHeader*>(put_ring_.data + off);
      w->size = 0;
      w->kind = kRecordWrap;
      put_pos_ += pad;
      off = 0;
    }
    auto* h = reinterpret_cast<RecordHeader*>(put_ring_.data + off);
    h->size = static_cast<uint32_t>(payload);
    h->kind = kind;
    put_pos_ += rec;
    ++put_unpublished_;
    return reinterpret_cast<char*>(h + 1);
  }
}

size_t QueueCore::put_locked(size_t first, size_t count, const size_t* sizes, size_t stride,
                             FillFn fill, void* ctx) {
  size_t n = first;
  for (; n < first + count; ++n) {
    size_t size = sizes[n * stride];
    if (size > kMaxInlineItem) {
      // Out of line: the caller's fill writes straight into a blob segment of its own.
      auto blob = Segment::create(SegmentKind::blob, size, false);
      fill(ctx, n, static_cast<char*>(blob->payload()));
      char* dst = reserve(sizeof(BlobRef), kRecordBlob);
      if (!dst) {
        blob->unlink();
        break;
      }
      BlobRef ref{};
      copy_name(ref.name, blob->name());
      ref.size = size;
      std::memcpy(dst, &ref, sizeof ref);
      continue;
    }
    char* dst = reserve(size, kRecordItem);
    if (!dst) break;
    fill(ctx, n, dst);
  }
  publish_put();
  return n - first;
}

size_t QueueCore::put(size_t count, const size_t* sizes, size_t stride, FillFn fill, void* ctx,
                      const Deadline& deadline) {
  // A JoinableQueue counts the tasks before they become visible, so a fast task_done() never
  // sees the count go negative; whatever is not put after all is taken back.
  if (q_->joinable) q_->unfinished.fetch_add(static_cast<int64_t>(count));
  size_t done = 0;
  try {
    done = put_all(count, sizes, stride, fill, ctx, deadline);
  } catch (...) {
    if (q_->joinable) q_->unfinished.fetch_sub(static_cast<int64_t>(count - done));
    throw;
  }
  if (q_->joinable && done < count) q_->unfinished.fetch_sub(static_cast<int64_t>(count - done));
  return done;
}

size_t QueueCore::put_all(size_t count, const size_t* sizes, size_t stride, FillFn fill, void* ctx,
                          const Deadline& deadline) {
  const uint64_t maxsize = q_->maxsize;
  auto has_room = [&] {
    return q_->put_count.load(std::memory_order_seq_cst) -
                   q_->get_count.load(std::memory_order_seq_cst) <
               maxsize ||
           closed();
  };
  size_t done = 0;
  while (done < count) {
    if (closed()) throw QueueClosed("put() on a closed queue");
    lock_put();
    size_t limit = count - done;
    if (maxsize) {
      // get_count is written by consumers on every get: read it only when the cached view
      // says the queue is full.
      uint64_t put_count = q_->put_count.load(std::memory_order_relaxed);
      if (put_count - q_->put_seen_get_count + limit > maxsize)
        q_->put_seen_get_count = q_->get_count.load(std::memory_order_acquire);
      int64_t used = static_cast<int64_t>(put_count - q_->put_seen_get_count);
      limit = used >= static_cast<int64_t>(maxsize) ? 0 : std::min<uint64_t>(limit, maxsize - used);
    }
    size_t n = 0;
    try {
      n = limit ? put_locked(done, limit, sizes, stride, fill, ctx) : 0;
    } catch (...) {
      publish_put();
      robust_unlock(q_->put_lock);
      throw;
    }
    robust_unlock(q_->put_lock);  // a full barrier: orders the publish before the waiter check
    if (n) q_->not_empty.notify(static_cast<int>(std::min<size_t>(n, 0x7fffffff)));
    done += n;
    if (done == count || n != 0) continue;
    if (limit == 0) {
      // Full (bounded): wait for consumers.
      if (!wait_for(q_->not_full, has_room, deadline)) return done;
    } else {
      // No storage left (the ring chain is at its limit): wait for consumers to make room.
      uint64_t seen = q_->get_count.load();
      if (!wait_for(q_->not_full, [&] { return q_->get_count.load() != seen || closed(); },
                    deadline))
        return done;
    }
  }
  return done;
}

// ---- consumer side ----------------------------------------------------------------------------

void QueueCore::publish_get(uint64_t head, uint64_t items) {
  uint64_t count = q_->get_count.load(std::memory_order_relaxed) + items;
  q_->get_intent_ring.store(get_ring_.id, std::memory_order_relaxed);
  q_->get_intent_head.store(head, std::memory_order_relaxed);
  q_->get_intent_count.store(count, std::memory_order_relaxed);
  get_ring_.r->head.store(head, std::memory_order_release);  // the commit
  q_->get_count.store(count, std::memory_order_release);
}

void QueueCore::switch_get_ring() {
  uint64_t id = get_ring_.id + 1;
  std::string next = read_name(get_ring_.r->next_name);
  copy_name(q_->head_ring_name[id & 1], next);
  q_->head_ring_gen.store(id, std::memory_order_release);  // the commit
  auto old = std::move(get_ring_.seg);
  get_ring_ = RingView{};
  refresh_get_ring();
  old->unlink();
}

size_t QueueCore::get_locked(size_t max_items, DeliverFn deliver, void* ctx) {
  size_t delivered = 0;
  uint64_t consumed = 0;
  RingData* r = get_ring_.r;
  uint64_t pos = r->head.load(std::memory_order_relaxed);
  while (delivered < max_items) {
    if (pos == r->cached_tail) r->cached_tail = r->tail.load(std::memory_order_acquire);
    if (pos == r->cached_tail) {
      // Drained. If producers have moved to a newer ring, this one is finished: follow it.
      if (q_->tail_ring_gen.load(std::memory_order_acquire) == get_ring_.id) break;
      r->cached_tail = r->tail.load(std::memory_order_acquire);
      if (pos != r->cached_tail) continue;
      publish_get(pos, consumed);
      consumed = 0;
      switch_get_ring();
      r = get_ring_.r;
      pos = r->head.load(std::memory_order_relaxed);
      continue;
    }
    const uint64_t cap = r->capacity;
    auto* h = reinterpret_cast<const RecordHeader*>(get_ring_.data + (pos & (cap - 1)));
    if (h->kind == kRecordWrap) {
      pos += cap - (pos & (cap - 1));
      continue;
    }
    const uint64_t rec = sizeof(RecordHeader) + align8(h->size);
    if (h->kind == kRecordBlob) {
      BlobRef ref;
      std::memcpy(&ref, h + 1, sizeof ref);
      std::shared_ptr<Segment> blob;
      try {
        blob = Segment::attach(read_name(ref.name), SegmentKind::blob, false, false);
      } catch (const ProcessError&) {
        // A consumer died after removing this blob but before committing: its item is lost.
      }
      if (blob) {
        deliver(ctx, static_cast<const char*>(blob->payload()), ref.size);
        blob->unlink();
        ++delivered;
      }
    } else {
      deliver(ctx, reinterpret_cast<const char*>(h + 1), h->size);
      ++delivered;
    }
    pos += rec;
    ++consumed;
  }
  if (consumed || pos != r->head.load(std::memory_order_relaxed)) publish_get(pos, consumed);
  return delivered;
}

size_t QueueCore::get(size_t max_items, DeliverFn deliver, void* ctx, const Deadline& deadline,
                      bool spin, const std::atomic<uint32_t>* interrupt) {
  if (max_items == 0) return 0;
  auto has_items = [&] {
    return static_cast<int64_t>(q_->put_count.load(std::memory_order_seq_cst) -
                                q_->get_count.load(std::memory_order_seq_cst)) > 0 ||
           closed();
  };
  auto interrupted = [&] { return interrupt && interrupt->load(std::memory_order_relaxed) != 0; };
  auto available = [&] { return has_items() || interrupted(); };
  for (;;) {
    if (interrupted() && !has_items()) return 0;
    // Try the ring first: its cached tail usually answers without touching a line the producer
    // writes; the shared counters are read only to decide whether to wait.
    {
      lock_get();
      size_t n;
      try {
        n = get_locked(max_items, deliver, ctx);
      } catch (...) {
        robust_unlock(q_->get_lock);
        throw;
      }
      robust_unlock(q_->get_lock);
      if (n) {
        q_->not_full.notify(static_cast<int>(std::min<size_t>(n, 0x7fffffff)));
        return n;
      }
      if (closed() && qsize() == 0) throw QueueClosed("get() on a closed queue with no items left");
    }
    if (deadline.expired() && !available()) return 0;
    if (!wait_for(q_->not_empty, available, deadline, spin)) return 0;
  }
}

void QueueCore::destroy() {
  finalize_queue(*seg_);
  seg_->unlink();
}

uint64_t QueueCore::qsize() const {
  int64_t n = static_cast<int64_t>(q_->put_count.load(std::memory_order_acquire) -
                                   q_->get_count.load(std::memory_order_acquire));
  return n > 0 ? static_cast<uint64_t>(n) : 0;
}

bool QueueCore::full() const {
  return q_->maxsize != 0 && qsize() >= q_->maxsize;
}

void QueueCore::close() {
  q_->closed.store(1, std::memory_order_seq_cst);
  q_->not_empty.notify_all();
  q_->not_full.notify_all();
}

void QueueCore::task_done() {
  int64_t left = q_->unfinished.fetch_sub(1, std::memory_order_seq_cst) - 1;
  if (left < 0) {
    q_->unfinished.fetch_add(1, std::memory_order_relaxed);
    throw ProcessError("task_done() called more times than there were items put");
  }
  if (left == 0) q_->all_done.notify_all();
}

bool QueueCore::join(const Deadline& deadline) {
  return wait_for(
      q_->all_done, [&] { return q_->unfinished.load(std::memory_order_seq_cst) <= 0; }, deadline);
}

}  // namespace multiproc::detail
