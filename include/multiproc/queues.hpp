// Process-safe queues in shared memory (CPython's queues.py, without its pipe and feeder thread).
//
//   mp::Queue<int> q;          // unbounded: put() never blocks (storage grows with the backlog)
//   mp::Queue<Job> q(100);     // bounded: put() waits while 100 items are queued
//   q.put(x);  q.get();  q.put_many(xs);  q.get_many(64);  q.get_many(std::span(buf));
//
// A queue is a handle: copies share one queue, in this process and in any process the handle
// reaches - inherited by fork, or passed as a Process/Pool argument under any start method, or
// even sent through another queue. The queue lives while any process holds a handle.
//
// put() returns once the item is in shared memory: a process may exit right after putting and
// nothing is lost, and a parent may join() a child before draining what it put (Python's classic
// deadlock cannot happen). A process killed at any instant inside put() or get() leaves the queue
// intact for the others; at most its own item in flight is lost.
//
// Items are encoded with serialization.hpp: plain-bytes types are copied straight into the ring,
// others are serialized first (outside the queue's locks) and decoded after.
//
// Zero copy, for big items of plain-bytes types and of byte strings (std::string,
// std::vector<char / unsigned char / std::byte>):
//   q.put_with(size, [&](std::span<std::byte> dst) { /* write the item's bytes in place */ });
//   { auto v = q.get_view();  use(v.bytes()); }   // read in place; the view's end consumes it
// put_with's writer writes straight into the queue's shared memory (the ring, or an item's own
// segment past 2 MiB); get_view's view reads it there. Both interoperate with put/get: an item
// put_with() wrote is got by get() (a byte string of `size` bytes, or the plain T), and get_view()
// shows what put() wrote. See put_with and get_view for what holding the queue meanwhile means.
#pragma once

#include <concepts>
#include <cstddef>
#include <cstring>
#include <functional>
#include <memory>
#include <queue>
#include <ranges>
#include <span>
#include <stdexcept>
#include <string>
#include <type_traits>
#include <utility>
#include <vector>

#include <multiproc/detail/handle.hpp>
#include <multiproc/detail/item_codec.hpp>
#include <multiproc/detail/queue_core.hpp>
#include <multiproc/errors.hpp>
#include <multiproc/serialization.hpp>
#include <multiproc/timeout.hpp>

namespace multiproc {

namespace detail {
// Types whose encoding is a u64 length and then the bytes themselves (archive.hpp's std::string
// and vector-of-plain-bytes layouts): put_with/get_view write and read those bytes in place.
template <class T>
struct is_byte_string : std::false_type {};
template <class A>
struct is_byte_string<std::basic_string<char, std::char_traits<char>, A>> : std::true_type {};
template <class E, class A>
struct is_byte_string<std::vector<E, A>>
    : std::bool_constant<std::is_same_v<E, char> || std::is_same_v<E, unsigned char> ||
                         std::is_same_v<E, signed char> || std::is_same_v<E, std::byte>> {};
inline constexpr size_t kByteStringPrefix = sizeof(uint64_t);
}  // namespace detail

// An item read in place (Queue<T>::get_view): its bytes stay in the queue's shared memory until
// the view is destroyed or release()d, which consumes the item. Move-only.
//
// While a view lives, its thread holds the queue's consumer lock: other consumers wait (a get()
// with a timeout gives up after it, and Full/Empty keep their meaning), producers go on putting.
// So hold views briefly, release them on the thread that got them, and do not get() from the same
// queue on that thread meanwhile (that throws ProcessError). A copy in a child forked meanwhile
// releases nothing. A consumer killed while it holds a view consumed nothing: the next consumer
// gets that item (at the front, again) - the queue's rule that a process killed mid-get loses at
// most its own item, here lost to nobody.
template <class T>
class ItemView {
 public:
  ItemView() = default;
  ItemView(ItemView&& o) noexcept : core_(std::move(o.core_)), held_(std::move(o.held_)) {
    o.held_ = detail::HeldItem{};
  }
  ItemView& operator=(ItemView&& o) noexcept {
    if (this != &o) {
      release();
      core_ = std::move(o.core_);
      held_ = std::move(o.held_);
      o.held_ = detail::HeldItem{};
    }
    return *this;
  }
  ~ItemView() { release(); }

  // The item's bytes: a plain T's sizeof(T), or a byte string's contents.
  std::span<const std::byte> bytes() const {
    const size_t skip = detail::is_byte_string<T>::value ? detail::kByteStringPrefix : 0;
    return {reinterpret_cast<const std::byte*>(held_.data) + skip, held_.size - skip};
  }
  const std::byte* data() const { return bytes().data(); }
  size_t size() const { return bytes().size(); }
  // A plain T in place (the queue aligns items to 8 bytes; big ones to 64, see put_with).
  const T& value() const requires(detail::is_plain_bytes_v<T> && alignof(T) <= 8) {
    return *std::launder(reinterpret_cast<const T*>(held_.data));
  }
  const T& operator*() const requires(detail::is_plain_bytes_v<T> && alignof(T) <= 8) {
    return value();
  }
  const T* operator->() const requires(detail::is_plain_bytes_v<T> && alignof(T) <= 8) {
    return &value();
  }
  // Consumes the item now (the destructor does it otherwise). A view holds nothing afterwards.
  void release() {
    if (core_ && held_.tid) core_->release_held(held_);
    held_ = detail::HeldItem{};
    core_.reset();
  }
  explicit operator bool() const { return held_.tid != 0; }

 private:
  template <class>
  friend class Queue;
  std::shared_ptr<detail::QueueCore> core_;
  detail::HeldItem held_;
};

template <class T>
class Queue {
  static_assert((detail::require_transferable<T>(), true));

 public:
  using value_type = T;

  Queue() : Queue(0) {}
  // maxsize 0 = unbounded, and so is a negative one (Python's rule: Queue<T>(-1) arrives as a
  // huge size_t, which means the same); otherwise put() waits while maxsize items are queued.
  explicit Queue(size_t maxsize) {
    if (!detail::loading_handles()) core_ = detail::QueueCore::create(maxsize);
  }

  // Waits for room (bounded queue) at most `timeout`; throws Full if none came, ShutDown if
  // the queue was shut down.
  void put(const T& item, Timeout timeout = std::nullopt) {
    if (put_range(&item, 1, detail::Deadline::after(timeout)) != 1) throw Full();
  }
  void put_nowait(const T& item) {
    if (put_range(&item, 1, detail::Deadline::now()) != 1) throw Full();
  }
  // Waits for an item at most `timeout`; throws Empty if none came, ShutDown if the queue was
  // shut down and is drained.
  T get(Timeout timeout = std::nullopt) { return get_one(detail::Deadline::after(timeout)); }
  T get_nowait() { return get_one(detail::Deadline::now()); }

  // Puts every item of the range, in order, taking the queue's lock once per batch. Throws Full
  // if the timeout passes first (the items before that point are in the queue).
  template <std::ranges::input_range R>
  void put_many(R&& items, Timeout timeout = std::nullopt) {
    const auto deadline = detail::Deadline::after(timeout);
    if (!detail::put_range_of<T>(std::forward<R>(items),
                                 [&](const T* p, size_t n) { return put_range(p, n, deadline); }))
      throw Full();
  }
  // Waits at most `timeout` for the first item, then takes up to max_items that are there.
  // Throws Empty if none came (ShutDown if shut down and drained).
  std::vector<T> get_many(size_t max_items, Timeout timeout = std::nullopt) {
    auto& c = core();
    std::vector<T> out;
    auto deadline = detail::Deadline::after(timeout);
    if constexpr (Codec::plain) {
      // Copied straight into the result. Room for a large max_items is sized by what is there
      // now (qsize reads a line producers write: not for every small batch), so more that
      // arrive meanwhile may wait for the next call ("up to max_items").
      constexpr size_t kSmall = 1024;
      const size_t room =
          max_items <= kSmall ? max_items : std::min(max_items, std::max(c.qsize(), kSmall));
      out.resize(room);
      detail::PlainSink sink{reinterpret_cast<char*>(out.data()), sizeof(T)};
      const size_t n = c.get(room, nullptr, &sink, deadline);
      if (n == 0) throw Empty();
      out.resize(n);
    } else {
      typename Codec::Encoded e;
      size_t n = c.get(max_items, &Codec::deliver_bytes, &e, deadline);
      if (n == 0) throw Empty();
      out.reserve(n);
      for (size_t i = 0; i < n; ++i) out.push_back(Codec::decode(e, i));
    }
    return out;
  }

  // get_many into the caller's buffer, so a batch costs no allocation: waits at most `timeout`
  // for the first item, then fills out's first elements with up to out.size() items that are
  // there and returns how many. Throws Empty if none came (ShutDown if shut down and drained).
  // An empty span asks for nothing and returns 0 at once.
  size_t get_many(std::span<T> out, Timeout timeout = std::nullopt) {
    auto& c = core();
    auto deadline = detail::Deadline::after(timeout);
    size_t n;
    if constexpr (Codec::plain) {
      detail::PlainSink sink{reinterpret_cast<char*>(out.data()), sizeof(T)};
      n = c.get(out.size(), nullptr, &sink, deadline);
    } else {
      typename Codec::Encoded e;
      n = c.get(out.size(), &Codec::deliver_bytes, &e, deadline);
      for (size_t i = 0; i < n; ++i) out[i] = Codec::decode(e, i);
    }
    if (n == 0 && !out.empty()) throw Empty();
    return n;
  }

  // Zero-copy put (plain-bytes T, or a byte string: see the top of this file): waits for room as
  // put() does (Full after `timeout`, ShutDown), then calls writer(std::span<std::byte> dst) once,
  // with dst the item's `size` bytes in the queue's shared memory (sizeof(T) for a plain T; 8-byte
  // aligned, 64 from 512 bytes on, except a byte string's, which follow its 8-byte length), and
  // the item is queued when writer returns. A writer that throws queues nothing (the exception
  // passes through). The writer runs with the producers' lock held: other producers wait for
  // it, and it must not put to this queue itself. A producer killed inside writer loses that
  // item only; the queue stays whole for the others.
  template <class Writer>
      void put_with(size_t size, Writer&& writer,
                    Timeout timeout = std::nullopt) requires(detail::is_plain_bytes_v<T> ||
                                                             detail::is_byte_string<T>::value) &&
      std::invocable<Writer&, std::span<std::byte>> {
    struct Ctx {
      std::remove_reference_t<Writer>* writer;
      size_t size;
    } ctx{&writer, size};
    size_t bytes = size;
    if constexpr (Codec::plain) {
      if (size != sizeof(T))
        throw std::invalid_argument("put_with: a " + std::to_string(sizeof(T)) +
                                    "-byte item type, given " + std::to_string(size) + " bytes");
    } else {
      bytes += detail::kByteStringPrefix;
    }
    detail::FillFn fill = [](void* c, size_t, char* dst) {
      auto* x = static_cast<Ctx*>(c);
      if constexpr (!Codec::plain) {
        const uint64_t n = x->size;
        std::memcpy(dst, &n, sizeof n);
        dst += detail::kByteStringPrefix;
      }
      (*x->writer)(std::span<std::byte>(reinterpret_cast<std::byte*>(dst), x->size));
    };
    if (core().put(1, &bytes, 0, fill, &ctx, detail::Deadline::after(timeout)) != 1) throw Full();
  }
  // Zero-copy get: waits like get() (Empty after `timeout`, ShutDown once shut down and drained)
  // and returns a view of the item in place (ItemView above: the item is consumed when the view
  // ends; meanwhile other consumers wait).
  ItemView<T> get_view(Timeout timeout = std::nullopt) requires(detail::is_plain_bytes_v<T> ||
                                                                detail::is_byte_string<T>::value) {
    return view_until(detail::Deadline::after(timeout));
  }
  ItemView<T> get_view_nowait() requires(detail::is_plain_bytes_v<T> ||
                                         detail::is_byte_string<T>::value) {
    return view_until(detail::Deadline::now());
  }

  // Approximate, as in Python: other processes may change it at any moment.
  size_t qsize() const { return core().qsize(); }
  bool empty() const { return core().empty(); }
  bool full() const { return core().full(); }
  size_t maxsize() const { return core().maxsize(); }
  // Python's close(): this handle (and its copies in this process) puts and gets no more; later
  // use of it throws ProcessError. Other handles and processes are unaffected: each producer
  // may close its own when done. A handle sent to another process arrives open there.
  void close() { core().close(); }
  bool closed() const { return core().closed(); }
  // Python 3.13's shutdown(), for everyone: later puts throw ShutDown; gets drain what is left,
  // then throw ShutDown; blocked callers wake. immediate = true also discards what is queued
  // (a JoinableQueue counts those items done) and gets throw ShutDown at once.
  void shutdown(bool immediate = false) { core().shutdown(immediate); }
  bool is_shutdown() const { return core().is_shutdown(); }

  // The shared-memory name of the queue's control segment (diagnostics).
  const std::string& name() const { return core().name(); }
  bool operator==(const Queue& other) const {
    return core_ == other.core_ || (core_ && other.core_ && name() == other.name());
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
    core_ = open_core(name);
  }

 protected:
  using Codec = detail::ItemCodec<T>;
  struct NoCreate {};
  explicit Queue(NoCreate) {}
  static std::shared_ptr<detail::QueueCore> open_core(const std::string& name) {
    return detail::QueueCore::attach(name);
  }

  detail::QueueCore& core() const {
    if (!core_) detail::throw_empty_handle("Queue");
    return *core_;
  }

  size_t put_range(const T* items, size_t n, const detail::Deadline& deadline) {
    auto& c = core();
    if constexpr (Codec::plain) {
      static const size_t kSize = sizeof(T);
      return c.put(n, &kSize, 0, nullptr, const_cast<T*>(items), deadline);
    } else {
      typename Codec::Encoded e;
      Codec::encode_with_refs(e, items, n);
      return Codec::release_unput(e,
                                  c.put(n, e.sizes.data(), 1, &Codec::fill_encoded, &e, deadline));
    }
  }

  ItemView<T> view_until(const detail::Deadline& deadline) {
    ItemView<T> v;
    auto& c = core();
    if (!c.get_hold(v.held_, deadline)) throw Empty();
    v.core_ = core_;
    if constexpr (Codec::plain) {
      if (v.held_.size != sizeof(T)) {
        v.release();
        throw ProcessError("queue item has the wrong size for its type");
      }
    } else {
      uint64_t n = 0;
      if (v.held_.size >= sizeof n) std::memcpy(&n, v.held_.data, sizeof n);
      if (v.held_.size < sizeof n || n != v.held_.size - sizeof n) {
        v.release();
        throw ProcessError("queue " + c.name() + ": an item that is not a byte string (" +
                           std::to_string(v.held_.size) + " bytes)");
      }
    }
    return v;
  }

  T get_one(const detail::Deadline& deadline) {
    if constexpr (Codec::plain) {
      return get_one_plain(deadline);
    } else {
      typename Codec::Encoded e;
      if (core().get(1, &Codec::deliver_bytes, &e, deadline) == 0) throw Empty();
      return Codec::decode(e, 0);
    }
  }
  // Copied by the core straight into the caller's object: `item` is the function's return
  // object (named return value, at the function's top level: GCC 12 does not elide the copy of
  // one declared inside an `if constexpr` branch, a second memcpy of every item).
  T get_one_plain(const detail::Deadline& deadline) requires Codec::plain {
    auto& c = core();
    T item;
    detail::PlainSink sink{reinterpret_cast<char*>(std::addressof(item)), sizeof(T)};
    if (c.get(1, nullptr, &sink, deadline) == 0) throw Empty();
    return item;
  }

  std::shared_ptr<detail::QueueCore> core_;
};

// A Queue whose consumers report each item done (task_done) so that producers can join().
template <class T>
class JoinableQueue : public Queue<T> {
 public:
  JoinableQueue() : JoinableQueue(0) {}
  explicit JoinableQueue(size_t maxsize) : Queue<T>(typename Queue<T>::NoCreate{}) {
    if (!detail::loading_handles()) this->core_ = detail::QueueCore::create(maxsize, true);
  }
  // One item got earlier is finished. Throws ProcessError if called more often than put().
  void task_done() { this->core().task_done(); }
  // Waits until every item put has been marked done. Returns false if the timeout passed first.
  // What counts is what really reached the queue: a producer killed inside put() (or while it
  // waited for room) leaves nothing for join() to wait for but the items it did put.
  bool join(Timeout timeout = std::nullopt) {
    return this->core().join(detail::Deadline::after(timeout));
  }
};

// Python's SimpleQueue: put, get, empty, close - an unbounded Queue without the rest.
template <class T>
class SimpleQueue {
 public:
  SimpleQueue() = default;
  void put(const T& item) { q_.put(item); }
  T get() { return q_.get(); }
  bool empty() const { return q_.empty(); }
  void close() { q_.close(); }
  template <class Archive>
  void save(Archive& ar) const {
    q_.save(ar);
  }
  template <class Archive>
  void load(Archive& ar) {
    q_.load(ar);
  }

 private:
  Queue<T> q_;
};

}  // namespace multiproc
