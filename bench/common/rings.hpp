// rings.hpp: the hardware-bound competitors, raw rings in shared memory (channels for
// queue_driver.hpp). Nothing here is a product: no timeouts, no crash recovery, blocked sides spin
// and yield (Backoff) instead of sleeping. They show what two processes can do at best.
//
// SpscRingChannel: single producer, single consumer, fixed-size slots; each side (Writer, Reader:
// process-local objects) keeps its own index plus a cached copy of the other's, refreshed only when
// the ring looks full or empty, as in rigtorp/SPSCQueue. The producer publishes its index per item
// (once per batch with put_many); the consumer releases slots every 32 integers, per byte item, per
// get_many, and always before it waits.
// MpmcRingChannel: bounded multi-producer multi-consumer ring of sequence-numbered ("turn") slots
// with ticket counters, as in rigtorp/MPMCQueue; 8-byte items only.
//
// Both are constructed in the parent before fork(): the shared part (indices, slots) lives in a
// MAP_SHARED mapping; the cached indices live in the process-local Writer/Reader.
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
      : region_(sizeof(Header) + slot_bytes * slots) {
    if (slots < 2 || (slots & (slots - 1)) != 0) throw std::invalid_argument("slots: power of 2");
    ring_.hdr = new (region_.data()) Header{};
    ring_.data = static_cast<std::byte*>(region_.data()) + sizeof(Header);
    ring_.mask = slots - 1;
    ring_.slot_bytes = slot_bytes;
  }

  class Writer;
  class Reader;
  // The process-local ends (one process each): plain objects on the caller's stack, so the
  // compiler keeps their indices in registers. queue_driver.hpp takes them when a channel has them.
  Writer producer() const { return Writer(ring_); }
  Reader consumer() const { return Reader(ring_); }

 private:
  struct Header {
    alignas(kIndexAlign) std::atomic<std::uint64_t> head{0};  // written by the producer only
    alignas(kIndexAlign) std::atomic<std::uint64_t> tail{0};  // written by the consumer only
  };
  static_assert(std::atomic<std::uint64_t>::is_always_lock_free, "indices live in shared memory");
  static_assert(sizeof(Header) % 64 == 0, "slots start on a cache line");

  struct Ring {
    Header* hdr;
    std::byte* data;
    std::uint64_t mask;
    std::uint64_t slot_bytes;
    std::byte* slot(std::uint64_t i) const { return data + (i & mask) * slot_bytes; }
    // 8-byte items go through typed pointers: a memcpy may alias anything, which would make the
    // compiler reload every index from memory on every item.
    std::uint64_t* int_slot(std::uint64_t i) const {
      return reinterpret_cast<std::uint64_t*>(slot(i));
    }
  };

  SharedRegion region_;
  Ring ring_{};

 public:
  class Writer {
   public:
    explicit Writer(const Ring& r)
        : r_(r),
          head_(r.hdr->head.load(std::memory_order_relaxed)),
          tail_cache_(r.hdr->tail.load(std::memory_order_acquire)) {}
    void put(std::uint64_t v) {
      wait_space(1);
      *r_.int_slot(head_) = v;
      r_.hdr->head.store(++head_, std::memory_order_release);
    }
    // Publishes the index once for the whole batch.
    void put_many(std::span<const std::uint64_t> items) {
      if (items.size() > r_.mask + 1) throw std::invalid_argument("batch larger than the ring");
      wait_space(items.size());
      for (std::uint64_t v : items) *r_.int_slot(head_++) = v;
      r_.hdr->head.store(head_, std::memory_order_release);
    }
    // memcpy into the slot.
    void put_bytes(std::span<const std::byte> item) {
      if (item.size() != r_.slot_bytes) throw std::invalid_argument("item size != slot size");
      wait_space(1);
      std::memcpy(r_.slot(head_), item.data(), item.size());
      r_.hdr->head.store(++head_, std::memory_order_release);
    }

   private:
    void wait_space(std::uint64_t k) {
      if (head_ + k - tail_cache_ <= r_.mask + 1) return;
      Backoff b;
      while (head_ + k - (tail_cache_ = r_.hdr->tail.load(std::memory_order_acquire)) >
             r_.mask + 1) {
        b.wait();
      }
    }
    Ring r_;
    std::uint64_t head_, tail_cache_;
  };

  class Reader {
   public:
    static constexpr std::uint64_t kReleaseEvery = 32;
    explicit Reader(const Ring& r)
        : r_(r),
          tail_(r.hdr->tail.load(std::memory_order_relaxed)),
          head_cache_(r.hdr->head.load(std::memory_order_acquire)),
          out_(r.slot_bytes) {}
    // Releases slots every kReleaseEvery items, and always before waiting: a tail store per item
    // would bounce the index's cache line whenever the producer waits for room.
    std::uint64_t get() {
      if (head_cache_ == tail_) {
        r_.hdr->tail.store(tail_, std::memory_order_release);
        wait_items();
      }
      const std::uint64_t v = *r_.int_slot(tail_);
      if (++tail_ % kReleaseEvery == 0) r_.hdr->tail.store(tail_, std::memory_order_release);
      return v;
    }
    // Everything already published, up to out.size(); releases the slots once.
    std::size_t get_many(std::span<std::uint64_t> out) {
      if (head_cache_ == tail_) {
        r_.hdr->tail.store(tail_, std::memory_order_release);
        wait_items();
      }
      const auto k =
          static_cast<std::size_t>(std::min<std::uint64_t>(head_cache_ - tail_, out.size()));
      for (std::size_t i = 0; i < k; ++i) out[i] = *r_.int_slot(tail_++);
      r_.hdr->tail.store(tail_, std::memory_order_release);
      return k;
    }
    // memcpy out of the slot into a private buffer before the slot is released, as a real queue
    // must, then visit the copy.
    template <class F>
    void get_bytes(F&& visit) {
      if (head_cache_ == tail_) {
        r_.hdr->tail.store(tail_, std::memory_order_release);
        wait_items();
      }
      std::memcpy(out_.data(), r_.slot(tail_), out_.size());
      r_.hdr->tail.store(++tail_, std::memory_order_release);
      visit(std::span<const std::byte>(out_));
    }

   private:
    void wait_items() {
      if (head_cache_ != tail_) return;
      Backoff b;
      while ((head_cache_ = r_.hdr->head.load(std::memory_order_acquire)) == tail_) b.wait();
    }
    Ring r_;
    std::uint64_t tail_, head_cache_;
    std::vector<std::byte> out_;
  };
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
