// multiproc::redis::Pool: the Pool API with its task queue and its results in a Redis server, so
// that its workers may run on any host that reaches the server.
//
//   namespace mpr = multiproc::redis;
//   mpr::Pool pool("redis://:pass@host:6379/0", {.processes = 2});  // + any external workers
//   auto r = pool.apply_async(task, x);  r.get();
//   std::vector<int> ys = pool.map(square, xs);
//
// External workers are the same program, started as
//   ./app --multiproc-worker redis://:pass@host:6379/0 [--processes N] [--pool NAME]
// (handled by multiproc::init(); the auth key comes from MULTIPROC_AUTHKEY, hex, as for spawned
// children). A worker serves every pool of its name ("default" unless told otherwise).
//
// Tasks travel as the core pool encodes them (detail/task.hpp: invoker and function addresses,
// encoded arguments), with the program's build id, signed with HMAC-SHA256 under the pool's auth
// key. A worker drops (with a log line) a message whose signature is wrong or that does not
// decode; it refuses, answering an error, a task of another build or whose invoker is not one of
// its own program's task entry points. Results are signed the same way.
//
// Submitting never waits on the server: apply_async() and the other calls hand their tasks to the
// pool's sender thread, which pushes whatever has accumulated in one round trip, in submission
// order. A task it cannot send (the server unreachable past unreachable_timeout) fails its result
// with ConnectionError; close() + join() waits for the tasks not sent yet, terminate() and the
// destructor fail them with BrokenPool.
//
// As Python's Pool.terminate(), terminate() (and the destructor) leaves the tasks not started
// yet: once it has returned, no worker is handed one of them (workers drop them, unrun). A task a
// worker had already taken may still finish. The same holds for the tasks of a client killed or
// cut off, once its keys lapse (client_timeout).
//
// A worker that stops beating for worker_timeout (died, host cut off) has its tasks run again on
// another worker, at most max_retries times, then their results fail with WorkerLost: a task may
// run more than once and must be idempotent.
//
// The calls are the core Pool's (detail/pool_front.hpp), MapOptions and its progress bars
// included: pool.map(f, xs, mpr::MapOptions{.chunksize = 10, .progress = true}).
#pragma once

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <deque>
#include <exception>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <ranges>
#include <string>
#include <tuple>
#include <type_traits>
#include <vector>

#include <multiproc/context.hpp>
#include <multiproc/detail/next_iterator.hpp>
#include <multiproc/detail/pool_front.hpp>
#include <multiproc/detail/pool_jobs.hpp>
#include <multiproc/detail/progress.hpp>
#include <multiproc/detail/task.hpp>
#include <multiproc/errors.hpp>
#include <multiproc/pool.hpp>
#include <multiproc/timeout.hpp>

namespace multiproc::redis {

using multiproc::callbacks;   // pool.apply_async(mpr::callbacks(on_value, on_error), task, ...)
using multiproc::MapOptions;  // pool.map(f, xs, mpr::MapOptions{.chunksize = 10, .progress = true})

struct PoolOptions {
  unsigned processes = 0;        // workers this pool starts on this host (0: external ones only)
  std::string name = "default";  // workers serve the pools of their name
  std::optional<std::string> authkey{};  // default: multiproc::process_authkey()
  // A worker that does not beat for this long is dead: its tasks run again elsewhere.
  std::chrono::duration<double> worker_timeout{10.0};
  unsigned max_retries = 3;  // runs after a lost worker before a task fails with WorkerLost
  // The server unreachable this long: the pool's results fail with ConnectionError, and its local
  // workers give up (exit status 1, with a log line; `--unreachable-timeout S` for the others).
  std::chrono::duration<double> unreachable_timeout{10.0};
  std::optional<Context> context{};  // start method of the local workers
  // The pool's own keys in Redis (its result lists, its liveness key) have this expiry, renewed
  // while it lives (every client_timeout / 4) and deleted by join(), terminate() and the
  // destructor: those of a client that was killed or cut off go after this long; then its tasks
  // still queued are dropped (not run), and results answered for it later too. Keep it well above
  // unreachable_timeout: a pool whose keys lapse during an outage loses the results answered, and
  // the tasks taken, before its next renewal.
  std::chrono::duration<double> client_timeout{60.0};
};

namespace detail {

using multiproc::detail::Deadline;

// Receives a submission's chunk outcomes, in the pool's result thread (a chunk that could not be
// sent fails in its sender thread).
class ChunkSink {
 public:
  virtual ~ChunkSink() = default;
  virtual void chunk_done(uint32_t chunk, const char* p, size_t n) = 0;
  virtual void chunk_failed(uint32_t chunk, std::exception_ptr error) = 0;
};

// An imap's reading of its input, as the pool sees it: join() waits while any is feeding, and
// close() tells each to read the rest of its input without waiting for its reader (Python's task
// handler reads it all: `it = pool.imap(f, xs); pool.close(); pool.join();` runs every call).
class Feed {
 public:
  virtual ~Feed() = default;
  virtual bool feeding() const = 0;  // the input is not read to its end yet
  virtual void pool_closed() = 0;
};

// The untyped pool (src/redis/pool.cpp): queues chunks for its sender thread (which signs and
// pushes what has accumulated in one round trip), runs the result thread, reaps dead workers,
// starts and stops the local workers.
class PoolClient {
 public:
  PoolClient(std::string url, PoolOptions options);
  ~PoolClient();
  PoolClient(const PoolClient&) = delete;
  PoolClient& operator=(const PoolClient&) = delete;

  // Chunks numbered first_chunk, first_chunk + 1, ...; returns without waiting on the server
  // (a chunk that cannot be sent fails through the sink). `feed`: an imap's, which may go on
  // after close() (BrokenPool once the pool is terminated or joined).
  void submit(const std::string& code, std::vector<std::string> chunks, uint32_t first_chunk,
              std::shared_ptr<ChunkSink> sink, bool feed = false);
  // An imap's feed, before its first submission (ProcessError when the pool is closed).
  void add_feed(std::weak_ptr<Feed> feed);
  // A feed has read its input to its end (join() may be waiting for it).
  void feed_ended();
  // Workers alive now (at least 1, for the automatic chunk size).
  unsigned workers();
  void close();
  void join();
  void terminate();
  unsigned processes() const;
  std::vector<pid_t> worker_pids() const;

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

// A program's task entry points: every invoker a redis::Pool can send registers itself here at
// start-up (a static initializer per instantiation), in the client and, the program being the
// same, in every worker; a worker runs only invokers found here.
bool register_task_entry(const void* invoker);
// A task message as a pool signs it (for tests that play a client by hand).
std::string sign_task(const std::string& key, const std::string& client, uint64_t task,
                      const std::string& code, const std::string& args);

template <class F, class ArgsTuple, bool kStar>
struct TaskEntry {
  static inline const bool registered = register_task_entry(
      reinterpret_cast<const void*>(&multiproc::detail::invoke_chunk<F, ArgsTuple, kStar>));
};

template <class F, class ArgsTuple, bool kStar>
std::string code_bytes(const F& f) {
  (void)TaskEntry<F, ArgsTuple, kStar>::registered;  // odr-use: instantiates the registration
  return multiproc::detail::chunk_code_bytes<F, ArgsTuple, kStar>(f);
}

// Every call's outcome of one submission (apply: one call).
template <class V>
struct CallsState {
  std::mutex mu;
  std::condition_variable cv;
  bool ready = false;
  size_t remaining = 0;
  std::vector<std::optional<V>> values;
  std::map<size_t, std::exception_ptr> errors;
  // map/starmap with MapOptions::progress: drawn as calls settle, under mu.
  std::optional<multiproc::detail::ProgressBar> progress;
  size_t settled = 0;
  // The user's callbacks, run in the pool's result thread (or its sender thread, for a task that
  // could not be sent).
  std::function<void()> on_ready;

  bool wait(const Deadline& deadline) {
    std::unique_lock lk(mu);
    if (!deadline.at) {
      cv.wait(lk, [&] { return ready; });
      return true;
    }
    return cv.wait_until(lk, *deadline.at, [&] { return ready; });
  }
  std::exception_ptr first_error() { return errors.empty() ? nullptr : errors.begin()->second; }
};

template <class R>
class CallsSink final : public ChunkSink {
 public:
  using V = multiproc::detail::value_of<R>;
  // `is_map`: a task's error names its item's index (not for apply).
  CallsSink(std::shared_ptr<CallsState<V>> st, std::vector<size_t> starts, size_t n,
            bool is_map = true)
      : st_(std::move(st)), starts_(std::move(starts)), n_(n), is_map_(is_map) {}
  void chunk_done(uint32_t chunk, const char* p, size_t n) override {
    const size_t base = starts_[chunk], count = chunk_size(chunk);
    try {
      multiproc::detail::decode_chunk<R>(
          p, n, count, is_map_ ? std::optional<size_t>(base) : std::nullopt,
          [&](size_t i, V&& v) { set(base + i, std::move(v)); },
          [&](size_t i, std::exception_ptr e) { fail(base + i, e); });
    } catch (...) {
      chunk_failed(chunk, std::current_exception());
      return;
    }
    settle(count);
  }
  void chunk_failed(uint32_t chunk, std::exception_ptr e) override {
    const size_t base = starts_[chunk], count = chunk_size(chunk);
    for (size_t i = 0; i < count; ++i) fail(base + i, e);
    settle(count);
  }

 private:
  size_t chunk_size(uint32_t chunk) const {
    return (chunk + 1 < starts_.size() ? starts_[chunk + 1] : n_) - starts_[chunk];
  }
  void set(size_t i, V&& v) {
    std::lock_guard lk(st_->mu);
    if (!st_->values[i] && !st_->errors.count(i)) st_->values[i] = std::move(v);
  }
  void fail(size_t i, std::exception_ptr e) {
    std::lock_guard lk(st_->mu);
    if (!st_->values[i]) st_->errors.emplace(i, e);
  }
  void settle(size_t count) {
    bool now_ready = false;
    {
      std::lock_guard lk(st_->mu);
      st_->remaining -= std::min(count, st_->remaining);
      now_ready = st_->remaining == 0 && !st_->ready;
      st_->settled += count;
      if (st_->progress) {
        if (st_->remaining == 0)
          st_->progress->finish(st_->settled);
        else
          st_->progress->update(st_->settled);
      }
    }
    if (!now_ready) return;
    if (st_->on_ready) st_->on_ready();
    {
      std::lock_guard lk(st_->mu);
      st_->ready = true;
    }
    st_->cv.notify_all();
  }
  std::shared_ptr<CallsState<V>> st_;
  std::vector<size_t> starts_;
  size_t n_;
  bool is_map_;
};

template <class V>
std::vector<V> collect(CallsState<V>& st) {
  std::vector<V> out;
  out.reserve(st.values.size());
  for (auto& v : st.values) out.push_back(*v);
  return out;
}

// imap / imap_unordered: outcomes as they come, the input read as room frees up: by the reader
// (next()) while it reads, by whoever settles a chunk (the pool's result thread) once the pool is
// closed or the reader gone, so that join() never waits for a reader that waits for join().
template <class V>
struct IMapState final : ChunkSink, Feed, std::enable_shared_from_this<IMapState<V>> {
  std::mutex mu;
  std::condition_variable cv;
  std::map<size_t, multiproc::detail::Outcome<V>> ordered;  // by item index
  std::deque<multiproc::detail::Outcome<V>> unordered;
  std::vector<size_t> starts, sizes;  // per chunk
  size_t in_flight = 0;
  size_t read = 0;         // items read from the input
  bool exhausted = false;  // the input has been read to its end (or failed, or cannot be sent)
  // The pool was closed, or the reader went: the input no longer waits for next().
  bool unpaced = false;
  bool reader_gone = false;  // no IMapResult left: outcomes are dropped as they come
  // imap with MapOptions::progress: drawn as chunks settle, finished with the last one.
  std::optional<multiproc::detail::ProgressBar> progress;
  size_t settled = 0;
  void (*decode)(IMapState&, uint32_t, const char*, size_t) = nullptr;
  bool is_ordered = true;

  // Set before the first feed(); the pool outlives every call of feed(): its callers are the
  // reader and IMapResult (which hold the pool), and the pool's own threads.
  PoolClient* pool = nullptr;
  std::string code;
  // Encodes the next chunk, returns its size; an input that throws sets the error, after the
  // chunk of the items read before it.
  std::function<size_t(std::string&, std::exception_ptr&)> source;
  size_t window = 1;
  std::mutex feed_mu;  // one feeder at a time (the input is read in order); taken before mu
  std::atomic<bool> open{true};

  void add(size_t item, multiproc::detail::Outcome<V> o) {
    if (reader_gone) return;
    if (is_ordered)
      ordered.emplace(item, std::move(o));
    else
      unordered.push_back(std::move(o));
  }
  // Under mu: a chunk of `count` items has its outcomes.
  void chunk_settled(size_t count) {
    --in_flight;
    settled += count;
    if (!progress) return;
    if (exhausted && in_flight == 0)
      progress->finish(settled);
    else
      progress->update(settled);
  }
  void chunk_done(uint32_t chunk, const char* p, size_t n) override {
    decode(*this, chunk, p, n);
    cv.notify_all();
    feed_unpaced();
  }
  void chunk_failed(uint32_t chunk, std::exception_ptr e) override {
    {
      std::lock_guard lk(mu);
      for (size_t i = 0; i < sizes[chunk]; ++i)
        add(starts[chunk] + i, multiproc::detail::Outcome<V>(e));
      chunk_settled(sizes[chunk]);
    }
    cv.notify_all();
    feed_unpaced();
  }

  bool feeding() const override { return open.load(); }
  void pool_closed() override {
    {
      std::lock_guard lk(mu);
      unpaced = true;
    }
    feed();
  }
  // The last IMapResult went: the remaining calls still run, as Python's do, and their outcomes,
  // which nobody can read, are dropped.
  void reader_went() {
    {
      std::lock_guard lk(mu);
      unpaced = reader_gone = true;
      ordered.clear();
      unordered.clear();
    }
    feed();
  }

  // Keeps up to window chunks in flight, reading the input only for them (an endless input
  // works). An input that throws, or a chunk the pool no longer takes (terminated), is the
  // outcome at its place, and the end of the input.
  void feed() {
    std::lock_guard fl(feed_mu);
    bool ended = false;
    for (;;) {
      {
        std::lock_guard lk(mu);
        if (exhausted || in_flight >= window) break;
      }
      std::string chunk;
      size_t n = 0;
      std::exception_ptr error;  // the input's, after the n items read before it
      try {
        n = source(chunk, error);
      } catch (...) {
        n = 0;
        error = std::current_exception();
      }
      std::lock_guard lk(mu);
      if (n > 0) {
        starts.push_back(read);
        sizes.push_back(n);
        read += n;
        ++in_flight;
        try {
          pool->submit(code, {std::move(chunk)}, static_cast<uint32_t>(starts.size() - 1),
                       this->shared_from_this(), true);
        } catch (...) {
          // Not sent (the pool is terminated): the chunk's place gets the error.
          --in_flight;
          read -= n;
          starts.pop_back();
          sizes.pop_back();
          error = std::current_exception();
        }
      }
      if (error) add(read++, multiproc::detail::Outcome<V>(error));
      if (n == 0 || error) {
        exhausted = ended = true;
        if (progress && in_flight == 0) progress->finish(settled);
        break;
      }
    }
    cv.notify_all();
    if (ended) {
      open.store(false);
      pool->feed_ended();
    }
  }

 private:
  // Once nobody waits for the reader: the thread that settled a chunk reads on.
  void feed_unpaced() {
    {
      std::lock_guard lk(mu);
      if (!unpaced || exhausted) return;
    }
    feed();
  }
};

template <class R>
void decode_imap_chunk(IMapState<multiproc::detail::value_of<R>>& st, uint32_t chunk, const char* p,
                       size_t n) {
  using V = multiproc::detail::value_of<R>;
  using O = multiproc::detail::Outcome<V>;
  std::lock_guard lk(st.mu);
  const size_t base = st.starts[chunk], count = st.sizes[chunk];
  std::vector<O> outs(count, O(std::make_exception_ptr(ProcessError("pool: no outcome"))));
  try {
    multiproc::detail::decode_chunk<R>(
        p, n, count, std::optional<size_t>(base),
        [&](size_t i, V&& v) { outs[i] = O(std::move(v)); },
        [&](size_t i, std::exception_ptr e) { outs[i] = O(e); });
  } catch (...) {
    for (auto& o : outs) o = O(std::current_exception());
  }
  for (size_t i = 0; i < count; ++i) st.add(base + i, std::move(outs[i]));
  st.chunk_settled(count);
}

// The task of a map or imap call, which takes each item as its one argument.
template <class F, class Range>
struct OneArgCall {
  using Elem = std::ranges::range_reference_t<Range>;
  static_assert(multiproc::detail::check_task<F, Elem>());
  using ArgsTuple = multiproc::detail::task_args_t<F, Elem>;
  static_assert(std::tuple_size_v<ArgsTuple> == 1,
                "map's and imap's task must take exactly one argument; use starmap for several");
  using P = std::tuple_element_t<0, ArgsTuple>;
};

}  // namespace detail

template <class R>
class [[nodiscard]] AsyncResult {
 public:
  using V = multiproc::detail::value_of<R>;
  AsyncResult() = default;
  explicit AsyncResult(std::shared_ptr<detail::CallsState<V>> st) : st_(std::move(st)) {}

  // The task's value, or its error (RemoteError, WorkerLost, ProcessError for a refused task);
  // TimeoutError when not ready within `timeout`.
  R get(Timeout timeout = std::nullopt) const {
    if (!wait(timeout))
      throw TimeoutError("redis::AsyncResult::get(): the result is not ready within the timeout");
    if (auto e = st_->first_error()) std::rethrow_exception(e);
    if constexpr (!std::is_void_v<R>) return *st_->values[0];
  }
  bool wait(Timeout timeout = std::nullopt) const {
    check();
    return st_->wait(multiproc::detail::Deadline::after(timeout));
  }
  bool ready() const {
    check();
    std::lock_guard lk(st_->mu);
    return st_->ready;
  }
  bool successful() const {
    if (!ready()) throw ProcessError("AsyncResult::successful(): the result is not ready");
    return st_->errors.empty();
  }

 private:
  void check() const {
    if (!st_) throw ProcessError("redis::AsyncResult: empty (default-constructed)");
  }
  std::shared_ptr<detail::CallsState<V>> st_;
};

template <class R>
class [[nodiscard]] MapResult {
 public:
  using V = multiproc::detail::value_of<R>;
  explicit MapResult(std::shared_ptr<detail::CallsState<V>> st) : st_(std::move(st)) {}

  // Every value in input order, or the first failed call's error.
  std::vector<V> get(Timeout timeout = std::nullopt) const {
    if (!wait(timeout))
      throw TimeoutError("redis::MapResult::get(): the result is not ready within the timeout");
    if (auto e = st_->first_error()) std::rethrow_exception(e);
    return detail::collect(*st_);
  }
  bool wait(Timeout timeout = std::nullopt) const {
    return st_->wait(multiproc::detail::Deadline::after(timeout));
  }
  bool ready() const {
    std::lock_guard lk(st_->mu);
    return st_->ready;
  }
  bool successful() const {
    if (!ready()) throw ProcessError("MapResult::successful(): the result is not ready");
    return st_->errors.empty();
  }
  std::vector<Outcome<V>> outcomes(Timeout timeout = std::nullopt) const {
    if (!wait(timeout)) throw TimeoutError("MapResult::outcomes(): not ready within the timeout");
    return multiproc::detail::map_outcomes<V>(st_->values.size(), st_->errors,
                                              [&](size_t i) -> V { return *st_->values[i]; });
  }
  size_t failures() const { return st_->errors.size(); }

 private:
  std::shared_ptr<detail::CallsState<V>> st_;
};

template <class R>
class IMapResult {
 public:
  using value_type = multiproc::detail::value_of<R>;
  // `st` is fed (its pool, code, source and window set) and its pool has taken it as a feed.
  IMapResult(std::shared_ptr<detail::IMapState<value_type>> st,
             std::shared_ptr<detail::PoolClient> pool)
      : st_(std::move(st)), pool_(std::move(pool)), reader_(reader_token(st_, pool_)) {
    st_->feed();
  }

  // The next result; std::nullopt once every item has been answered. Throws the call's error at
  // its position (an input that threw, its error at its own), or TimeoutError.
  std::optional<value_type> next(Timeout timeout = std::nullopt) {
    auto deadline = multiproc::detail::Deadline::after(timeout);
    std::optional<multiproc::detail::Outcome<value_type>> got;
    {
      std::unique_lock lk(st_->mu);
      auto have = [&] {
        if (st_->is_ordered) return st_->ordered.count(next_) > 0;
        return !st_->unordered.empty();
      };
      auto done = [&] { return st_->exhausted && next_ == st_->read; };
      auto pred = [&] { return have() || done(); };
      if (deadline.at) {
        if (!st_->cv.wait_until(lk, *deadline.at, pred))
          throw TimeoutError("IMapResult::next(): no result within the timeout");
      } else {
        st_->cv.wait(lk, pred);
      }
      if (!have()) return std::nullopt;
      if (st_->is_ordered) {
        auto it = st_->ordered.find(next_);
        got = std::move(it->second);
        st_->ordered.erase(it);
      } else {
        got = std::move(st_->unordered.front());
        st_->unordered.pop_front();
      }
      ++next_;
    }
    st_->feed();
    return got->value();
  }

  using iterator = multiproc::detail::NextIterator<IMapResult>;
  iterator begin() { return iterator(this); }
  std::default_sentinel_t end() { return {}; }

 private:
  // Shared by the copies of this result; the last one to go tells the state that nobody reads
  // its results any more: the rest of the input is read and run, the outcomes dropped (close()
  // + join() would otherwise wait for them for ever, or return with calls never run).
  static std::shared_ptr<void> reader_token(
      const std::shared_ptr<detail::IMapState<value_type>>& st,
      const std::shared_ptr<detail::PoolClient>& pool) {
    return std::shared_ptr<void>(nullptr, [st, pool](void*) noexcept {
      try {
        st->reader_went();
      } catch (...) {
        // Out of memory while feeding: the calls not sent are not run; nobody waits for them.
      }
    });
  }

  std::shared_ptr<detail::IMapState<value_type>> st_;
  std::shared_ptr<detail::PoolClient> pool_;
  std::shared_ptr<void> reader_;
  size_t next_ = 0;
};

// The public calls (apply, map, imap... and their async forms, with MapOptions' chunksize and
// progress) are PoolFront's, as for the core Pool and ThreadPool; this Pool supplies how a call
// travels: encoded, signed and pushed to the server.
class Pool : public multiproc::detail::PoolFront<Pool> {
 public:
  Pool(std::string url, PoolOptions options = {})
      : client_(std::make_shared<detail::PoolClient>(std::move(url), std::move(options))) {}
  // Waits for nothing: pending results fail (as the core Pool's terminate()).
  ~Pool() {
    if (client_) client_->terminate();
  }
  Pool(Pool&&) noexcept = default;
  Pool& operator=(Pool&&) = delete;

  // No more submissions.
  void close() { client_->close(); }
  // After close(): waits for every submitted task (an imap's whole input included, read or not,
  // as Python's task handler reads it all), then stops the local workers.
  void join() { client_->join(); }
  // Stops the local workers at once; pending results fail with BrokenPool, and the tasks no
  // worker has taken yet never run (external workers drop them).
  void terminate() { client_->terminate(); }
  unsigned processes() const { return client_->processes(); }
  std::vector<pid_t> worker_pids() const { return client_->worker_pids(); }

 private:
  friend class multiproc::detail::PoolFront<Pool>;
  template <class F>
  static constexpr bool accepts_task = multiproc::detail::is_task_callable_v<F>;

  template <class OnOk, class OnErr, class F, class... A>
  auto apply_impl(multiproc::detail::Callbacks<OnOk, OnErr> cb, F f, A&&... args) {
    static_assert(multiproc::detail::check_task<F, A...>());
    using ArgsTuple = multiproc::detail::task_args_t<F, A...>;
    using R = multiproc::detail::task_result_t<F, ArgsTuple>;
    std::vector<ArgsTuple> one{ArgsTuple(std::forward<A>(args)...)};
    auto st = make_state<R>(1, std::move(cb), true);
    std::string chunk;
    multiproc::detail::encode_chunk_items(chunk, one);
    client_->submit(detail::code_bytes<F, ArgsTuple, true>(f), {std::move(chunk)}, 0,
                    std::make_shared<detail::CallsSink<R>>(st, std::vector<size_t>{0}, 1, false));
    return AsyncResult<R>(st);
  }

  template <bool kStar, class OnOk, class OnErr, class F, class Range>
  auto map_impl(multiproc::detail::Callbacks<OnOk, OnErr> cb, F f, Range&& items,
                MapOptions options) {
    if constexpr (kStar) {
      using Elem = std::ranges::range_value_t<Range>;
      using ArgsTuple = typename multiproc::detail::star_args<F, Elem>::type;
      static_assert(multiproc::detail::check_task_tuple<F, ArgsTuple>());
      return submit_map<F, ArgsTuple, ArgsTuple, true>(cb, f, std::forward<Range>(items), options);
    } else {
      using Call = detail::OneArgCall<F, Range>;
      return submit_map<F, typename Call::ArgsTuple, typename Call::P, false>(
          cb, f, std::forward<Range>(items), options);
    }
  }

  template <class R, class OnOk, class OnErr>
  auto make_state(size_t n, multiproc::detail::Callbacks<OnOk, OnErr> cb, bool single) {
    using V = multiproc::detail::value_of<R>;
    auto st = std::make_shared<detail::CallsState<V>>();
    st->values.resize(n);
    st->remaining = n;
    if (n == 0) st->ready = true;
    if constexpr (!std::is_same_v<OnOk, std::nullptr_t> || !std::is_same_v<OnErr, std::nullptr_t>) {
      detail::CallsState<V>* raw = st.get();  // the state owns the callback: no cycle of owners
      st->on_ready = [raw, cb = std::move(cb), single]() mutable {
        try {
          if (auto e = raw->first_error()) {
            if constexpr (!std::is_same_v<OnErr, std::nullptr_t>) cb.on_err(e);
          } else if constexpr (!std::is_same_v<OnOk, std::nullptr_t>) {
            if (single) {
              if constexpr (std::is_invocable_v<OnOk&, V&>)
                cb.on_ok(*raw->values[0]);
              else if constexpr (std::is_invocable_v<OnOk&>)
                cb.on_ok();
            } else if constexpr (std::is_invocable_v<OnOk&, std::vector<V>&>) {
              auto all = detail::collect(*raw);
              cb.on_ok(all);
            }
          }
        } catch (...) {
          multiproc::detail::report_callback_exception("callback");
        }
      };
    } else {
      (void)cb;
      (void)single;
    }
    return st;
  }

  template <class F, class ArgsTuple, class P, bool kStar, class OnOk, class OnErr, class Range>
  auto submit_map(multiproc::detail::Callbacks<OnOk, OnErr>& cb, F f, Range&& items,
                  MapOptions options) {
    using R = multiproc::detail::task_result_t<F, ArgsTuple>;
    std::vector<P> all;
    for (auto&& x : items) all.emplace_back(std::forward<decltype(x)>(x));
    const size_t n = all.size();
    size_t cs = options.chunksize;
    if (cs == 0) {  // Python's rule: about four chunks per worker
      const size_t per = static_cast<size_t>(client_->workers()) * 4;
      cs = std::max<size_t>(1, n / per + (n % per ? 1 : 0));
    }
    std::vector<std::string> chunks;
    std::vector<size_t> starts;
    for (size_t s = 0; s < n; s += cs) {
      chunks.emplace_back();
      multiproc::detail::encode_chunk_span(chunks.back(), all.data() + s, std::min(n, s + cs) - s);
      starts.push_back(s);
    }
    auto st = make_state<R>(n, std::move(cb), false);
    if (options.progress && n) st->progress.emplace(kStar ? "starmap" : "map", n);
    if (n) {
      client_->submit(detail::code_bytes<F, ArgsTuple, kStar>(f), std::move(chunks), 0,
                      std::make_shared<detail::CallsSink<R>>(st, std::move(starts), n));
    } else if (st->on_ready) {
      st->on_ready();
    }
    return MapResult<R>(st);
  }

  template <class F, class Range>
  auto imap_impl(F f, Range&& items, MapOptions options, bool ordered) {
    using ArgsTuple = typename detail::OneArgCall<F, Range>::ArgsTuple;
    using P = typename detail::OneArgCall<F, Range>::P;
    using R = multiproc::detail::task_result_t<F, ArgsTuple>;
    using V = multiproc::detail::value_of<R>;
    std::optional<size_t> total;
    if constexpr (std::ranges::sized_range<Range>) total = std::ranges::size(items);
    using View = std::views::all_t<Range>;
    struct Input {
      View view;
      std::ranges::iterator_t<View> it;
      bool started = false;
    };
    auto input = std::make_shared<Input>(Input{std::views::all(std::forward<Range>(items)), {}});
    const size_t cs = options.chunksize ? options.chunksize : 1;
    auto source = [input, cs](std::string& out, std::exception_ptr& error) -> size_t {
      std::vector<P> chunk;
      try {
        multiproc::detail::read_input_chunk(*input, chunk, cs);
      } catch (...) {
        error = std::current_exception();
      }
      if (!chunk.empty()) multiproc::detail::encode_chunk_items(out, chunk);
      return chunk.size();
    };
    auto st = std::make_shared<detail::IMapState<V>>();
    st->is_ordered = ordered;
    st->decode = &detail::decode_imap_chunk<R>;
    if (options.progress)
      st->progress.emplace(ordered ? "imap" : "imap_unordered", total.value_or(0));
    st->pool = client_.get();
    st->code = detail::code_bytes<F, ArgsTuple, false>(f);
    st->source = std::move(source);
    st->window = 2 * static_cast<size_t>(client_->workers()) + 2;
    client_->add_feed(st);
    return IMapResult<R>(st, client_);
  }

  std::shared_ptr<detail::PoolClient> client_;
};

// The worker loop (also what `--multiproc-worker` runs): serves the pool `name` until SIGTERM.
// Throws ConnectionError (after a log line) when the server stays unreachable for
// unreachable_timeout (`--unreachable-timeout S`; the program then exits with status 1).
void run_worker(const std::string& url, const std::string& name,
                std::chrono::duration<double> unreachable_timeout = std::chrono::seconds(10));

}  // namespace multiproc::redis
