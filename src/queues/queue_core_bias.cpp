// QueueCore's put lock, biased towards a queue's one busy producer thread.
//
// Why. A put that takes and releases put_lock runs two atomic read-modify-writes, and each waits
// until the producer's earlier stores are out of its store buffer, including the store to the
// ring line the consumer is reading. When the consumer keeps up, that is a cache-line transfer
// per item, and the two processes then run in step at ~20 M items/s. Without them the stores
// drain in the background and the producer runs ahead (~45 M items/s, this machine).
//
// How. A thread that takes put_lock twice in a row with nobody waiting keeps it when it leaves:
// the owner word gets the kPutLockBiased flag and bias_slot names the thread's producer slot.
// Its later puts only mark their slot busy, check that the bias still holds, put, and unmark.
// Another producer that finds the lock biased revokes it: it takes the owner word over (so no
// new bias can start), clears bias_slot, runs membarrier_global() (a barrier on the biased
// thread's CPU: either that thread sees the revocation on its next check, or the revoker sees
// it busy), and waits until the slot is not busy. A busy slot whose thread died leaves the lock to
// the revoker as an owner's death (the usual repair follows). A revocation holds off new biases for
// a number of puts, so producers that alternate use the plain lock. Consumers that are about to
// sleep also run membarrier_global() once any bias was taken: a biased put checks for sleepers
// without a fence.
//
// A put's entry and exit (enter_put, leave_put) are in put_section.hpp, inline in put(); this
// file has the rest: taking the lock, taking, revoking and ending biases.
#include <multiproc/detail/membarrier.hpp>
#include <multiproc/detail/queue_core.hpp>

#include "put_section.hpp"

#include <unistd.h>

#include <chrono>

namespace multiproc::detail {
namespace {

// After a revocation, no new bias for this many puts: producers that take turns use the plain
// lock (a revocation costs a membarrier, a few microseconds).
constexpr uint64_t kBiasHoldOffPuts = 1 << 16;
constexpr auto kLockSlice = std::chrono::microseconds(200);  // re-looks for a bias this often

}  // namespace

void QueueCore::lock_put() {
  const uint32_t self = current_tid();
  LockStatus status;
  for (;;) {
    const uint32_t owner = q_->put_lock.owner.load(std::memory_order_acquire);
    if (owner & kPutLockBiased) {
      status = revoke_bias(owner, self);
    } else if (owner == 0 && robust_try_lock(q_->put_lock, self)) {
      status = LockStatus::acquired;
    } else {
      // In slices: the holder may take a bias meanwhile, which only a revocation ends.
      status =
          robust_lock_nonrecursive(q_->put_lock, Deadline{Deadline::Clock::now() + kLockSlice});
    }
    if (status == LockStatus::timed_out) continue;
    // A bias can outlive its word's owner: a revoker that died before ending it, a biased
    // thread found dead by the lock's own takeover. End it before touching the ring.
    if (end_bias(self)) status = LockStatus::acquired_owner_died;
    break;
  }
  // A damaged ring throws from here: the lock must not stay held by a live thread.
  try {
    if (status == LockStatus::acquired_owner_died) repair_dead_producer();
    begin_put_section();
  } catch (...) {
    robust_unlock(q_->put_lock);
    throw;
  }
}

LockStatus QueueCore::revoke_bias(uint32_t owner_word, uint32_t self) {
  // Take the owner word first: from then on nobody can take a new bias, so what end_bias()
  // waits for cannot be replaced behind its back.
  uint32_t expected = owner_word;
  if (!q_->put_lock.owner.compare_exchange_strong(expected, self, std::memory_order_acquire,
                                                  std::memory_order_relaxed))
    return LockStatus::timed_out;  // someone else took it: look again
  if (end_bias(self)) {
    q_->put_lock.owner_deaths.fetch_add(1, std::memory_order_relaxed);
    return LockStatus::acquired_owner_died;
  }
  return LockStatus::acquired;
}

bool QueueCore::end_bias(uint32_t self) {
  const uint32_t biased = q_->bias_slot.load(std::memory_order_seq_cst);
  if (biased == 0) return false;
  ProducerSlot& slot = q_->producer_slots[biased - 1];
  const uint32_t holder = slot.tid.load(std::memory_order_acquire);
  // Contention with a live producer holds new biases off; a dead one's is no contention.
  if (holder != self && thread_alive(holder))
    q_->bias_allowed_after_puts.store(q_->put_count.load() + kBiasHoldOffPuts,
                                      std::memory_order_relaxed);
  q_->bias_slot.store(0, std::memory_order_seq_cst);
  // Either the holder sees bias_slot cleared on its next check, or we see it busy below.
  if (holder != self) membarrier_global();
  for (int i = 1; slot.busy.load(std::memory_order_acquire) != 0; ++i) {
    // Busy and ours: a thread that died inside its put and whose id we were given.
    if (holder == self || (i % 64 == 0 && !thread_alive(holder))) {
      slot.busy.store(0, std::memory_order_relaxed);  // the slot can be claimed again
      uint32_t dead = holder;
      slot.tid.compare_exchange_strong(dead, 0);
      return true;
    }
    if (i % 64 == 0)
      yield_cpu();
    else
      cpu_relax();
  }
  return false;
}

bool QueueCore::maybe_take_bias(uint32_t self) {
  const uint32_t last = q_->last_putter;
  q_->last_putter = self;
  if (last != self || q_->put_lock.waiters.load(std::memory_order_relaxed) != 0) return false;
  if (bias_index_.load(std::memory_order_relaxed) < 0 && !claim_slot(self)) return false;
  if (bias_tid_.load(std::memory_order_relaxed) != self) return false;  // another thread's
  if (q_->put_count.load(std::memory_order_relaxed) <
      q_->bias_allowed_after_puts.load(std::memory_order_relaxed))
    return false;
  if (!membarrier_register()) return false;
  q_->bias_used.store(1, std::memory_order_seq_cst);
  q_->bias_slot.store(static_cast<uint32_t>(bias_index_.load() + 1), std::memory_order_relaxed);
  // Keeps the lock instead of unlocking; a full barrier, as the unlock it replaces.
  const uint32_t word =
      self | ((++q_->bias_epoch << kOwnerTidBits) & kBiasEpochMask) | kPutLockBiased;
  bias_word_.store(word, std::memory_order_relaxed);
  q_->put_lock.owner.exchange(word, std::memory_order_seq_cst);
  bias_held_.store(true, std::memory_order_relaxed);
  if (q_->put_lock.waiters.load(std::memory_order_seq_cst) != 0) {
    // Someone came after all: let them in (unless a revoker has taken the lock already).
    uint32_t expected = static_cast<uint32_t>(bias_index_.load() + 1);
    q_->bias_slot.compare_exchange_strong(expected, 0);
    drop_bias();
  }
  return true;
}

void QueueCore::drop_bias() {
  // Revoked. Unless the revoker has taken the lock over already, let go of it.
  bias_held_.store(false, std::memory_order_relaxed);
  uint32_t mine = bias_word_.load(std::memory_order_relaxed);
  if (q_->put_lock.owner.compare_exchange_strong(mine, 0, std::memory_order_seq_cst) &&
      q_->put_lock.waiters.load(std::memory_order_seq_cst) != 0)
    futex_wake(&q_->put_lock.owner, 1);
}

bool QueueCore::claim_slot(uint32_t self) {
  // Free slots first; then those of dead threads that did not die inside a put.
  for (int pass = 0; pass < 2; ++pass) {
    for (int i = 0; i < kProducerSlots; ++i) {
      ProducerSlot& slot = q_->producer_slots[i];
      uint32_t tid = slot.tid.load(std::memory_order_acquire);
      const bool free = tid == 0 || (pass == 1 && slot.busy.load() == 0 && !thread_alive(tid));
      if (!free || !slot.tid.compare_exchange_strong(tid, self)) continue;
      slot.busy.store(0, std::memory_order_relaxed);
      bias_pid_ = getpid();
      bias_tid_.store(self, std::memory_order_relaxed);
      bias_index_.store(i, std::memory_order_relaxed);
      return true;
    }
  }
  return false;
}

// The last handle in this process goes: give the bias and the slot back. Not in a forked copy
// of the process that holds them (a child that drops an inherited handle): the parent may be
// putting under that bias right now.
void QueueCore::release_bias() {
  const int index = bias_index_.load();
  if (index < 0 || getpid() != bias_pid_) return;
  const uint32_t tid = bias_tid_.load();
  if (bias_held_.load()) {
    uint32_t expected = static_cast<uint32_t>(index + 1);
    q_->bias_slot.compare_exchange_strong(expected, 0);
    drop_bias();
  }
  uint32_t mine = tid;
  q_->producer_slots[index].tid.compare_exchange_strong(mine, 0);
}

}  // namespace multiproc::detail
