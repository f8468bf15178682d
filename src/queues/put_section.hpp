// QueueCore's put section on the biased fast path, inline in both of the queue's sources.
//
// A put of one item under this thread's bias (queue_core_bias.cpp) runs enter_put, the item's
// stores and leave_put with no lock operation: a few dozen instructions that, as calls of their
// own, cost as much again in frames and in reloading what the caller already had in registers.
// So they are defined here, and put() builds them into one function. Everything a put does that
// is not that path (taking the lock, revoking a bias, repairing after a dead producer) stays
// out of line in queue_core_bias.cpp and queue_core.cpp.
#pragma once

#include <multiproc/detail/queue_core.hpp>

#include <cstring>
#include <string>

namespace multiproc::detail {

[[gnu::always_inline]] inline void QueueCore::begin_put_section() {
  pending_header_ = nullptr;  // a fork() during another thread's put copies its half-done state
  refresh_put_ring();
  put_pos_ = put_ring_.r->tail.load(std::memory_order_relaxed);
  put_unpublished_ = 0;
  if (put_pos_ & 7) corrupt("its ring's tail " + std::to_string(put_pos_) + " is misaligned");
}

[[gnu::always_inline]] inline bool QueueCore::enter_put() {
  if (bias_held_.load(std::memory_order_relaxed) &&
      current_tid() == bias_tid_.load(std::memory_order_relaxed)) {
    const int index = bias_index_.load(std::memory_order_relaxed);
    ProducerSlot& slot = q_->producer_slots[index];
    // The slot is ours unless this thread has the id of a biased thread that ended (its slot
    // may since belong to another thread).
    if (slot.tid.load(std::memory_order_relaxed) != bias_tid_.load(std::memory_order_relaxed)) {
      bias_held_.store(false, std::memory_order_relaxed);
      lock_put();
      return false;
    }
    slot.busy.store(1, std::memory_order_relaxed);
    // Only the compiler must keep the check below after the store: a revoker's membarrier
    // orders the two for the CPU.
    std::atomic_signal_fence(std::memory_order_seq_cst);
    if (q_->bias_slot.load(std::memory_order_acquire) == static_cast<uint32_t>(index + 1)) {
      try {
        begin_put_section();  // throws on a damaged ring: a revoker must not wait for us then
      } catch (...) {
        slot.busy.store(0, std::memory_order_release);
        throw;
      }
      return true;
    }
    slot.busy.store(0, std::memory_order_release);
    drop_bias();
  }
  lock_put();
  return false;
}

[[gnu::always_inline]] inline void QueueCore::leave_put(bool biased) {
  if (biased) {
    q_->producer_slots[bias_index_.load(std::memory_order_relaxed)].busy.store(
        0, std::memory_order_release);
    return;
  }
  if (!maybe_take_bias(current_tid())) robust_unlock(q_->put_lock);
}

// The put of one plain item by the thread that holds the queue's bias, with room in the ring
// it has mapped: enter_put, put_one_plain and leave_put for that case, in one piece. As members
// written through char pointers, put_pos_ and the rest were stored and reloaded around every
// store to the ring (put was 182 instructions an int64 item); here they are locals. False, with
// nothing written, for anything else: put() then takes the general path, which looks again.
template <bool kAligned, bool kFill>
[[gnu::always_inline]] inline bool QueueCore::put_one_biased(const char* src, size_t size,
                                                             FillFn fill) {
  if (!bias_held_.load(std::memory_order_relaxed)) return false;
  const uint32_t tid = bias_tid_.load(std::memory_order_relaxed);
  // kAligned: the item is of kAlignPayloadFrom bytes or more (its own copy of this code: the
  // filler's arithmetic cost a small item a fifth of its instructions).
  if (current_tid() != tid || size > kMaxInlineItem) return false;
  QueueData* const q = q_;
  const int index = bias_index_.load(std::memory_order_relaxed);
  ProducerSlot& slot = q->producer_slots[index];
  if (slot.tid.load(std::memory_order_relaxed) != tid ||
      q->shut_down.load(std::memory_order_acquire) != kNotShutDown)
    return false;
  slot.busy.store(1, std::memory_order_relaxed);
  std::atomic_signal_fence(std::memory_order_seq_cst);  // as in enter_put
  RingData* const r = put_ring_.r;
  char* const data = put_ring_.data;
  const uint64_t id = put_ring_.id, cap = put_ring_.cap;
  bool done = false;
  if (q->bias_slot.load(std::memory_order_acquire) == static_cast<uint32_t>(index + 1) &&
      q->tail_ring_gen.load(std::memory_order_acquire) == id && r) {
    const uint64_t pos = r->tail.load(std::memory_order_relaxed), off = pos & (cap - 1);
    const uint64_t rec = (kHeaderSize + size + 7) & ~uint64_t{7};
    char* const p = data + off;
    // As reserve(): an item of kAlignPayloadFrom bytes or more gets a filler record before it
    // that puts its payload on a cache line.
    const uint64_t gap =
        kAligned ? (64 - ((reinterpret_cast<uintptr_t>(p) + kHeaderSize) & 63)) & 63 : 0;
    const uint64_t end = pos + gap + rec;  // and the header slot after it
    const uint64_t maxsize = q->maxsize;
    const uint64_t put_count = q->put_count.load(std::memory_order_relaxed);
    if (maxsize && put_count - q->put_seen_get_count >= maxsize)
      q->put_seen_get_count = q->get_count.load(std::memory_order_acquire);
    uint64_t head = r->cached_head;
    if (end + kHeaderSize - head > cap)
      r->cached_head = head = r->head.load(std::memory_order_acquire);
    if ((pos & 7) == 0 && rec <= cap / 4 && gap + rec <= cap - off &&
        end + kHeaderSize - head <= cap &&
        (!maxsize || put_count - q->put_seen_get_count < maxsize)) {
      // put_one_plain's stores, in its order: the slot after the record zeroed, the payload
      // written, the first header stored last (the seal), then the commit.
      header_at(data + ((off + gap + rec) & (cap - 1))).store(0, std::memory_order_relaxed);
      const uint64_t word = header_word(size, kRecordItem);
      if (gap) header_at(p + gap).store(word, std::memory_order_relaxed);
      if constexpr (kFill) {
        try {
          fill(const_cast<char*>(src), 0, p + gap + kHeaderSize);
        } catch (...) {  // a put_with() writer threw: nothing is sealed; leave the ring as it was
          if (gap) header_at(p + gap).store(0, std::memory_order_relaxed);
          slot.busy.store(0, std::memory_order_release);
          throw;
        }
      } else if (!kAligned && size == 8) {
        std::memcpy(p + kHeaderSize, src, 8);
      } else {
        std::memcpy(p + gap + kHeaderSize, src, size);
      }
      if (g_put_crash_point) g_put_crash_point(PutCrashPoint::before_first_seal);
      header_at(p).store(gap ? header_word(gap - kHeaderSize, kRecordSkip) : word,
                         std::memory_order_release);
      if (g_put_crash_point) g_put_crash_point(PutCrashPoint::before_commit);
      q->put_intent_ring.store(id, std::memory_order_relaxed);
      q->put_intent_tail.store(end, std::memory_order_relaxed);
      q->put_intent_count.store(put_count + 1, std::memory_order_relaxed);
      r->tail.store(end, std::memory_order_release);  // the commit
      q->put_count.store(put_count + 1, std::memory_order_release);
      done = true;
    }
  }
  slot.busy.store(0, std::memory_order_release);
  return done;
}

}  // namespace multiproc::detail
