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

}  // namespace multiproc::detail
