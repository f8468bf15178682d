#include <multiproc/detail/queue_core.hpp>

#include "put_section.hpp"

#include <algorithm>
#include <cstring>
#include <new>

#include <multiproc/detail/membarrier.hpp>
#include <multiproc/errors.hpp>

namespace multiproc::detail {
namespace {

// A producer waiting on a full bounded queue (see put_all): up to kSlowPolls looks for room
// for kRoomBatch items, kSlowPollPauses PAUSEs and a yield apart (~1-2 us), before it waits
// for any room.
constexpr uint64_t kRoomBatch = 32;
constexpr int kSlowPolls = 64;
constexpr int kSlowPollPauses = 64;

// How far ahead of its head a consumer asks for the ring's lines. Records are read right after
// another CPU wrote them, so every line is a transfer between caches; asking early overlaps them
// (get_many of 8-byte items: 125 M/s without, 190 M/s with; measured 512 B to 4 KiB ahead).
constexpr uint64_t kReadAhead = 4096;

// A get() whose deadline has passed still waits this long for get_lock (see get_impl).
constexpr auto kLockGrace = std::chrono::milliseconds(10);

// Bytes a record of `size` payload bytes takes in a ring.
constexpr uint64_t record_bytes(uint64_t size) {
  return (kHeaderSize + size + 7) & ~uint64_t{7};
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

// A ring's capacity is a power of two that fits in its segment.
bool valid_capacity(uint64_t cap, uint64_t payload_size) {
  return cap >= 64 && (cap & (cap - 1)) == 0 && payload_size >= kRingDataSize &&
         cap <= payload_size - kRingDataSize;
}

std::shared_ptr<Segment> create_ring(uint64_t capacity, uint64_t id) {
  auto seg = Segment::create(SegmentKind::ring, kRingDataSize + capacity, false);
  auto* r = new (seg->payload()) RingData{};
  r->capacity = capacity;
  r->id = id;
  return seg;
}

}  // namespace

bool split_refs(const char* p, uint64_t size, uint64_t& item_len) {
  if (size < sizeof(uint64_t)) return false;
  std::memcpy(&item_len, p + size - sizeof(uint64_t), sizeof(uint64_t));
  return item_len <= size - sizeof(uint64_t);
}

namespace {
// Gives back the in-flight references listed in a trailer (FlightRefLog entries): each is taken
// over by mapping its segment and dropped with the mapping, which runs that segment's
// finalizer when it was the last reference. A damaged entry ends the walk.
void release_refs(const char* p, uint64_t len) {
  while (len >= 8) {
    uint32_t kind, name_len;
    std::memcpy(&kind, p, 4);
    std::memcpy(&name_len, p + 4, 4);
    if (name_len > len - 8 || name_len >= kMaxSegmentName) return;
    try {
      Segment::attach(std::string(p + 8, name_len), static_cast<SegmentKind>(kind), true, true);
    } catch (const ProcessError&) {
      // Already gone (the program is ending, or the tracker removed it): nothing to give back.
    }
    p += 8 + name_len;
    len -= 8 + name_len;
  }
}
}  // namespace

void release_item_refs(const char* p, uint64_t size) {
  uint64_t item_len;
  if (split_refs(p, size, item_len)) release_refs(p + item_len, size - sizeof(uint64_t) - item_len);
}

namespace {

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
    const uint64_t cap = r->capacity, head = r->head.load() & ~uint64_t{7};
    if (!valid_capacity(cap, ring->payload_size())) {  // damaged: remove it, follow nothing
      ring->unlink();
      return;
    }
    // Every sealed record not yet consumed, whether or not its producer lived to commit it.
    for (uint64_t pos = head; pos - head < cap;) {
      const uint64_t off = pos & (cap - 1);
      const uint64_t word = header_at(data + off).load(std::memory_order_acquire);
      if (word == 0) break;
      if (header_kind(word) == kRecordWrap) {
        pos += cap - off;
        continue;
      }
      const uint64_t size = header_size(word);
      if (header_kind(word) == kRecordBlob && off + kHeaderSize + sizeof(BlobRef) <= cap) {
        BlobRef b;
        std::memcpy(&b, data + off + kHeaderSize, sizeof b);
        const std::string name = read_name(b.name);
        if (b.size & kItemHasRefs) {
          try {
            auto blob = Segment::attach(name, SegmentKind::blob, false, false);
            const uint64_t len = b.size & ~kItemHasRefs;
            if (len <= blob->payload_size())
              release_item_refs(static_cast<const char*>(blob->payload()), len);
          } catch (const ProcessError&) {
          }
        }
        unlink_segment(name);
      } else if (header_kind(word) == kRecordItemRefs && size <= cap - off - kHeaderSize) {
        release_item_refs(data + off + kHeaderSize, size);
      }
      pos += record_bytes(size);
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
  maxsize = normalize_maxsize(maxsize);
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

QueueCore::~QueueCore() {
  release_bias();
}

// ---- locks, with the repair a takeover needs ------------------------------------------------

bool QueueCore::lock_get(const Deadline& deadline) {
  const LockStatus status = robust_lock_nonrecursive(q_->get_lock, deadline);
  if (status == LockStatus::timed_out) return false;
  const bool owner_died = status == LockStatus::acquired_owner_died;
  // A damaged ring throws from here: the lock must not stay held by a live thread, or every
  // other getter waits for it forever.
  try {
    if (owner_died) {
      refresh_get_ring();
      if (q_->get_intent_ring.load() == get_ring_.id &&
          get_ring_.r->head.load() == q_->get_intent_head.load() &&
          q_->get_count.load() < q_->get_intent_count.load())
        q_->get_count.store(q_->get_intent_count.load(), std::memory_order_release);
    }
    refresh_get_ring();
  } catch (...) {
    robust_unlock(q_->get_lock);
    throw;
  }
  return true;
}

void QueueCore::repair_dead_producer() {
  refresh_put_ring();
  // It may have committed its tail but not yet its count.
  RingData* r = put_ring_.r;
  if (q_->put_intent_ring.load() == put_ring_.id && r->tail.load() == q_->put_intent_tail.load() &&
      q_->put_count.load() < q_->put_intent_count.load())
    q_->put_count.store(q_->put_intent_count.load(), std::memory_order_release);
  // And it may have sealed records past its tail, which consumers can already have taken: they
  // are in the queue, so commit them. The zeroed slot after the last sealed record ends the walk.
  const uint64_t cap = put_ring_.cap, tail = r->tail.load();
  if (tail & 7) corrupt("its ring's tail " + std::to_string(tail) + " is misaligned");
  uint64_t pos = tail, items = 0;
  while (pos - tail < cap) {
    const uint64_t off = pos & (cap - 1);
    const uint64_t word = header_at(put_ring_.data + off).load(std::memory_order_acquire);
    if (word == 0) break;
    if (header_kind(word) == kRecordWrap) {
      pos += cap - off;
    } else {
      pos += record_bytes(header_size(word));
      if (header_kind(word) != kRecordSkip) ++items;
    }
  }
  if (pos == tail) return;
  put_pos_ = pos;
  put_unpublished_ = items;
  publish_put();
}

void QueueCore::corrupt(const std::string& what) const {
  throw ProcessError("queue " + name() + " is corrupt: " + what +
                     " (a process wrote over its shared memory)");
}

QueueCore::RingView QueueCore::map_ring(const char* name_field, uint64_t id) const {
  const size_t len = strnlen(name_field, kMaxSegmentName);
  if (len == 0 || len == kMaxSegmentName || name_field[0] != '/')
    corrupt("ring " + std::to_string(id) + " has no valid name");
  RingView v;
  v.seg = Segment::attach(std::string(name_field, len), SegmentKind::ring, false, false);
  v.r = static_cast<RingData*>(v.seg->payload());
  v.data = static_cast<char*>(v.seg->payload()) + kRingDataSize;
  v.id = id;
  v.cap = v.r->capacity;
  if (!valid_capacity(v.cap, v.seg->payload_size()))
    corrupt("ring " + v.seg->name() + " has capacity " + std::to_string(v.cap) + " in " +
            std::to_string(v.seg->payload_size()) + " bytes");
  return v;
}

void QueueCore::remap_put_ring(uint64_t gen) {
  put_ring_ = map_ring(q_->tail_ring_name[gen & 1], gen);
}

void QueueCore::remap_get_ring(uint64_t gen) {
  get_ring_ = map_ring(q_->head_ring_name[gen & 1], gen);
}

// ---- producer side ----------------------------------------------------------------------------

void QueueCore::seal_pending() {
  if (!pending_header_) return;
  header_at(pending_header_).store(pending_word_, std::memory_order_release);
  pending_header_ = nullptr;
}

void QueueCore::publish_put() {
  if (g_put_crash_point && pending_header_) g_put_crash_point(PutCrashPoint::before_first_seal);
  seal_pending();
  if (put_unpublished_ == 0) return;
  commit_put();
}

// Inlined into the one-item paths (a call there was a tenth of their own instructions).
[[gnu::always_inline]] inline void QueueCore::commit_put() {
  if (g_put_crash_point) g_put_crash_point(PutCrashPoint::before_commit);
  uint64_t count = q_->put_count.load(std::memory_order_relaxed) + put_unpublished_;
  q_->put_intent_ring.store(put_ring_.id, std::memory_order_relaxed);
  q_->put_intent_tail.store(put_pos_, std::memory_order_relaxed);
  q_->put_intent_count.store(count, std::memory_order_relaxed);
  put_ring_.r->tail.store(put_pos_, std::memory_order_release);  // the commit
  q_->put_count.store(count, std::memory_order_release);
  put_unpublished_ = 0;
}

bool QueueCore::grow(uint64_t min_record) {
  uint64_t cap = put_ring_.cap;
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
  v.cap = want;
  put_ring_ = std::move(v);
  put_pos_ = 0;
  return true;
}

namespace {
// Bytes of filler record to put at `at` so that a record of `payload` bytes after it has its
// payload on a 64-byte boundary; 0 for items under `align_from` bytes, or when it already would.
uint64_t aligning_gap(const char* at, uint64_t payload, uint64_t align_from) {
  if (payload < align_from) return 0;
  return (64 - ((reinterpret_cast<uintptr_t>(at) + kHeaderSize) & 63)) & 63;
}
}  // namespace

char* QueueCore::reserve(size_t payload, uint32_t kind, uint64_t align_from) {
  const uint64_t rec = record_bytes(payload);
  for (;;) {
    RingData* r = put_ring_.r;
    const uint64_t cap = put_ring_.cap;
    if (rec > cap / 4) {  // keep big items from hogging (or not fitting) the ring
      if (!grow(rec)) return nullptr;
      continue;
    }
    char* data = put_ring_.data;
    uint64_t off = put_pos_ & (cap - 1);
    uint64_t gap = aligning_gap(data + off, payload, align_from);
    const uint64_t pad = off + gap + rec > cap ? cap - off : 0;
    if (pad) gap = aligning_gap(data, payload, align_from);
    // Room for the record and for the header slot after it, which is zeroed before the seal.
    const uint64_t end = put_pos_ + pad + gap + rec + kHeaderSize;
    if (end - r->cached_head > cap) {
      r->cached_head = r->head.load(std::memory_order_acquire);
      if (end - r->cached_head > cap) {
        if (!grow(rec)) return nullptr;
        continue;
      }
    }
    if (pad) {
      // A consumer that follows the wrap must find "nothing yet" at the start of the ring.
      header_at(data).store(0, std::memory_order_relaxed);
      seal_or_defer(data + off, header_word(0, kRecordWrap));
      put_pos_ += pad;
      off = 0;
    }
    if (gap) {
      header_at(data + off + gap).store(0, std::memory_order_relaxed);
      seal_or_defer(data + off, header_word(gap - kHeaderSize, kRecordSkip));
      put_pos_ += gap;
      off += gap;
    }
    header_at(data + ((off + rec) & (cap - 1))).store(0, std::memory_order_relaxed);
    seal_or_defer(data + off, header_word(payload, kind));
    put_pos_ += rec;
    ++put_unpublished_;
    return data + off + kHeaderSize;
  }
}

void QueueCore::abandon_record(uint64_t start) {
  // Nothing from `start` on is reachable: the batch's first record (pending_header_) is not
  // sealed yet. Zeroing the abandoned record's first header (or not sealing it, if it is that
  // first one) keeps "the word after the last record is 0" true for what stays.
  char* header = put_ring_.data + (start & (put_ring_.cap - 1));
  if (pending_header_ == header)
    pending_header_ = nullptr;
  else
    header_at(header).store(0, std::memory_order_relaxed);
  put_pos_ = start;
  --put_unpublished_;
}

namespace {
// The constant-size copy is inlined for the common 8-byte item.
inline void copy_item(char* dst, const char* src, size_t size) {
  if (size == 8)
    std::memcpy(dst, src, 8);
  else
    std::memcpy(dst, src, size);
}
}  // namespace

namespace {
// Four records a round, then the rest one by one: a small item's loop overhead is most of its
// cost (int64 put_many: 7 instructions an item one by one, 4.5 four a round).
template <size_t kSize>
void fill_plain_run(char* p, const char* src, uint64_t word, uint64_t rec_bytes, uint64_t n) {
  const size_t size = kSize ? kSize : header_size(word);
  const uint64_t rec = kSize ? record_bytes(kSize) : rec_bytes;
  uint64_t j = 0;
  for (; n - j >= 4; j += 4, p += 4 * rec, src += 4 * size) {
#pragma GCC unroll 4
    for (int i = 0; i < 4; ++i) {
      header_at(p + i * rec).store(word, std::memory_order_relaxed);
      std::memcpy(p + i * rec + kHeaderSize, src + i * size, size);
    }
  }
  for (; j < n; ++j, p += rec, src += size) {
    header_at(p).store(word, std::memory_order_relaxed);
    std::memcpy(p + kHeaderSize, src, size);
  }
}
}  // namespace

size_t QueueCore::put_run(const char* src, size_t size, size_t max_items) {
  RingData* r = put_ring_.r;
  const uint64_t cap = put_ring_.cap, rec = record_bytes(size);
  if (rec > cap / 4 || size >= kAlignPayloadFrom) return 0;
  const uint64_t off = put_pos_ & (cap - 1);
  const uint64_t fit = std::min<uint64_t>(max_items, (cap - off) / rec);
  // Records that fit with the header slot after the last one: put_pos + k * rec + 8 - head <= cap.
  auto room = [&] {
    const uint64_t used = put_pos_ - r->cached_head + kHeaderSize;
    return used >= cap ? 0 : (cap - used) / rec;
  };
  uint64_t k = std::min(fit, room());
  if (k < fit) {
    r->cached_head = r->head.load(std::memory_order_acquire);
    k = std::min(fit, room());
  }
  char* p = put_ring_.data + off;
  if (k) {
    // The first record may be the batch's first (sealed last); the others are sealed at once,
    // in a loop of their own that keeps the sizes in registers.
    const uint64_t word = header_word(size, kRecordItem);
    seal_or_defer(p, word);
    copy_item(p + kHeaderSize, src, size);
    if (size == 8)
      fill_plain_run<8>(p + rec, src + 8, word, rec, k - 1);
    else
      fill_plain_run<0>(p + rec, src + size, word, rec, k - 1);
  }
  if (k)
    header_at(put_ring_.data + ((off + k * rec) & (cap - 1))).store(0, std::memory_order_relaxed);
  put_pos_ += k * rec;
  put_unpublished_ += k;
  return k;
}

[[gnu::always_inline]] inline bool QueueCore::put_one_plain(const char* src, size_t size,
                                                            FillFn fill) {
  const uint64_t rec = record_bytes(size), cap = put_ring_.cap;
  const uint64_t off = put_pos_ & (cap - 1);
  char* p = put_ring_.data + off;
  // As reserve(): a big item gets a filler record before it that puts its payload on a cache
  // line (see kAlignPayloadFrom).
  const uint64_t gap = aligning_gap(p, size, fill ? kAlignWrittenFrom : kAlignPayloadFrom);
  if (size > kMaxInlineItem || rec > cap / 4 || gap + rec > cap - off) return false;
  // Room for the record(s) and the header slot after them.
  RingData* r = put_ring_.r;
  const uint64_t end = put_pos_ + gap + rec + kHeaderSize;
  if (end - r->cached_head > cap) {
    r->cached_head = r->head.load(std::memory_order_acquire);
    if (end - r->cached_head > cap) return false;
  }
  // The stores of reserve() and publish_put(), in their order: the slot after the item zeroed,
  // the item written, the first record's header stored last (the seal).
  header_at(put_ring_.data + ((off + gap + rec) & (cap - 1))).store(0, std::memory_order_relaxed);
  const uint64_t word = header_word(size, kRecordItem);
  if (gap) header_at(p + gap).store(word, std::memory_order_relaxed);
  if (!fill) {
    copy_item(p + gap + kHeaderSize, src, size);
  } else {
    try {
      fill(const_cast<char*>(src), 0, p + gap + kHeaderSize);
    } catch (...) {  // a put_with() writer threw: nothing is sealed; leave the slot as it was
      if (gap) header_at(p + gap).store(0, std::memory_order_relaxed);
      throw;
    }
  }
  if (g_put_crash_point) g_put_crash_point(PutCrashPoint::before_first_seal);
  header_at(p).store(gap ? header_word(gap - kHeaderSize, kRecordSkip) : word,
                     std::memory_order_release);
  put_pos_ += gap + rec;
  put_unpublished_ = 1;
  commit_put();
  return true;
}

size_t QueueCore::put_locked(size_t first, size_t count, const size_t* sizes, size_t stride,
                             FillFn fill, void* ctx) {
  const char* array = static_cast<const char*>(ctx);
  auto write_item = [&](size_t i, char* dst, size_t size) {
    if (fill)
      fill(ctx, i, dst);
    else
      copy_item(dst, array + i * size, size);
  };
  size_t n = first;
  while (n < first + count) {
    size_t size = sizes[n * stride];
    if (!fill && stride == 0 && size <= kMaxInlineItem) {
      // Same-size items from an array (put_many of plain items): copied in runs.
      const size_t k = put_run(array + n * size, size, first + count - n);
      if (k) {
        n += k;
        continue;
      }
    }
    uint32_t kind = kRecordItem;
    if (size & kItemHasRefs) {
      size &= ~kItemHasRefs;
      kind = kRecordItemRefs;
    }
    if (size > kMaxInlineItem) {
      // Out of line: the item is written straight into a blob segment of its own.
      auto blob = Segment::create(SegmentKind::blob, size, false);
      try {
        write_item(n, static_cast<char*>(blob->payload()), size);
      } catch (...) {  // a put_with() writer threw: the item is not put
        blob->unlink();
        publish_put();
        throw;
      }
      char* dst;
      try {
        dst = reserve(sizeof(BlobRef), kRecordBlob, kAlignPayloadFrom);
      } catch (...) {  // no room for a bigger ring (a full /dev/shm): the blob is nobody's
        blob->unlink();
        throw;
      }
      if (!dst) {
        blob->unlink();
        break;
      }
      BlobRef ref{};
      copy_name(ref.name, blob->name());
      ref.size = size | (kind == kRecordItemRefs ? kItemHasRefs : 0);
      std::memcpy(dst, &ref, sizeof ref);
      ++n;
      continue;
    }
    const uint64_t start_ring = put_ring_.id, start = put_pos_;
    char* dst = reserve(size, kind, fill ? kAlignWrittenFrom : kAlignPayloadFrom);
    if (!dst) break;
    try {
      write_item(n, dst, size);
    } catch (...) {  // a put_with() writer threw: the item is not put, those before it are
      abandon_record(put_ring_.id == start_ring ? start : 0);  // grow() starts a ring at 0
      publish_put();
      throw;
    }
    ++n;
  }
  publish_put();
  return n - first;
}

size_t QueueCore::put(size_t count, const size_t* sizes, size_t stride, FillFn fill, void* ctx,
                      const Deadline& deadline) {
  if (closed_pid_.load(std::memory_order_relaxed)) check_open("put");
  // One item (put(x), put_with) with room for it: straight to put_one_plain, without put_all's
  // loop. What it cannot place (no room: a wait, a bigger ring; an item out of line or with
  // references) takes the general path.
  if (count == 1 && !is_shutdown()) {
    const uint64_t maxsize = q_->maxsize;
    const bool biased = enter_put();
    bool done = false;
    try {
      // A bounded queue: room as put_all sees it (get_count read only when the view is full).
      const uint64_t put_count = q_->put_count.load(std::memory_order_relaxed);
      if (maxsize && put_count - q_->put_seen_get_count >= maxsize)
        q_->put_seen_get_count = q_->get_count.load(std::memory_order_acquire);
      if (!maxsize || put_count - q_->put_seen_get_count < maxsize)
        done = put_one_plain(static_cast<const char*>(ctx), sizes[0], fill);
    } catch (...) {
      leave_put(biased);
      throw;
    }
    leave_put(biased);
    if (done) {
      q_->not_empty.notify(1);
      return 1;
    }
  }
  return put_all(count, sizes, stride, fill, ctx, deadline);
}

size_t QueueCore::put_all(size_t count, const size_t* sizes, size_t stride, FillFn fill, void* ctx,
                          const Deadline& deadline) {
  const uint64_t maxsize = q_->maxsize;
  auto has_room = [&] {
    return q_->put_count.load(std::memory_order_seq_cst) -
                   q_->get_count.load(std::memory_order_seq_cst) <
               maxsize ||
           is_shutdown();
  };
  size_t done = 0;
  while (done < count) {
    if (is_shutdown()) throw ShutDown("put() on queue " + name() + ", which was shut down");
    const bool biased = enter_put();
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
      if (limit == 1 && !fill && stride == 0 &&
          put_one_plain(static_cast<const char*>(ctx) + done * sizes[0], sizes[0]))
        n = 1;
      else
        n = limit ? put_locked(done, limit, sizes, stride, fill, ctx) : 0;
    } catch (...) {
      publish_put();
      leave_put(biased);
      throw;
    }
    // Unlocking is a full barrier that orders the publish before the sleepers check; under a
    // bias there is none, and consumers about to sleep run membarrier_global() instead.
    leave_put(biased);
    if (n) q_->not_empty.notify(static_cast<int>(std::min<size_t>(n, 0x7fffffff)));
    done += n;
    if (done == count || n != 0) continue;
    if (limit == 0) {
      // Full (bounded). Consumers free room an item at a time; a producer that polled for
      // each would pull the line of their count away from them on every get (a cache-line
      // transfer per item, which halves a 1 KiB queue's rate). So it first waits, polling
      // slowly and yielding, for room for a batch, then for any room at all.
      const uint64_t batch =
          std::min<uint64_t>({count - done, std::max<uint64_t>(1, maxsize / 4), kRoomBatch});
      auto has_batch_room = [&] {
        return q_->put_count.load(std::memory_order_relaxed) + batch <=
                   q_->get_count.load(std::memory_order_acquire) + maxsize ||
               is_shutdown();
      };
      for (int i = 0; i < kSlowPolls && !deadline.expired() && !has_batch_room(); ++i) {
        for (int k = 0; k < kSlowPollPauses; ++k) cpu_relax();
        yield_cpu();
      }
      // A deadline that passed while there was room still puts.
      if (!wait_for(q_->not_full, has_room, deadline) && !has_room()) return done;
    } else {
      // No storage left (the ring chain is at its limit): wait for consumers to make room.
      uint64_t seen = q_->get_count.load();
      if (!wait_for(
              q_->not_full, [&] { return q_->get_count.load() != seen || is_shutdown(); },
              deadline))
        return done;
    }
  }
  return done;
}

// ---- consumer side ----------------------------------------------------------------------------

// What it needs is read into locals first: the copy is a store through a char pointer, after
// which members would otherwise all be loaded again.
[[gnu::always_inline]] inline bool QueueCore::get_one_plain(PlainSink& sink) {
  RingData* const r = get_ring_.r;
  char* const data = get_ring_.data;
  const uint64_t cap = get_ring_.cap, size = sink.item_size;
  uint64_t pos = r->head.load(std::memory_order_relaxed);
  const uint64_t rec = record_bytes(size);
  uint64_t off = pos & (cap - 1);
  if ((pos & 7) || rec > cap - off) return false;
  const char* slot = data + off;
  uint64_t word = header_at(const_cast<char*>(slot)).load(std::memory_order_acquire);
  if (word != 0 && header_kind(word) == kRecordSkip) {
    // The filler that puts a big item on a cache line: step over
    // it.
    const uint64_t skip = record_bytes(header_size(word));
    if (skip >= cap - off) return false;
    pos += skip;
    off += skip;
    if (rec > cap - off) return false;
    slot += skip;
    word = header_at(const_cast<char*>(slot)).load(std::memory_order_acquire);
  }
  if (word != header_word(size, kRecordItem)) return false;
  __builtin_prefetch(data + ((off + kReadAhead) & (cap - 1)));
  copy_item(sink.out + sink.count++ * size, slot + kHeaderSize, size);
  publish_get(pos + rec, 1);
  return true;
}

bool QueueCore::hold_one(HeldItem& item) {
  RingData* r = get_ring_.r;
  uint64_t pos = r->head.load(std::memory_order_relaxed);
  const uint64_t cap = get_ring_.cap;
  uint64_t off = pos & (cap - 1);
  if ((pos & 7) || kHeaderSize > cap - off) return false;
  const char* slot = get_ring_.data + off;
  uint64_t word = header_at(const_cast<char*>(slot)).load(std::memory_order_acquire);
  if (word != 0 && header_kind(word) == kRecordSkip) {  // as in get_one_plain
    const uint64_t skip = record_bytes(header_size(word));
    if (skip >= cap - off) return false;
    pos += skip;
    off += skip;
    slot += skip;
    word = header_at(const_cast<char*>(slot)).load(std::memory_order_acquire);
  }
  if (word == 0 || header_kind(word) != kRecordItem) return false;
  const uint64_t rec = record_bytes(header_size(word));
  if (rec > cap - off) return false;
  // Nothing is committed yet: release_held() commits the head past the item (and any filler).
  item.data = slot + kHeaderSize;
  item.size = header_size(word);
  item.end = pos + rec;
  return true;
}

// Inlined into the one-item paths (a call there was a tenth of their own instructions).
[[gnu::always_inline]] inline void QueueCore::publish_get(uint64_t head, uint64_t items) {
  uint64_t count = q_->get_count.load(std::memory_order_relaxed) + items;
  q_->get_intent_ring.store(get_ring_.id, std::memory_order_relaxed);
  q_->get_intent_head.store(head, std::memory_order_relaxed);
  q_->get_intent_count.store(count, std::memory_order_relaxed);
  get_ring_.r->head.store(head, std::memory_order_release);  // the commit
  q_->get_count.store(count, std::memory_order_release);
}

void QueueCore::switch_get_ring() {
  uint64_t id = get_ring_.id + 1;
  // Map the next ring before committing to it: a damaged name must leave the chain as it was.
  char next[kMaxSegmentName];
  std::memcpy(next, get_ring_.r->next_name, kMaxSegmentName);
  RingView v = map_ring(next, id);
  std::memcpy(q_->head_ring_name[id & 1], next, kMaxSegmentName);
  q_->head_ring_gen.store(id, std::memory_order_release);  // the commit
  auto old = std::move(get_ring_.seg);
  get_ring_ = std::move(v);
  old->unlink();
}

namespace {
// What an immediate shutdown delivers to: nothing (get_locked gives back the items' references).
void discard_item(void*, const char*, size_t) {}

// Copies a run of plain records of `rec` bytes whose header is `word`, from `slot` (whose header
// was seen), up to `limit`, into `out`; returns how many. Its own loop, with the sizes in
// registers (kSize 8: the common 8-byte item, copied with one move), asking for the ring's lines
// kReadAhead ahead once per line rather than once per record.
template <size_t kSize>
uint64_t copy_plain_run(char* out, const char* slot, uint64_t word, uint64_t rec_bytes,
                        uint64_t limit) {
  const size_t size = kSize ? kSize : header_size(word);
  const uint64_t rec = kSize ? record_bytes(kSize) : rec_bytes;
  const char* p = slot;
  __builtin_prefetch(p + kReadAhead);
  std::memcpy(out, p + kHeaderSize, size);
  out += size;
  p += rec;
  uint64_t k = 1;
  // Then four records a round: their four headers looked at with one branch, the lines they
  // span asked for once; the rest (or a round that finds a record not there) one by one.
  while (limit - k >= 4) {
    uint64_t differ = 0;
#pragma GCC unroll 4
    for (int i = 0; i < 4; ++i)
      differ |= header_at(const_cast<char*>(p + i * rec)).load(std::memory_order_acquire) ^ word;
    if (differ) break;
    for (uint64_t o = 0; o < 4 * rec; o += 64) __builtin_prefetch(p + kReadAhead + o);
#pragma GCC unroll 4
    for (int i = 0; i < 4; ++i) std::memcpy(out + i * size, p + i * rec + kHeaderSize, size);
    out += 4 * size;
    p += 4 * rec;
    k += 4;
  }
  for (; k < limit; ++k) {
    if ((reinterpret_cast<uintptr_t>(p) & 63) < rec) __builtin_prefetch(p + kReadAhead);
    if (header_at(const_cast<char*>(p)).load(std::memory_order_acquire) != word) break;
    std::memcpy(out, p + kHeaderSize, size);
    out += size;
    p += rec;
  }
  return k;
}

void deliver_to_sink(void* ctx, const char* src, size_t size) {
  auto* sink = static_cast<PlainSink*>(ctx);
  if (size != sink->item_size) throw ProcessError("queue item has the wrong size for its type");
  copy_item(sink->out + sink->count++ * size, src, size);
}
}  // namespace

size_t QueueCore::get_locked(size_t max_items, DeliverFn deliver, void* ctx, Watch* watch,
                             HeldItem* hold) {
  size_t delivered = 0;
  uint64_t consumed = 0;
  RingData* r = get_ring_.r;
  // Plain items into an array: the common record is copied inline, anything else goes through
  // deliver_to_sink.
  PlainSink* sink = deliver ? nullptr : static_cast<PlainSink*>(ctx);
  const uint64_t plain_word = sink ? header_word(sink->item_size, kRecordItem) : 0;
  const uint64_t plain_rec = sink ? record_bytes(sink->item_size) : 0;
  if (sink) deliver = &deliver_to_sink;
  uint64_t pos = r->head.load(std::memory_order_relaxed);
  uint64_t cap = get_ring_.cap;
  // Records are 8-byte multiples: an aligned head stays aligned, and every record is checked to
  // end inside the ring before it is read.
  if (pos & 7) corrupt("its ring's head " + std::to_string(pos) + " is misaligned");
  // Producers cannot reuse bytes before this call publishes them as consumed, so one walk covers
  // at most one ring's worth: wrap or filler records that go round further (a wrap at offset 0)
  // would loop for ever. Checked on those records only, off the items' path.
  uint64_t walk_from = pos;
  auto check_walk = [&] {
    if (pos - walk_from > cap)
      corrupt("its records go round the " + std::to_string(cap) + "-byte ring without end");
  };
  while (delivered < max_items) {
    const uint64_t off = pos & (cap - 1);
    char* slot = get_ring_.data + off;
    const uint64_t word = header_at(slot).load(std::memory_order_acquire);
    __builtin_prefetch(get_ring_.data + ((off + kReadAhead) & (cap - 1)));
    if (word == plain_word && sink && plain_rec <= cap - off) {
      const uint64_t limit = std::min<uint64_t>(max_items - delivered, (cap - off) / plain_rec);
      char* out = sink->out + sink->count * sink->item_size;
      const uint64_t k = sink->item_size == 8
                             ? copy_plain_run<8>(out, slot, plain_word, plain_rec, limit)
                             : copy_plain_run<0>(out, slot, plain_word, plain_rec, limit);
      sink->count += k;
      pos += k * plain_rec;
      delivered += k;
      consumed += k;
      continue;
    }
    if (word == 0) {
      // Nothing here yet. If producers have moved to a newer ring, this one is finished (they
      // seal everything in it before they move on): follow it.
      if (q_->tail_ring_gen.load(std::memory_order_acquire) == get_ring_.id) break;
      if (header_at(slot).load(std::memory_order_acquire) != 0) continue;
      publish_get(pos, consumed);
      consumed = 0;
      switch_get_ring();
      r = get_ring_.r;
      cap = get_ring_.cap;
      pos = r->head.load(std::memory_order_relaxed);
      if (pos & 7) corrupt("its ring's head " + std::to_string(pos) + " is misaligned");
      walk_from = pos;
      continue;
    }
    if (header_kind(word) == kRecordWrap) {
      pos += cap - off;
      check_walk();
      continue;
    }
    const uint64_t size = header_size(word);
    const uint64_t rec = record_bytes(size);
    if (rec > cap - off || header_kind(word) > kRecordItemRefs ||
        (header_kind(word) == kRecordBlob && size < sizeof(BlobRef)))
      corrupt("record header " + std::to_string(word) + " at offset " + std::to_string(off) +
              " of a " + std::to_string(cap) + "-byte ring");
    if (header_kind(word) == kRecordSkip) {
      pos += rec;
      check_walk();
      continue;
    }
    if (header_kind(word) == kRecordBlob) {
      BlobRef ref;
      std::memcpy(&ref, slot + kHeaderSize, sizeof ref);
      std::shared_ptr<Segment> blob;
      try {
        blob = Segment::attach(read_name(ref.name), SegmentKind::blob, false, false);
      } catch (const ProcessError&) {
        // A consumer died after removing this blob but before committing: its item is lost.
      }
      uint64_t len = ref.size & ~kItemHasRefs;
      if (blob && len > blob->payload_size())
        corrupt("an out-of-line item claims " + std::to_string(len) + " bytes in a " +
                std::to_string(blob->payload_size()) + "-byte segment");
      const char* bytes = blob ? static_cast<const char*>(blob->payload()) : nullptr;
      if (blob && (ref.size & kItemHasRefs) && !split_refs(bytes, len, len))
        corrupt("an out-of-line item's references trailer is damaged");
      if (blob && deliver == &discard_item && (ref.size & kItemHasRefs))
        release_item_refs(bytes, ref.size & ~kItemHasRefs);
      if (blob && hold) {  // left in place: consumed by release_held()
        hold->data = bytes;
        hold->size = len;
        hold->blob = std::move(blob);
        hold->end = pos + rec;
        ++delivered;
        break;
      }
      if (blob) {
        deliver(ctx, bytes, len);
        blob->unlink();
        ++delivered;
      } else {
        check_walk();  // references to blobs that are gone deliver nothing either
      }
    } else {
      uint64_t len = size;
      if (header_kind(word) == kRecordItemRefs && !split_refs(slot + kHeaderSize, size, len))
        corrupt("an item's references trailer is damaged");
      if (header_kind(word) == kRecordItemRefs && deliver == &discard_item)
        release_item_refs(slot + kHeaderSize, size);
      if (hold) {
        hold->data = slot + kHeaderSize;
        hold->size = len;
        hold->end = pos + rec;
        ++delivered;
        break;
      }
      deliver(ctx, slot + kHeaderSize, len);
      ++delivered;
    }
    pos += rec;
    ++consumed;
  }
  if (consumed || pos != r->head.load(std::memory_order_relaxed)) publish_get(pos, consumed);
  if (watch && delivered == 0) {
    watch->ring = get_ring_.seg;
    watch->slot = get_ring_.data + (pos & (cap - 1));
    watch->ring_id = get_ring_.id;
    watch->get_count = q_->get_count.load(std::memory_order_relaxed);
  }
  return delivered;
}

// Whether what a waiting consumer watches has changed: a record sealed at the head it saw, the
// producers gone on to a new ring, or other consumers having moved the head (the slot it watches
// may then be stale: it looks again under the lock).
bool QueueCore::watch_fired(const Watch& w) const {
  return header_at(w.slot).load(std::memory_order_seq_cst) != 0 ||
         q_->tail_ring_gen.load(std::memory_order_seq_cst) != w.ring_id ||
         q_->get_count.load(std::memory_order_seq_cst) != w.get_count;
}

int QueueCore::get_one_fast(PlainSink& sink) {
  QueueData* const q = q_;
  if (closed_pid_.load(std::memory_order_relaxed) != 0 ||
      held_tid_.load(std::memory_order_relaxed) != 0 ||
      q->shut_down.load(std::memory_order_acquire) != kNotShutDown || !robust_try_lock(q->get_lock))
    return 0;
  if (q->head_ring_gen.load(std::memory_order_acquire) != get_ring_.id || !get_ring_.r) {
    robust_unlock(q->get_lock);  // lock_get() maps the new ring
    return 0;
  }
  if (!get_one_plain(sink)) return -1;
  robust_unlock(q->get_lock);
  q->not_full.notify(1);
  return 1;
}

bool QueueCore::get_hold(HeldItem& out, const Deadline& deadline) {
  // An item at the head and get_lock free: get_one_fast's way, without get_impl's setup.
  QueueData* const q = q_;
  if (closed_pid_.load(std::memory_order_relaxed) == 0 &&
      held_tid_.load(std::memory_order_relaxed) == 0 &&
      q->shut_down.load(std::memory_order_acquire) == kNotShutDown) {
    const uint32_t self = current_tid();
    if (robust_try_lock(q->get_lock, self)) {
      if (q->head_ring_gen.load(std::memory_order_acquire) != get_ring_.id || !get_ring_.r) {
        robust_unlock(q->get_lock);  // lock_get() maps the new ring
      } else if (hold_one(out)) {
        out.tid = self;
        held_tid_.store(self, std::memory_order_relaxed);
        return true;
      } else {  // nothing at the head: get_impl's loop starts with the lock held
        return get_impl(1, nullptr, nullptr, deadline, true, nullptr, &out, true) != 0;
      }
    }
  }
  return get_impl(1, nullptr, nullptr, deadline, true, nullptr, &out) != 0;
}

void QueueCore::release_held(HeldItem& item) {
  // A forked child's copy of a view (or one moved to another thread) is not the lock's holder.
  if (item.tid == 0 || item.tid != current_tid()) {
    item = HeldItem{};
    return;
  }
  // The same order as get_locked's: a consumer killed between the two loses this item only.
  if (item.blob) item.blob->unlink();
  publish_get(item.end, 1);
  held_tid_.store(0, std::memory_order_relaxed);
  item = HeldItem{};
  robust_unlock(q_->get_lock);
  q_->not_full.notify(1);
}

void QueueCore::check_not_holding(const char* what) const {
  if (held_tid_.load(std::memory_order_relaxed) == current_tid())
    throw ProcessError(std::string(what) + "() on queue " + name() +
                       " by a thread that holds a view of one of its items (get_view): release "
                       "the view first (its lock would otherwise wait for itself)");
}

size_t QueueCore::get_impl(size_t max_items, DeliverFn deliver, void* ctx, const Deadline& deadline,
                           bool spin, const std::atomic<uint32_t>* interrupt, HeldItem* hold,
                           bool locked) {
  if (!locked) {
    if (closed_pid_.load(std::memory_order_relaxed)) check_open("get");
    if (held_tid_.load(std::memory_order_relaxed)) check_not_holding(hold ? "get_view" : "get");
  }
  if (max_items == 0) return 0;
  // One item when get_lock is free and the queue not shut down, as get() does (for get_view
  // here): hold_one or get_one_plain without the waiting loop's setup.
  if (!locked && max_items == 1 && !deliver &&
      q_->shut_down.load(std::memory_order_acquire) == kNotShutDown &&
      robust_try_lock(q_->get_lock)) {
    bool got;
    try {
      refresh_get_ring();
      got = hold ? hold_one(*hold) : get_one_plain(*static_cast<PlainSink*>(ctx));
    } catch (...) {
      robust_unlock(q_->get_lock);
      throw;
    }
    if (got && hold) {  // a view's item: the lock stays held until release_held()
      hold->tid = current_tid();
      held_tid_.store(hold->tid, std::memory_order_relaxed);
      return 1;
    }
    if (got) {
      robust_unlock(q_->get_lock);
      q_->not_full.notify(1);
      return 1;
    }
    locked = true;
  }
  // get_lock is held for microseconds, except by a consumer reading a view: past the caller's
  // deadline (and a short grace, so that a get_nowait() does not fail on a brief hold) a
  // waiter gives up.
  const Deadline lock_deadline =
      deadline.is_never() ? deadline
                          : Deadline{std::max(*deadline.at, Deadline::Clock::now() + kLockGrace)};
  auto interrupted = [&] { return interrupt && interrupt->load(std::memory_order_relaxed) != 0; };
  Watch watch;
  for (;;) {
    // Read before looking: every put that finished before shutdown() is then seen below.
    const uint32_t shut = q_->shut_down.load(std::memory_order_acquire);
    if (shut == kShutDownImmediate) {
      if (locked) robust_unlock(q_->get_lock);
      throw ShutDown("get() on queue " + name() + ", which was shut down (immediate)");
    }
    const bool was_closed = shut != kNotShutDown;
    if (!locked && !lock_get(lock_deadline)) return 0;
    locked = false;
    size_t n;
    try {
      if (max_items == 1 && !deliver && !hold && get_one_plain(*static_cast<PlainSink*>(ctx)))
        n = 1;
      else
        n = get_locked(max_items, deliver, ctx, &watch, hold);
    } catch (...) {
      if (hold) *hold = HeldItem{};
      robust_unlock(q_->get_lock);
      throw;
    }
    if (hold && n) {
      hold->tid = current_tid();
      held_tid_.store(hold->tid, std::memory_order_relaxed);
      return n;
    }
    robust_unlock(q_->get_lock);
    if (n) {
      q_->not_full.notify(static_cast<int>(std::min<size_t>(n, 0x7fffffff)));
      return n;
    }
    if (was_closed)
      throw ShutDown("get() on queue " + name() + ", which was shut down, with no items left");
    if (interrupted() || deadline.expired()) return 0;
    auto ready = [&] { return watch_fired(watch) || is_shutdown() || interrupted(); };
    // A biased producer notifies without a fence (queue_core_bias.cpp): order our announcing
    // ourselves against its publishing with a barrier on its CPU.
    auto fence = [this] {
      if (q_->bias_used.load(std::memory_order_seq_cst)) membarrier_global();
    };
    if (!wait_for(q_->not_empty, ready, deadline, spin, fence)) return 0;
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

void QueueCore::check_open(const char* what) const {
  if (closed())
    throw ProcessError(std::string(what) + "() on queue " + name() +
                       " through a handle that was closed (close() means this process uses the "
                       "handle no more; shutdown() is the stop for everyone)");
}

void QueueCore::shutdown(bool immediate) {
  if (immediate && held_tid_.load(std::memory_order_relaxed)) check_not_holding("shutdown");
  if (immediate)
    q_->shut_down.store(kShutDownImmediate, std::memory_order_seq_cst);
  else {
    uint32_t expected = kNotShutDown;
    q_->shut_down.compare_exchange_strong(expected, kShutDown, std::memory_order_seq_cst);
  }
  if (immediate) discard_all();
  q_->not_empty.notify_all();
  q_->not_full.notify_all();
  q_->all_done.notify_all();
}

// Immediate shutdown: takes everything queued, as a get would (so a producer's takeover repairs
// stay right), giving back what the items' handles took, and counts it done (Python decrements
// unfinished_tasks per discarded item).
void QueueCore::discard_all() {
  lock_get();
  size_t n;
  try {
    n = get_locked(SIZE_MAX, &discard_item, nullptr, nullptr);
  } catch (...) {
    robust_unlock(q_->get_lock);
    throw;
  }
  robust_unlock(q_->get_lock);
  if (n) q_->tasks_done.fetch_add(n, std::memory_order_seq_cst);
}

// A JoinableQueue's unfinished tasks are the items ever in the queue minus the task_done() calls.
// "Ever in the queue" is put_count, the producers' commit (which a takeover repairs), or
// get_count when consumers ran ahead of it (records a dead producer sealed but never
// committed). No producer killed inside put() (or blocked in it) can then leave a task counted
// that never reached the queue, and put()/get() pay nothing for it.
uint64_t QueueCore::items_ever_queued() const {
  return std::max(q_->put_count.load(std::memory_order_seq_cst),
                  q_->get_count.load(std::memory_order_seq_cst));
}

void QueueCore::task_done() {
  uint64_t done = q_->tasks_done.load(std::memory_order_relaxed);
  uint64_t queued;
  do {
    queued = items_ever_queued();
    if (done >= queued)
      throw ProcessError("task_done() called more times than there were items put");
  } while (!q_->tasks_done.compare_exchange_weak(done, done + 1, std::memory_order_seq_cst,
                                                 std::memory_order_relaxed));
  if (done + 1 >= queued) q_->all_done.notify_all();
}

bool QueueCore::join(const Deadline& deadline) {
  return wait_for(
      q_->all_done,
      [&] { return q_->tasks_done.load(std::memory_order_seq_cst) >= items_ever_queued(); },
      deadline);
}

}  // namespace multiproc::detail
