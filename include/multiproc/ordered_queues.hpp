// Process-safe LIFO and priority queues in shared memory (Python's queue.LifoQueue and
// queue.PriorityQueue, shared between processes the way multiprocessing.Queue is).
//
//   mp::LifoQueue<Job> stack;                 // get() returns the item put last
//   mp::PriorityQueue<std::pair<int, Job>> pq; // get() returns the smallest item (std::less)
//   mp::PriorityQueue<int, std::greater<int>> maxq(100);  // largest first; bounded to 100 items
//
// Both have exactly Queue<T>'s surface (queues.hpp): put/put_nowait/get/get_nowait with
// timeouts, put_many/get_many, qsize/empty/full/maxsize, close/closed, shutdown/is_shutdown,
// name(), ==, and the handle protocol. A queue is a handle: copies share one queue, in this process
// and in any process the handle reaches (inherited by fork, passed as a Process/Pool argument under
// any start method, sent through another queue); it lives while any process holds a handle.
//
// Ordering. LifoQueue: get() returns the most recently put item still queued. PriorityQueue:
// get() returns an item that no other queued item comes before (`Compare(a, b)` true means a
// comes out first; with std::less that is the smallest); equal items come out in any order.
// put_many() puts in range order; get_many() returns items in the order get() would have.
//
// Guarantees, as for Queue. put() returns once the item is in shared memory. A process killed at
// any instant inside put() or get() leaves the queue consistent for the others (the next one to
// take the queue's lock undoes the unfinished operation); at most the dead process's own item in
// flight is lost. Items of any size are accepted up to available memory; one that cannot be
// stored is refused with ProcessError and the queue stays usable.
//
// How it works: detail/ordered_queue_core.hpp (one robust lock, a stack or binary heap of
// {offset, size} over a byte arena, an undo log for crash safety). Items are encoded with
// serialization.hpp: plain-bytes types are copied straight into shared memory, others are
// serialized outside the lock.
//
// PriorityQueue compares items by decoding them, with the queue's lock held: each process uses
// its own default-constructed Compare, and comparisons cost a decode for non-plain types. An
// item type that carries multiproc handles (queues, locks, ...) cannot be a PriorityQueue item,
// because decoding a handle for a comparison would consume the reference in flight; put such
// items in a LifoQueue or Queue, or key them by a plain id.
#pragma once

#include <algorithm>
#include <cstring>
#include <functional>
#include <memory>
#include <optional>
#include <ranges>
#include <string>
#include <string_view>
#include <type_traits>
#include <vector>

#include <multiproc/detail/handle.hpp>
#include <multiproc/detail/item_codec.hpp>
#include <multiproc/detail/ordered_queue_core.hpp>
#include <multiproc/errors.hpp>
#include <multiproc/serialization.hpp>
#include <multiproc/timeout.hpp>

namespace multiproc {

namespace detail {

// LIFO order: the core needs no comparisons.
template <class T>
struct LifoOrder {
  static constexpr QueueOrder kOrder = QueueOrder::lifo;
  struct Compare {};
  struct Scratch {
    explicit Scratch(const Compare&) {}
    const OrderOps* ops() { return nullptr; }
  };
};

// Priority order: the core decodes items into three scratch slots and asks Compare.
template <class T, class Cmp>
struct PriorityOrder {
  static constexpr QueueOrder kOrder = QueueOrder::priority;
  using Compare = Cmp;
  struct Scratch {
    explicit Scratch(const Compare& c) : cmp(c), ops_{this, &decode, &before} {}
    Scratch(const Scratch&) = delete;
    Scratch& operator=(const Scratch&) = delete;
    const OrderOps* ops() { return &ops_; }

    Compare cmp;  // a copy: Compare's call operator need not be const
    std::optional<T> slot[3];
    OrderOps ops_;

    static void decode(void* ctx, int i, const char* bytes, size_t size) {
      auto* s = static_cast<Scratch*>(ctx);
      if constexpr (is_plain_bytes_v<T>) {
        if (size != sizeof(T)) throw ProcessError("queue item has the wrong size for its type");
        T value{};
        std::memcpy(static_cast<void*>(&value), bytes, sizeof(T));
        s->slot[i].emplace(value);
      } else {
        s->slot[i].emplace(ItemCodec<T>::decode(bytes, size));
      }
    }
    static bool before(void* ctx, int a, int b) {
      auto* s = static_cast<Scratch*>(ctx);
      return static_cast<bool>(s->cmp(*s->slot[a], *s->slot[b]));
    }
  };
};

// The queue itself; LifoQueue and PriorityQueue below only choose the Order.
template <class T, class Order>
class BasicOrderedQueue {
  static_assert((require_transferable<T>(), true));

 public:
  using value_type = T;

  BasicOrderedQueue() : BasicOrderedQueue(0) {}
  // maxsize 0 or negative = unbounded; otherwise put() waits while maxsize items are queued.
  explicit BasicOrderedQueue(size_t maxsize) {
    if (!loading_handles()) core_ = OrderedQueueCore::create(Order::kOrder, maxsize);
  }

  // Waits for room (bounded queue) at most `timeout` (negative = zero); throws Full if none
  // came, ShutDown if the queue was shut down, ProcessError if the item cannot be stored.
  void put(const T& item, Timeout timeout = std::nullopt) {
    if (put_range(&item, 1, Deadline::after(timeout)) != 1) throw Full();
  }
  void put_nowait(const T& item) {
    if (put_range(&item, 1, Deadline::now()) != 1) throw Full();
  }
  // Waits for an item at most `timeout`; throws Empty if none came, ShutDown if the queue was
  // shut down and is drained.
  T get(Timeout timeout = std::nullopt) { return get_one(Deadline::after(timeout)); }
  T get_nowait() { return get_one(Deadline::now()); }

  // Puts every item of the range, in order, taking the lock once per batch of items. Throws Full
  // if the timeout passes first (the items before that point are in the queue).
  template <std::ranges::input_range R>
  void put_many(R&& items, Timeout timeout = std::nullopt) {
    const auto deadline = Deadline::after(timeout);
    if (!put_range_of<T>(std::forward<R>(items),
                         [&](const T* p, size_t n) { return put_range(p, n, deadline); }))
      throw Full();
  }
  // Waits at most `timeout` for the first item, then takes up to max_items that are there, in
  // queue order. Throws Empty if none came (ShutDown if shut down and drained).
  std::vector<T> get_many(size_t max_items, Timeout timeout = std::nullopt) {
    auto& c = core();
    std::vector<T> out;
    auto deadline = Deadline::after(timeout);
    typename Order::Scratch scratch(cmp_);
    if constexpr (Codec::plain) {
      out.reserve(std::min<size_t>(max_items, std::max<size_t>(c.qsize(), 1)));
      if (c.get(max_items, &Codec::deliver_plain_many, &out, scratch.ops(), deadline) == 0)
        throw Empty();
    } else {
      typename Codec::Encoded e;
      size_t n = c.get(max_items, &Codec::deliver_bytes, &e, scratch.ops(), deadline);
      if (n == 0) throw Empty();
      out.reserve(n);
      for (size_t i = 0; i < n; ++i)
        out.push_back(Codec::decode(e.bytes.data() + e.offsets[i], e.sizes[i]));
    }
    return out;
  }

  // Approximate, as in Python: other processes may change it at any moment.
  size_t qsize() const { return core().qsize(); }
  bool empty() const { return core().empty(); }
  bool full() const { return core().full(); }
  size_t maxsize() const { return core().maxsize(); }
  // As Queue's: close() is this handle's (this process's); shutdown() stops the queue for
  // everyone with ShutDown, immediate = true discarding what is queued.
  void close() { core().close(); }
  bool closed() const { return core().closed(); }
  void shutdown(bool immediate = false) { core().shutdown(immediate); }
  bool is_shutdown() const { return core().is_shutdown(); }

  // The shared-memory name of the queue's control segment (diagnostics).
  const std::string& name() const { return core().name(); }
  friend bool operator==(const BasicOrderedQueue& a, const BasicOrderedQueue& b) {
    return a.core_ == b.core_ || (a.core_ && b.core_ && a.name() == b.name());
  }

  // Handle protocol (serialization.hpp): what travels is the queue's name.
  template <class Archive>
  void save(Archive& ar) const {
    core().add_flight_ref();
    ar(core().name());
  }
  template <class Archive>
  void load(Archive& ar) {
    std::string name;
    ar(name);
    core_ = OrderedQueueCore::attach(name, Order::kOrder);
  }

 private:
  using Codec = ItemCodec<T>;

  OrderedQueueCore& core() const {
    if (!core_)
      throw_empty_handle(Order::kOrder == QueueOrder::lifo ? "LifoQueue" : "PriorityQueue");
    return *core_;
  }

  size_t put_range(const T* items, size_t n, const Deadline& deadline) {
    auto& c = core();
    typename Order::Scratch scratch(cmp_);
    if constexpr (Codec::plain) {
      static const size_t kSize = sizeof(T);
      const T* base = items;
      return c.put(n, &kSize, 0, &Codec::fill_plain, &base, scratch.ops(), deadline);
    } else {
      typename Codec::Encoded e;
      Codec::encode_with_refs(e, items, n);
      return Codec::release_unput(
          e, c.put(n, e.sizes.data(), 1, &Codec::fill_encoded, &e, scratch.ops(), deadline));
    }
  }

  T get_one(const Deadline& deadline) {
    if constexpr (Codec::plain) {
      return get_one_plain(deadline);
    } else {
      typename Order::Scratch scratch(cmp_);
      typename Codec::Encoded e;
      if (core().get(1, &Codec::deliver_bytes, &e, scratch.ops(), deadline) == 0) throw Empty();
      return Codec::decode(e.bytes.data(), e.sizes[0]);
    }
  }
  // Delivered straight into the caller's object: `item` is the return object (a named value at
  // the function's top level; GCC 12 copies one declared inside an `if constexpr` branch).
  T get_one_plain(const Deadline& deadline) requires Codec::plain {
    auto& c = core();
    typename Order::Scratch scratch(cmp_);
    T item{};
    if (c.get(1, &Codec::deliver_plain_one, &item, scratch.ops(), deadline) == 0) throw Empty();
    return item;
  }

  std::shared_ptr<OrderedQueueCore> core_;
  [[no_unique_address]] typename Order::Compare cmp_{};
};

}  // namespace detail

// Python's queue.LifoQueue across processes: get() returns the item put last.
template <class T>
class LifoQueue : public detail::BasicOrderedQueue<T, detail::LifoOrder<T>> {
  using Base = detail::BasicOrderedQueue<T, detail::LifoOrder<T>>;

 public:
  LifoQueue() = default;
  // maxsize 0 = unbounded; otherwise put() waits while maxsize items are queued.
  explicit LifoQueue(size_t maxsize) : Base(maxsize) {}
};

// Python's queue.PriorityQueue across processes: get() returns the item that comes first by
// Compare (the smallest, with std::less); ties come out in any order.
template <class T, class Compare = std::less<T>>
class PriorityQueue : public detail::BasicOrderedQueue<T, detail::PriorityOrder<T, Compare>> {
  using Base = detail::BasicOrderedQueue<T, detail::PriorityOrder<T, Compare>>;

 public:
  PriorityQueue() = default;
  // maxsize 0 = unbounded; otherwise put() waits while maxsize items are queued.
  explicit PriorityQueue(size_t maxsize) : Base(maxsize) {}
};

}  // namespace multiproc
