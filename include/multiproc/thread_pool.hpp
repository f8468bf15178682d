// ThreadPool: Pool's API with threads of this process (CPython's multiprocessing.pool.ThreadPool,
// multiprocessing.dummy.Pool).
//
//   mp::ThreadPool tp(4);
//   int base = 10;
//   auto r = tp.apply_async([&](int x) { return base + x; }, 5);   r.get();   // 15
//   std::vector<int> ys = tp.map([&](int x) { return x * base; }, xs);
//   for (int y : tp.imap(f, std::views::iota(0))) ...        // lazy input, bounded memory
//
// Any callable is a task: capturing lambdas, std::function, function objects, member function
// pointers (with the object as first argument, as std::invoke takes it). Nothing is serialized:
// arguments are copied (or moved) into the task, results are moved out to the caller.
//
// Failures: a task's exception is rethrown by get()/next() as it was thrown (its own type, no
// RemoteError wrapping). A callback that throws is reported on stderr and otherwise ignored.
//
// Lifetime, as Pool: close() stops new submissions; join() (after close or terminate) waits for
// the submitted work and the threads. terminate() fails every call not yet started with BrokenPool
// and waits for the running ones to return (a thread cannot be stopped from outside). The
// destructor calls terminate(): tasks may refer to the caller's locals, so no thread outlives the
// pool. A forked child's copy (a global ThreadPool) has none of the parent's threads: every call on
// it throws ProcessError, and its destructor leaves the parent's threads alone.
#pragma once

#include <algorithm>
#include <atomic>
#include <deque>
#include <exception>
#include <functional>
#include <iterator>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <ranges>
#include <thread>
#include <tuple>
#include <type_traits>
#include <utility>
#include <variant>
#include <vector>

#include <multiproc/detail/future_state.hpp>
#include <multiproc/detail/next_iterator.hpp>
#include <multiproc/detail/pool_front.hpp>
#include <multiproc/detail/progress.hpp>
#include <multiproc/errors.hpp>
#include <multiproc/pool.hpp>
#include <multiproc/timeout.hpp>

namespace multiproc {

struct ThreadPoolOptions {
  unsigned processes = 0;               // threads; 0 = cpu_count()
  std::function<void()> initializer{};  // run by every thread when it starts (captures allowed)
};

namespace detail {

// Executor threads left to finish the submitted calls on their own (an executor destroyed in a
// done callback of its own future, or a thread that ended its own pool): the process's normal
// exit (exit(), a return from main) waits for them before it ends the pool workers, as Python
// joins its executors' threads at exit, so no submitted call is silently dropped. A thread that
// completes or starts an executor's calls does not wait (the calls may need it).
void orphan_begun();
void orphan_ended();
// Marks the threads that the exit-time wait must not block (their work is what it waits for).
inline thread_local bool t_executor_thread = false;

// The engine: a queue of closures and the threads that run them (src/futures/thread_pool.cpp).
// Owned through a std::shared_ptr: a thread that runs a task holds the core until it ends, so
// a task or callback that drops the last handle (the pool or executor destroyed in its own
// callback) leaves the core to that thread, which drains what a close() left and ends.
class ThreadPoolCore : public std::enable_shared_from_this<ThreadPoolCore> {
 public:
  struct Task {
    std::function<void()> run;                     // must not throw (results catch their own)
    std::function<void(std::exception_ptr)> fail;  // the task will never run
  };
  ThreadPoolCore(unsigned threads, std::function<void()> initializer);
  ~ThreadPoolCore();
  // Throws ProcessError once closed (Python's ValueError "Pool not running"); `internal` work of
  // a job already submitted (imap reading on) is still taken after close(), not after terminate().
  void submit(Task task, bool internal = false);
  void close();
  void terminate();
  // terminate() without its check that this process made the pool: for the destructors, which
  // check that first and must not throw. `warn_if_pending`: say on stderr that calls still
  // pending in a running pool are cancelled (the ThreadPool's destructor).
  void end_threads(bool warn_if_pending = false);
  void join();
  bool closed() const;
  bool terminated() const;
  unsigned threads() const { return n_; }
  size_t pending() const;
  // A copy inherited by a forked child: the threads are the parent's, not the child's.
  bool inherited() const { return made_in_ != fork_generation(); }
  // Throws ProcessError naming `call` (ThreadPool::map...) in such a copy: a call queued there
  // would never run, and a join would wait for threads the child does not have.
  void check_owner(const char* call) const;

 private:
  enum class State { running, closed, terminated };
  void loop();
  void join_threads();

  unsigned n_;
  std::function<void()> initializer_;
  mutable std::mutex mu_;
  std::condition_variable cv_;
  std::deque<Task> queue_;
  State state_ = State::running;
  size_t running_ = 0;
  std::vector<std::thread> threads_;
  std::mutex join_mu_;
  pid_t maker_pid_;
  uint32_t made_in_;  // the fork generation of the process that made it
};

template <class F, class Tuple>
using tp_apply_result_t = decltype(std::apply(
    [](auto&&... a) -> decltype(auto) { return std::invoke(std::declval<F&>(), a...); },
    std::declval<Tuple&>()));

// Any callable with these (decayed, stored) arguments.
template <class F, class... A>
concept thread_task = std::is_invocable_v<std::add_lvalue_reference_t<std::decay_t<F>>,
                                          std::add_lvalue_reference_t<std::decay_t<A>>...>;

template <class F, class... A>
using tp_result_t = std::invoke_result_t<F&, A&...>;

void report_callback_exception(const char* which) noexcept;

template <class V, class OnOk, class OnErr>
void tp_run_ok(Callbacks<OnOk, OnErr>& cb, V& v) noexcept {
  if constexpr (!std::is_same_v<OnOk, std::nullptr_t>) {
    try {
      if constexpr (std::is_invocable_v<OnOk&, V&>)
        cb.on_ok(v);
      else
        cb.on_ok();
    } catch (...) {
      report_callback_exception("callback");
    }
  } else {
    (void)cb;
    (void)v;
  }
}
template <class OnOk, class OnErr>
void tp_run_err(Callbacks<OnOk, OnErr>& cb, const std::exception_ptr& e) noexcept {
  if constexpr (!std::is_same_v<OnErr, std::nullptr_t>) {
    try {
      cb.on_err(e);
    } catch (...) {
      report_callback_exception("error_callback");
    }
  } else {
    (void)cb;
    (void)e;
  }
}

template <class V>
struct ThreadMapState {
  std::mutex mu;
  std::vector<std::optional<V>> values;
  std::map<size_t, std::exception_ptr> errors;
  size_t remaining_chunks = 0;
  size_t done_items = 0;
  std::optional<ProgressBar> progress;
};

// imap's state: the input is read by the pool's threads, chunk by chunk, while fewer than
// `window` chunks are running or waiting for the consumer.
template <class V>
struct ThreadIMapState {
  std::mutex mu;
  std::condition_variable cv;
  bool ordered = true;
  size_t window = 0;
  size_t max_readers = 0;
  size_t readers = 0;  // pool tasks currently reading / running chunks
  size_t chunks_read = 0;
  size_t buffered_chunks = 0;  // done, not yet fully taken by the consumer
  bool input_done = false;
  std::exception_ptr input_error;
  std::exception_ptr abandoned;
  size_t next_to_yield = 0;
  std::map<size_t, std::deque<Outcome<V>>> done_chunks;  // ordered
  std::deque<std::deque<Outcome<V>>> unordered;          // unordered
  size_t done_items = 0;
  std::optional<ProgressBar> progress;
  std::function<void()> start_reader;  // submits one more reader task to the pool
};

}  // namespace detail

// ThreadPool's apply_async result: AsyncResult's methods.
template <class R>
class [[nodiscard]] ThreadAsyncResult {
 public:
  using value_type = detail::value_of<R>;
  ThreadAsyncResult() = default;
  explicit ThreadAsyncResult(std::shared_ptr<detail::FutureState<value_type>> st)
      : st_(std::move(st)) {}

  // Waits at most `timeout`; throws TimeoutError if not ready by then, or the task's exception.
  R get(Timeout timeout = std::nullopt) const& {
    wait_or_throw(timeout);
    if constexpr (!std::is_void_v<R>) return st_->value();
  }
  // The only holder of a result gets the value moved out (a move-only value always is).
  R get(Timeout timeout = std::nullopt) && {
    wait_or_throw(timeout);
    if constexpr (!std::is_void_v<R>) {
      if constexpr (std::is_copy_constructible_v<R>)
        if (st_.use_count() != 1) return st_->value();
      return std::move(st_->value());
    }
  }
  bool wait(Timeout timeout = std::nullopt) const {
    check();
    return st_->wait(detail::Deadline::after(timeout));
  }
  bool ready() const { return st_ && st_->done(); }
  bool successful() const {
    if (!ready()) throw ProcessError("ThreadAsyncResult::successful(): the result is not ready");
    return !st_->has_error();
  }

 protected:
  void check() const {
    if (!st_) throw ProcessError("ThreadAsyncResult: empty (default-constructed)");
  }
  void wait_or_throw(const Timeout& timeout) const {
    check();
    if (!st_->wait(detail::Deadline::after(timeout)))
      throw TimeoutError("ThreadAsyncResult::get(): the result is not ready within the timeout");
    if (auto e = st_->error()) std::rethrow_exception(e);
  }
  std::shared_ptr<detail::FutureState<value_type>> st_;
};

template <class R>
class [[nodiscard]] ThreadMapResult : public ThreadAsyncResult<std::vector<detail::value_of<R>>> {
 public:
  using V = detail::value_of<R>;
  ThreadMapResult(std::shared_ptr<detail::FutureState<std::vector<V>>> st,
                  std::shared_ptr<detail::ThreadMapState<V>> map_st)
      : ThreadAsyncResult<std::vector<V>>(std::move(st)), map_st_(std::move(map_st)) {}

  // One Outcome per input item, in order; never throws a task's exception.
  std::vector<Outcome<V>> outcomes(Timeout timeout = std::nullopt) const {
    if (!this->wait(timeout))
      throw TimeoutError("ThreadMapResult::outcomes(): not ready within the timeout");
    std::lock_guard lk(map_st_->mu);
    const bool all_ok = !this->st_->has_error();
    return detail::map_outcomes<V>(map_st_->values.size(), map_st_->errors, [&](size_t i) -> V {
      return all_ok ? this->st_->value()[i] : *map_st_->values[i];
    });
  }
  size_t failures() const {
    std::lock_guard lk(map_st_->mu);
    return map_st_->errors.size();
  }

 private:
  std::shared_ptr<detail::ThreadMapState<V>> map_st_;
};

template <class R>
class ThreadIMapResult {
 public:
  using value_type = detail::value_of<R>;
  explicit ThreadIMapResult(std::shared_ptr<detail::ThreadIMapState<value_type>> st)
      : st_(std::move(st)) {}

  // The next result; std::nullopt once every input item has been answered. Throws the call's
  // exception at its position, the input range's exception where the input stopped, or
  // TimeoutError.
  std::optional<value_type> next(Timeout timeout = std::nullopt) {
    auto deadline = detail::Deadline::after(timeout);
    std::unique_lock lk(st_->mu);
    for (;;) {
      std::deque<Outcome<value_type>>* chunk = nullptr;
      if (st_->ordered) {
        auto it = st_->done_chunks.find(st_->next_to_yield);
        if (it != st_->done_chunks.end()) {
          if (it->second.empty()) {  // taken whole: the next chunk's turn
            st_->done_chunks.erase(it);
            ++st_->next_to_yield;
            --st_->buffered_chunks;
            restart_locked();
            continue;
          }
          chunk = &it->second;
        }
      } else {
        while (!st_->unordered.empty() && st_->unordered.front().empty()) {
          st_->unordered.pop_front();
          --st_->buffered_chunks;
          restart_locked();
        }
        if (!st_->unordered.empty()) chunk = &st_->unordered.front();
      }
      if (chunk) {
        Outcome<value_type> o = std::move(chunk->front());
        chunk->pop_front();
        if (!o.ok()) std::rethrow_exception(o.error());
        return std::move(const_cast<value_type&>(o.value()));
      }
      if (st_->abandoned) std::rethrow_exception(std::exchange(st_->abandoned, nullptr));
      const bool all_yielded = st_->ordered ? st_->next_to_yield >= st_->chunks_read
                                            : st_->readers == 0 && st_->buffered_chunks == 0;
      if (st_->input_done && st_->readers == 0 && all_yielded) {
        if (st_->input_error) std::rethrow_exception(std::exchange(st_->input_error, nullptr));
        if (st_->progress) st_->progress->finish(st_->done_items);
        return std::nullopt;
      }
      if (deadline.is_never())
        st_->cv.wait(lk);
      else if (st_->cv.wait_until(lk, *deadline.at) == std::cv_status::timeout &&
               deadline.expired())
        throw TimeoutError("ThreadIMapResult::next(): no result within the timeout");
    }
  }

  using iterator = detail::NextIterator<ThreadIMapResult>;
  iterator begin() { return iterator(this); }
  std::default_sentinel_t end() { return {}; }

 private:
  // The consumer freed room in the window: readers that stopped for it go on.
  void restart_locked() {
    while (!st_->input_done && st_->readers < st_->max_readers &&
           st_->readers + st_->buffered_chunks < st_->window) {
      ++st_->readers;
      st_->start_reader();
    }
  }
  std::shared_ptr<detail::ThreadIMapState<value_type>> st_;
};

// The public calls (apply, map, imap... and their async forms) are PoolFront's, shared with
// Pool; ThreadPool supplies how a call runs: as a closure on one of its threads.
class ThreadPool : public detail::PoolFront<ThreadPool> {
 public:
  ThreadPool() : ThreadPool(ThreadPoolOptions{}) {}
  // At least 1: ThreadPool(0) or a negative count throws ProcessError.
  explicit ThreadPool(int processes);
  explicit ThreadPool(ThreadPoolOptions options);
  ~ThreadPool();
  ThreadPool(ThreadPool&&) noexcept = default;
  ThreadPool& operator=(ThreadPool&&) = delete;

  // ---- lifetime ----
  void close();
  // After close(): waits until every submitted task is done and the threads have exited. After
  // terminate(): returns at once. Otherwise throws ProcessError.
  void join();
  void terminate();
  unsigned processes() const;

 private:
  friend class detail::PoolFront<ThreadPool>;
  template <class F>
  static constexpr bool accepts_task = !detail::is_callbacks_v<F>;

  template <class OnOk, class OnErr, class F, class... A>
  auto apply_impl(detail::Callbacks<OnOk, OnErr> cb, F&& f, A&&... args) {
    static_assert(std::is_invocable_v<std::decay_t<F>&, std::decay_t<A>&...>,
                  "ThreadPool::apply: the task cannot be called with these arguments");
    using Fn = std::decay_t<F>;
    using R = std::remove_cvref_t<detail::tp_result_t<Fn, std::decay_t<A>...>>;
    using V = detail::value_of<R>;
    auto st = std::make_shared<detail::FutureState<V>>();
    auto call = [st, cb = std::move(cb), f = Fn(std::forward<F>(f)),
                 args = std::tuple<std::decay_t<A>...>(std::forward<A>(args)...)]() mutable {
      st->set_running();
      std::optional<V> v;
      try {
        if constexpr (std::is_void_v<R>) {
          std::apply([&](auto&... a) { std::invoke(f, a...); }, args);
          v.emplace();
        } else {
          v.emplace(std::apply([&](auto&... a) -> R { return std::invoke(f, a...); }, args));
        }
      } catch (...) {
        auto e = std::current_exception();
        st->stage_error(e);
        {
          detail::FutureStateBase::InCallbacks in_callbacks(st.get());
          detail::tp_run_err(cb, e);
        }
        st->publish();
        return;
      }
      if (st->stage_value(std::move(*v))) {
        detail::FutureStateBase::InCallbacks in_callbacks(st.get());
        detail::tp_run_ok(cb, st->value());
      }
      st->publish();
    };
    core()->submit({std::move(call), [st](std::exception_ptr e) { st->set_error(e); }});
    return ThreadAsyncResult<R>(st);
  }

  template <bool kStar, class OnOk, class OnErr, class F, class Range>
  auto map_impl(detail::Callbacks<OnOk, OnErr> cb, F&& f, Range&& items, MapOptions options) {
    if constexpr (!kStar) {
      using Elem = std::remove_cvref_t<std::ranges::range_value_t<Range>>;
      static_assert(std::is_invocable_v<std::decay_t<F>&, Elem&>,
                    "ThreadPool::map: the task cannot be called with one item of the range");
    }
    return submit_map<kStar>(std::move(cb), std::forward<F>(f), std::forward<Range>(items),
                             options);
  }
  template <class F, class Range>
  auto imap_impl(F&& f, Range&& items, MapOptions options, bool ordered) {
    return submit_imap(std::forward<F>(f), std::forward<Range>(items), options, ordered);
  }

  template <class Fn, class Elem, bool kStar>
  static decltype(auto) call_one(Fn& f, Elem& e) {
    if constexpr (kStar)
      return std::apply([&](auto&... a) -> decltype(auto) { return std::invoke(f, a...); }, e);
    else
      return std::invoke(f, e);
  }

  template <bool kStar, class OnOk, class OnErr, class F, class Range>
  auto submit_map(detail::Callbacks<OnOk, OnErr> cb, F&& f, Range&& items, MapOptions options) {
    using Fn = std::decay_t<F>;
    using Elem = std::remove_cvref_t<std::ranges::range_value_t<Range>>;
    using R = decltype(call_one<Fn, Elem, kStar>(std::declval<Fn&>(), std::declval<Elem&>()));
    using V = detail::value_of<std::remove_cvref_t<R>>;
    // The items are copied (moved from an rvalue range): the tasks outlive this call.
    auto input = std::make_shared<std::vector<Elem>>();
    if constexpr (std::ranges::sized_range<Range>) input->reserve(std::ranges::size(items));
    for (auto&& x : items) input->emplace_back(std::forward<decltype(x)>(x));
    const size_t n = input->size();
    size_t cs = options.chunksize;
    if (cs == 0) {  // Python's rule: about four chunks per thread
      size_t per = static_cast<size_t>(processes()) * 4;
      cs = std::max<size_t>(1, n / per + (n % per ? 1 : 0));
    }
    auto st = std::make_shared<detail::FutureState<std::vector<V>>>();
    auto mst = std::make_shared<detail::ThreadMapState<V>>();
    mst->values.resize(n);
    mst->remaining_chunks = (n + cs - 1) / cs;
    if (options.progress) mst->progress.emplace(kStar ? "starmap" : "map", n);
    auto shared_f = std::make_shared<Fn>(std::forward<F>(f));
    auto shared_cb = std::make_shared<detail::Callbacks<OnOk, OnErr>>(std::move(cb));
    // The last chunk to finish (or the pool's end) completes the result.
    auto finish = [st, mst, shared_cb]() {
      // Called with no lock held, once.
      if (mst->progress) mst->progress->finish(mst->done_items);
      if (mst->errors.empty()) {
        std::vector<V> out;
        out.reserve(mst->values.size());
        for (auto& v : mst->values) out.push_back(std::move(*v));
        if (st->stage_value(std::move(out))) {
          detail::FutureStateBase::InCallbacks in_callbacks(st.get());
          detail::tp_run_ok(*shared_cb, st->value());
        }
        st->publish();
      } else {
        auto e = mst->errors.begin()->second;  // the first failing item, as Python reports
        st->stage_error(e);
        {
          detail::FutureStateBase::InCallbacks in_callbacks(st.get());
          detail::tp_run_err(*shared_cb, e);
        }
        st->publish();
      }
    };
    auto chunk_ended = [mst, finish](size_t count) {
      std::unique_lock lk(mst->mu);
      mst->done_items += count;
      if (mst->progress) mst->progress->update(mst->done_items);
      if (--mst->remaining_chunks == 0) {
        lk.unlock();
        finish();
      }
    };
    if (n == 0) {
      finish();
      return ThreadMapResult<std::remove_cvref_t<R>>(st, mst);
    }
    for (size_t s = 0; s < n; s += cs) {
      const size_t e = std::min(n, s + cs);
      auto run = [input, shared_f, mst, chunk_ended, s, e]() {
        for (size_t i = s; i < e; ++i) {
          try {
            if constexpr (std::is_void_v<R>) {
              call_one<Fn, Elem, kStar>(*shared_f, (*input)[i]);
              std::lock_guard lk(mst->mu);
              mst->values[i].emplace();
            } else {
              V v = call_one<Fn, Elem, kStar>(*shared_f, (*input)[i]);
              std::lock_guard lk(mst->mu);
              mst->values[i].emplace(std::move(v));
            }
          } catch (...) {
            std::lock_guard lk(mst->mu);
            mst->errors.emplace(i, std::current_exception());
          }
        }
        chunk_ended(e - s);
      };
      auto fail = [mst, chunk_ended, s, e](std::exception_ptr err) {
        {
          std::lock_guard lk(mst->mu);
          for (size_t i = s; i < e; ++i) mst->errors.emplace(i, err);
        }
        chunk_ended(e - s);
      };
      core()->submit({std::move(run), std::move(fail)});
    }
    return ThreadMapResult<std::remove_cvref_t<R>>(st, mst);
  }

  template <class F, class Range>
  auto submit_imap(F&& f, Range&& items, MapOptions options, bool ordered) {
    using Fn = std::decay_t<F>;
    using Elem = std::remove_cvref_t<std::ranges::range_value_t<Range>>;
    static_assert(std::is_invocable_v<Fn&, Elem&>,
                  "ThreadPool::imap: the task cannot be called with one item of the range");
    using R = std::remove_cvref_t<std::invoke_result_t<Fn&, Elem&>>;
    using V = detail::value_of<R>;
    using View = std::views::all_t<Range>;
    struct Input {
      Input(View v, Fn fn) : view(std::move(v)), f(std::move(fn)) {}
      std::mutex mu;
      View view;
      std::ranges::iterator_t<View> it{};
      bool started = false;
      Fn f;
    };
    auto input = std::make_shared<Input>(std::views::all(std::forward<Range>(items)),
                                         Fn(std::forward<F>(f)));
    auto st = std::make_shared<detail::ThreadIMapState<V>>();
    st->ordered = ordered;
    st->max_readers = processes();
    st->window = 2 * static_cast<size_t>(processes()) + 2;
    std::optional<size_t> total;
    if constexpr (std::ranges::sized_range<Range>) total = std::ranges::size(input->view);
    if (options.progress)
      st->progress.emplace(ordered ? "imap" : "imap_unordered", total.value_or(0));
    const size_t cs = options.chunksize ? options.chunksize : 1;
    std::weak_ptr<detail::ThreadPoolCore> weak_core = core();
    std::weak_ptr<detail::ThreadIMapState<V>> weak_st = st;
    // One reader: takes the next chunk of the input, runs it, hands it over, and goes on while the
    // window has room (always once the pool is closed, so that join() sees the work done).
    auto reader = std::make_shared<std::function<void()>>();
    *reader = [input, weak_st, weak_core, cs]() {
      auto st = weak_st.lock();
      if (!st) return;
      for (;;) {
        std::vector<Elem> chunk;
        size_t index = 0;
        {
          std::lock_guard in(input->mu);
          {
            std::lock_guard lk(st->mu);
            if (st->input_done) break;
            index = st->chunks_read;
          }
          std::exception_ptr failed;
          try {
            detail::read_input_chunk(*input, chunk, cs);
          } catch (...) {
            failed = std::current_exception();
          }
          std::lock_guard lk(st->mu);
          if (failed) {
            st->input_error = failed;
            st->input_done = true;
          } else if (chunk.size() < cs) {
            st->input_done = true;
          }
          if (chunk.empty()) break;
          ++st->chunks_read;
        }
        std::deque<Outcome<V>> outs;
        for (auto& x : chunk) {
          try {
            if constexpr (std::is_void_v<R>) {
              std::invoke(input->f, x);
              outs.emplace_back(V{});
            } else {
              outs.emplace_back(std::invoke(input->f, x));
            }
          } catch (...) {
            outs.emplace_back(std::current_exception());
          }
        }
        std::lock_guard lk(st->mu);
        st->done_items += outs.size();
        if (st->progress) st->progress->update(st->done_items);
        ++st->buffered_chunks;
        if (st->ordered)
          st->done_chunks.emplace(index, std::move(outs));
        else
          st->unordered.push_back(std::move(outs));
        st->cv.notify_all();
        auto c = weak_core.lock();
        // After terminate() nothing more is read: an endless input would keep this thread, and
        // terminate()'s join of the threads, going for ever. The consumer is told why.
        if (!c || c->terminated()) {
          if (!st->abandoned)
            st->abandoned = std::make_exception_ptr(
                BrokenPool("ThreadPool terminated before this imap's input was read"));
          st->input_done = true;
          break;
        }
        if (!c->closed() && st->readers + st->buffered_chunks > st->window) break;
      }
      std::lock_guard lk(st->mu);
      --st->readers;
      st->cv.notify_all();
    };
    st->start_reader = [weak_core, weak_st, reader]() {
      auto c = weak_core.lock();
      auto fail = [weak_st](std::exception_ptr e) {
        if (auto s = weak_st.lock()) {
          std::lock_guard lk(s->mu);
          if (!s->abandoned) s->abandoned = e;
          s->input_done = true;
          --s->readers;
          s->cv.notify_all();
        }
      };
      if (!c) return;
      try {
        c->submit({*reader, fail}, /*internal=*/true);
      } catch (...) {
        // Called under the state's lock: record directly.
        if (auto s = weak_st.lock()) {
          if (!s->abandoned) s->abandoned = std::current_exception();
          s->input_done = true;
          --s->readers;
        }
      }
    };
    {
      std::lock_guard lk(st->mu);
      if (core()->closed()) throw ProcessError("ThreadPool: not running (closed or terminated)");
      for (size_t i = 0; i < st->max_readers && i < st->window; ++i) {
        ++st->readers;
        st->start_reader();
      }
    }
    return ThreadIMapResult<R>(st);
  }

  const std::shared_ptr<detail::ThreadPoolCore>& core() const {
    if (!core_) throw ProcessError("this ThreadPool was moved from");
    return core_;
  }
  std::shared_ptr<detail::ThreadPoolCore> core_;
};

}  // namespace multiproc
