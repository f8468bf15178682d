// rings.hpp: the hardware-bound competitors, raw rings in shared memory (channels for
// queue_driver.hpp). Nothing here is a product: no timeouts, no crash recovery, blocked sides spin
// and yield (Backoff) instead of sleeping. They show what two processes can do at best.
//
// SpscRingChannel: single producer, single consumer, fixed-size slots; each side keeps its own
// index plus a cached copy of the other's (refreshed only when the ring looks full or empty), as in
// rigtorp/SPSCQueue. put_many/get_many publish the index once per batch.
// MpmcRingChannel: bounded multi-producer multi-consumer ring of sequence-numbered ("turn") slots
// with ticket counters, as in rigtorp/MPMCQueue; 8-byte items only.
//
// Both are constructed in the parent before fork(): the shared part (indices, slots) lives in a
// MAP_SHARED mapping; the cached indices are plain members, which fork() makes private to each
// process.
#pragma once

#include <atomic>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <new>
#include <span>
#include <stdexcept>
#include <vector>

#include "bench_common.hpp"

namespace bench {

// 128, not 64: Intel's adjacent-line prefetcher pulls cache lines in pairs, so indices written by
// different processes are kept two lines apart.
inline constexpr std::size_t kIndexAlign = 128;

class SpscRingChannel {
 public:
  // slots: a power of two (>= the largest put_many batch); slot_bytes: every item's size.
  SpscRingChannel(std::size_t slot_bytes, std::size_t slots)
      : slot_bytes_(slot_bytes),
        cap_(slots),
        region_(sizeof(Header) + slot_bytes * slots),
        out_(slot_bytes) {
    if (slots < 2 || (slots & (slots - 1)) != 0) throw std::invalid_argument("slots: power of 2");
    hdr_ = new (region_.data()) Header{};
    data_ = static_cast<std::byte*>(region_.data()) + sizeof(Header);
  }

  void put(std::uint64_t v) {
    wait_space(1);
    std::memcpy(slot(head_), &v, 8);
    hdr_->head.store(++head_, std::memory_order_release);
  }
  std::uint64_t get() {
    wait_items();
    std::uint64_t v;
    std::memcpy(&v, slot(tail_), 8);
    hdr_->tail.store(++tail_, std::memory_order_release);
    return v;
  }
  void put_many(std::span<const std::uint64_t> items) {
    if (items.size() > cap_) throw std::invalid_argument("batch larger than the ring");
    wait_space(items.size());
    for (std::uint64_t v : items) std::memcpy(slot(head_++), &v, 8);
    hdr_->head.store(head_, std::memory_order_release);
  }
  std::size_t get_many(std::span<std::uint64_t> out) {
    wait_items();
    const auto k =
        static_cast<std::size_t>(std::min<std::uint64_t>(head_cache_ - tail_, out.size()));
    for (std::size_t i = 0; i < k; ++i) std::memcpy(&out[i], slot(tail_++), 8);
    hdr_->tail.store(tail_, std::memory_order_release);
    return k;
  }
  // Byte items: memcpy into the slot, and out of it into a private buffer before the slot is
  // released, as a real queue must.
  void put_bytes(std::span<const std::byte> item) {
    if (item.size() != slot_bytes_) throw std::invalid_argument("item size != slot size");
    wait_space(1);
    std::memcpy(slot(head_), item.data(), slot_bytes_);
    hdr_->head.store(++head_, std::memory_order_release);
  }
  template <class F>
  void get_bytes(F&& visit) {
    wait_items();
    std::memcpy(out_.data(), slot(tail_), slot_bytes_);
    hdr_->tail.store(++tail_, std::memory_order_release);
    visit(std::span<const std::byte>(out_));
  }

 private:
  struct Header {
    alignas(kIndexAlign) std::atomic<std::uint64_t> head{0};  // written by the producer only
    alignas(kIndexAlign) std::atomic<std::uint64_t> tail{0};  // written by the consumer only
  };
  static_assert(std::atomic<std::uint64_t>::is_always_lock_free, "indices live in shared memory");
  static_assert(sizeof(Header) % 64 == 0, "slots start on a cache line");

  std::byte* slot(std::uint64_t i) const { return data_ + (i & (cap_ - 1)) * slot_bytes_; }
  void wait_space(std::size_t k) {
    if (head_ + k - tail_cache_ <= cap_) return;
    Backoff b;
    while (head_ + k - (tail_cache_ = hdr_->tail.load(std::memory_order_acquire)) > cap_) b.wait();
  }
  void wait_items() {
    if (head_cache_ != tail_) return;
    Backoff b;
    while ((head_cache_ = hdr_->head.load(std::memory_order_acquire)) == tail_) b.wait();
  }

  std::size_t slot_bytes_;
  std::size_t cap_;
  SharedRegion region_;
  Header* hdr_;
  std::byte* data_;
  std::uint64_t head_ = 0, tail_cache_ = 0;  // producer's
  std::uint64_t tail_ = 0, head_cache_ = 0;  // consumer's
  std::vector<std::byte> out_;
};

class MpmcRingChannel {
 public:
  // slots: a power of two.
  explicit MpmcRingChannel(std::size_t slots)
      : cap_(slots), region_(sizeof(Header) + sizeof(Slot) * slots) {
    if (slots == 0 || (slots & (slots - 1)) != 0) throw std::invalid_argument("slots: power of 2");
    hdr_ = new (region_.data()) Header{};
    slots_ = new (static_cast<std::byte*>(region_.data()) + sizeof(Header)) Slot[slots]{};
    while ((std::size_t{1} << shift_) < slots) ++shift_;
  }

  // turn of a slot: 2 * lap when free for the lap's producer, 2 * lap + 1 when full for its
  // consumer. The release store of turn publishes value; the acquire load sees it.
  void put(std::uint64_t v) {
    const std::uint64_t t = hdr_->head.fetch_add(1, std::memory_order_relaxed);
    Slot& s = slots_[t & (cap_ - 1)];
    const std::uint64_t turn = 2 * (t >> shift_);
    Backoff b;
    while (s.turn.load(std::memory_order_acquire) != turn) b.wait();
    s.value = v;
    s.turn.store(turn + 1, std::memory_order_release);
  }
  std::uint64_t get() {
    const std::uint64_t t = hdr_->tail.fetch_add(1, std::memory_order_relaxed);
    Slot& s = slots_[t & (cap_ - 1)];
    const std::uint64_t turn = 2 * (t >> shift_) + 1;
    Backoff b;
    while (s.turn.load(std::memory_order_acquire) != turn) b.wait();
    const std::uint64_t v = s.value;
    s.turn.store(turn + 1, std::memory_order_release);
    return v;
  }

 private:
  struct Header {
    alignas(kIndexAlign) std::atomic<std::uint64_t> head{0};  // producers' ticket counter
    alignas(kIndexAlign) std::atomic<std::uint64_t> tail{0};  // consumers' ticket counter
  };
  struct alignas(64) Slot {  // one slot per cache line: neighbours never share one
    std::atomic<std::uint64_t> turn{0};
    std::uint64_t value{0};
  };
  static_assert(sizeof(Slot) == 64 && sizeof(Header) % 64 == 0);

  std::size_t cap_;
  unsigned shift_ = 0;
  SharedRegion region_;
  Header* hdr_;
  Slot* slots_;
};

}  // namespace bench
