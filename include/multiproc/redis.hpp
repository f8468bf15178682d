// Queues that live in a Redis server, so that processes on many hosts share them (the optional
// component multiproc::redis, built on Debian's hiredis; the core library never depends on it).
//
//   namespace mpr = multiproc::redis;
//   mpr::Queue<Job> q("redis://user:pass@host:6379/0", "jobs");   // Queue<T>'s methods
//   mpr::JoinableQueue<Job> jq(url, "work");                       // + task_done() / join()
//   mpr::Queue<Job> rq(url, "jobs", 0, {.reliable = true});        // at-least-once: get() + ack()
//
// A handle is a URL and a name: every handle with the same pair, in any process on any host that
// reaches the server, is the same queue. Items are encoded as they are between processes
// (<multiproc/serialization.hpp>). A handle connects when made (a malformed URL, a refused
// password or a server that stays unreachable fail there) and may be passed as a Process argument
// (it travels as URL, name and options; the receiver opens its own connection). Copies of a handle
// share one connection: use a handle from one thread at a time.
//
// Connection loss: every call reconnects with backoff and goes on; a call fails with
// ConnectionError once the server stays unreachable past the larger of its own timeout and
// Options::unreachable_timeout (10 s by default). A put whose reply was lost with the connection
// is sent again, so an item may then be stored twice (at least once, never lost once put()
// returned).
//
// Keys: "mp:{name}:items" (the list; put pushes on the left, get pops on the right), ":shutdown",
// ":drain" (once shut down, the items left, and ":items" a string so that no push lands),
// ":unfinished" (JoinableQueue), and in reliable mode ":consumers", ":proc:<id>", ":hb:<id>".
// Queues outlive the processes that use them, as Redis keys do: unlink() removes one.
#pragma once

#include <chrono>
#include <cstddef>
#include <memory>
#include <optional>
#include <ranges>
#include <span>
#include <string>
#include <string_view>
#include <type_traits>
#include <utility>
#include <vector>

#include <multiproc/errors.hpp>
#include <multiproc/serialization.hpp>
#include <multiproc/timeout.hpp>

namespace multiproc::redis {

// The Redis server could not be reached (or stayed unreachable) within the stated time.
class ConnectionError : public ProcessError {
 public:
  using ProcessError::ProcessError;
};

struct Options {
  // At-least-once consumption: get() moves each item into this handle's processing list, where it
  // stays until ack() (or JoinableQueue::task_done()). Items of a consumer that stops beating
  // (dies, or makes no call on the queue for heartbeat_ttl) go back to the head of the queue
  // (a consumer is taken for dead between 1 and 1.1 heartbeat_ttl after its last call).
  bool reliable = false;
  std::chrono::duration<double> heartbeat_ttl{10.0};
  // How long a call keeps reconnecting before ConnectionError, when its own timeout is shorter.
  std::chrono::duration<double> unreachable_timeout{10.0};

  template <class Archive>
  void serialize(Archive& ar) {
    double ttl = heartbeat_ttl.count(), unreachable = unreachable_timeout.count();
    ar(reliable, ttl, unreachable);
    heartbeat_ttl = std::chrono::duration<double>(ttl);
    unreachable_timeout = std::chrono::duration<double>(unreachable);
  }
};

namespace detail {

// redis://[user:pass@]host[:port][/db]; user and password may be %-encoded. Anything else
// (another scheme, a query, a bad port or db) throws ProcessError naming the URL's fault.
struct Url {
  std::string host;
  int port = 6379;
  std::string user;
  std::string password;
  int db = 0;
};
Url parse_url(const std::string& url);

// The byte-level queue shared by the copies of one handle in one process; its connection is
// reopened in a process that did not open it (a forked child holding a copy).
class QueueCore {
 public:
  QueueCore(std::string url, std::string name, size_t maxsize, Options options, bool joinable);
  ~QueueCore();
  QueueCore(const QueueCore&) = delete;
  QueueCore& operator=(const QueueCore&) = delete;

  // Puts every item, waiting for room while maxsize is reached; returns how many went in before
  // the deadline. Throws QueueClosed after close() or shutdown().
  size_t put(std::span<const std::string> items, const multiproc::detail::Deadline& deadline);
  // Takes 1..max_items items, waiting until one comes; empty when the deadline passed first.
  // Throws QueueClosed once the queue is shut down and drained (at once after an immediate one).
  std::vector<std::string> get(size_t max_items, const multiproc::detail::Deadline& deadline);

  size_t qsize();
  size_t maxsize() const;
  void close();
  bool closed() const;
  void shutdown(bool immediate);
  bool is_shutdown();
  void ack(size_t n);
  size_t unacked() const;
  void heartbeat();
  void task_done();
  bool join(const multiproc::detail::Deadline& deadline);
  void unlink();

  const std::string& url() const;
  const std::string& name() const;
  const Options& options() const;

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace detail

template <class T>
class Queue {
  static_assert((multiproc::detail::require_transferable<T>(), true));

 public:
  using value_type = T;

  Queue() = default;  // an empty handle, to be loaded
  Queue(std::string url, std::string name, size_t maxsize = 0, Options options = {})
      : core_(std::make_shared<detail::QueueCore>(std::move(url), std::move(name), maxsize, options,
                                                  false)) {}

  void put(const T& item, Timeout timeout = std::nullopt) {
    put_range(&item, 1, multiproc::detail::Deadline::after(timeout));
  }
  void put_nowait(const T& item) { put_range(&item, 1, multiproc::detail::Deadline::now()); }
  T get(Timeout timeout = std::nullopt) {
    return get_one(multiproc::detail::Deadline::after(timeout));
  }
  T get_nowait() { return get_one(multiproc::detail::Deadline::now()); }

  template <std::ranges::input_range R>
  void put_many(R&& items, Timeout timeout = std::nullopt) {
    auto deadline = multiproc::detail::Deadline::after(timeout);
    std::vector<std::string> bytes;
    if constexpr (std::ranges::sized_range<R>) bytes.reserve(std::ranges::size(items));
    for (const auto& item : items) bytes.push_back(encode(item));
    if (core().put(bytes, deadline) != bytes.size()) throw Full();
  }
  std::vector<T> get_many(size_t max_items, Timeout timeout = std::nullopt) {
    std::vector<T> out;
    if (max_items == 0) return out;
    auto bytes = core().get(max_items, multiproc::detail::Deadline::after(timeout));
    if (bytes.empty()) throw Empty();
    out.reserve(bytes.size());
    for (const auto& b : bytes) out.push_back(decode(b));
    return out;
  }

  size_t qsize() const { return core().qsize(); }
  bool empty() const { return qsize() == 0; }
  bool full() const { return maxsize() > 0 && qsize() >= maxsize(); }
  size_t maxsize() const { return core().maxsize(); }
  // This handle puts no more (its copies neither); other handles go on.
  void close() { core().close(); }
  bool closed() const { return core().closed(); }
  // For every handle: puts fail with QueueClosed, gets drain what is left and then fail with it.
  // immediate: what is left is dropped (and counted done for join()), gets fail at once.
  // A put racing a shutdown from another process either lands before it (and is drained, or
  // dropped by an immediate one) or raises QueueClosed; never both, never neither (a put_many
  // of more than 10000 items is several pushes: those before the shutdown land; a put whose
  // reply was lost, sent again after the shutdown, landed and raises).
  void shutdown(bool immediate = false) { core().shutdown(immediate); }
  bool is_shutdown() const { return core().is_shutdown(); }
  // Reliable mode: the oldest n items this handle took are done and will not come back.
  void ack(size_t n = 1) { core().ack(n); }
  size_t unacked() const { return core().unacked(); }
  // Reliable mode: every call on the queue says this consumer is alive; one busy for longer than
  // heartbeat_ttl between calls says so with heartbeat(), or its items are handed out again.
  void heartbeat() { core().heartbeat(); }
  // Deletes the queue's keys on the server (items, shutdown flag, counters).
  void unlink() { core().unlink(); }

  const std::string& name() const { return core().name(); }
  const std::string& url() const { return core().url(); }
  bool operator==(const Queue& other) const {
    return core_ == other.core_ ||
           (core_ && other.core_ && name() == other.name() && url() == other.url());
  }

  template <class Archive>
  void save(Archive& ar) const {
    ar(core().url(), core().name(), static_cast<uint64_t>(core().maxsize()), core().options());
  }
  template <class Archive>
  void load(Archive& ar) {
    std::string url, name;
    uint64_t maxsize = 0;
    Options options;
    ar(url, name, maxsize, options);
    core_ = std::make_shared<detail::QueueCore>(std::move(url), std::move(name),
                                                static_cast<size_t>(maxsize), options, joinable());
  }

 protected:
  Queue(std::string url, std::string name, size_t maxsize, Options options, bool joinable)
      : core_(std::make_shared<detail::QueueCore>(std::move(url), std::move(name), maxsize, options,
                                                  joinable)) {}
  virtual bool joinable() const { return false; }

  detail::QueueCore& core() const {
    if (!core_) throw ProcessError("multiproc: redis::Queue: empty handle (default-constructed)");
    return *core_;
  }
  static std::string encode(const T& item) {
    std::string b;
    multiproc::detail::dump(b, item);
    return b;
  }
  static T decode(const std::string& b) { return multiproc::detail::load<T>(std::string_view(b)); }
  T get_one(const multiproc::detail::Deadline& deadline) {
    auto bytes = core().get(1, deadline);
    if (bytes.empty()) throw Empty();
    return decode(bytes[0]);
  }
  void put_range(const T* items, size_t n, const multiproc::detail::Deadline& deadline) {
    if (n == 1) {  // put(): no vector for one item
      const std::string bytes = encode(items[0]);
      if (core().put(std::span<const std::string>(&bytes, 1), deadline) != 1) throw Full();
      return;
    }
    std::vector<std::string> bytes;
    bytes.reserve(n);
    for (size_t i = 0; i < n; ++i) bytes.push_back(encode(items[i]));
    if (core().put(bytes, deadline) != n) throw Full();
  }

  std::shared_ptr<detail::QueueCore> core_;
};

// A Queue whose consumers report each item done, so that any process may join() until every item
// put so far is done. The count of unfinished items lives in Redis. In reliable mode task_done()
// also acknowledges the oldest item this handle took. A task_done() sent again after its reply was
// lost counts (and acks) once.
template <class T>
class JoinableQueue : public Queue<T> {
 public:
  JoinableQueue() = default;
  JoinableQueue(std::string url, std::string name, size_t maxsize = 0, Options options = {})
      : Queue<T>(std::move(url), std::move(name), maxsize, options, true) {}

  void task_done() { this->core().task_done(); }
  // True once every item put is done; false when the timeout passed first.
  bool join(Timeout timeout = std::nullopt) {
    return this->core().join(multiproc::detail::Deadline::after(timeout));
  }

 protected:
  bool joinable() const override { return true; }
};

}  // namespace multiproc::redis

#include <multiproc/redis/pool.hpp>
