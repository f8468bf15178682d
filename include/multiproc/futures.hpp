// concurrent.futures for C++: ProcessPoolExecutor, ThreadPoolExecutor, Future<R>, as_completed()
// and wait(), plus what a C++ user expects of a future: then(), when_all()/when_any(), share()
// (a SharedFuture, with std::shared_future's calls, that converts to one), and co_await from a
// C++20 coroutine.
//
//   mp::ProcessPoolExecutor ex(mp::ProcessPoolExecutorOptions{.max_workers = 4});
//   mp::Future<int> f = ex.submit(square, 7);          // f.result() == 49
//   auto g = f.then([](int v) { return v + 1; });     // g.result() == 50
//   for (auto& done : mp::as_completed(futures, 10s)) use(done.result());
//   auto [done, not_done] = mp::wait(futures, 5s, mp::FIRST_EXCEPTION);
//
// ProcessPoolExecutor runs on a Pool, so its tasks follow Pool's rules (free functions or
// capture-free lambdas, transferable arguments and results) and it heals as Pool does: a worker
// that dies fails only the futures it was running (WorkerLost) and a replacement starts, where
// Python's executor becomes BrokenProcessPool for good. ThreadPoolExecutor runs any callable on
// threads of this process; its futures rethrow a task's exception as it was thrown.
//
// Calls wait in the executor until a worker is about to be free (at most max_workers + 1 are
// handed to the pool), so cancel() works on every call that has not started, as in Python.
//
// An executor a forked child inherits (a global) is the parent's: its threads and workers are not
// the child's, so every call on the copy (submit, map, shutdown...) throws ProcessError.
#pragma once

#include <algorithm>
#include <chrono>
#include <concepts>
#include <condition_variable>
#include <coroutine>
#include <deque>
#include <exception>
#include <functional>
#include <future>
#include <memory>
#include <mutex>
#include <optional>
#include <ranges>
#include <thread>
#include <tuple>
#include <type_traits>
#include <utility>
#include <vector>

#include <multiproc/context.hpp>
#include <multiproc/detail/future_state.hpp>
#include <multiproc/detail/next_iterator.hpp>
#include <multiproc/errors.hpp>
#include <multiproc/pool.hpp>
#include <multiproc/thread_pool.hpp>
#include <multiproc/timeout.hpp>

namespace multiproc {

// result() of a cancelled future (Python's concurrent.futures.CancelledError).
class CancelledError : public ProcessError {
 public:
  using ProcessError::ProcessError;
};

template <class R>
class SharedFuture;

template <class R>
class Future {
 public:
  using value_type = detail::value_of<R>;
  using State = detail::FutureState<value_type>;

  Future() = default;
  explicit Future(std::shared_ptr<State> st) : st_(std::move(st)) {}

  // The call's value: waits at most `timeout` (TimeoutError), throws CancelledError if it was
  // cancelled, or the call's exception.
  R result(Timeout timeout = std::nullopt) const {
    wait_or_throw(timeout, "result");
    if (auto e = state().error()) std::rethrow_exception(e);
    if constexpr (!std::is_void_v<R>) return state().value();
  }
  // The call's exception (null if it returned): waits like result().
  std::exception_ptr exception(Timeout timeout = std::nullopt) const {
    wait_or_throw(timeout, "exception");
    return state().error();
  }
  bool done() const { return state().done(); }
  bool running() const { return state().status() == State::Status::running; }
  bool cancelled() const { return state().status() == State::Status::cancelled; }
  // Cancels a call that has not started; returns whether the future is now cancelled.
  bool cancel() { return state().cancel(); }
  // Waits at most `timeout`; returns done().
  bool wait(Timeout timeout = std::nullopt) const {
    return state().wait(detail::Deadline::after(timeout));
  }
  // cb(future) runs once the future is done: at once in this thread if it already is, otherwise
  // in the thread that completes it (keep it short). An exception from cb is reported on stderr.
  template <class Cb>
  void add_done_callback(Cb cb) const {
    state().on_done([self = *this, cb = std::move(cb)]() mutable {
      try {
        cb(self);
      } catch (...) {
        detail::report_callback_exception("add_done_callback");
      }
    });
  }

  // ---- what C++ adds ----
  // A future of f(value) (f() for a void call), run in the thread that completes this one; this
  // future's exception (or cancellation, as CancelledError) passes on without calling f.
  template <class F>
  auto then(F f) const {
    using U = std::remove_cvref_t<decltype(call_then(f))>;
    auto next = std::make_shared<detail::FutureState<detail::value_of<U>>>();
    next->set_running();
    next->set_owner(state().owner());  // completed by the thread that completes this one
    state().on_done([self = *this, next, f = std::move(f)]() mutable {
      std::exception_ptr e = self.st_->error();
      if (!e && self.cancelled())
        e = std::make_exception_ptr(CancelledError("Future::then(): the future was cancelled"));
      if (e) {
        next->set_error(e);
        return;
      }
      try {
        if constexpr (std::is_void_v<U>) {
          self.call_then(f);
          next->set_value({});
        } else {
          next->set_value(self.call_then(f));
        }
      } catch (...) {
        next->set_error(std::current_exception());
      }
    });
    return Future<U>(next);
  }
  // A copyable handle with std::shared_future<R>'s calls (get, wait, wait_for, wait_until,
  // valid) that converts to a std::shared_future<R> (see SharedFuture).
  SharedFuture<R> share() const {
    state();  // an empty Future has nothing to share
    return SharedFuture<R>(*this);
  }
  // The standard type itself, for code written against it. Its waits are the standard library's:
  // unlike share()'s, they cannot tell a done callback that waits for itself (it waits for ever).
  operator std::shared_future<R>() const {  // NOLINT: implicit on purpose
    auto promise = std::make_shared<std::promise<R>>();
    std::shared_future<R> sf = promise->get_future().share();
    add_done_callback([promise](const Future& f) {
      try {
        if constexpr (std::is_void_v<R>) {
          f.result();
          promise->set_value();
        } else {
          promise->set_value(f.result());
        }
      } catch (...) {
        promise->set_exception(std::current_exception());
      }
    });
    return sf;
  }

  // co_await future: suspends the coroutine until the future is done, resumes it in the thread
  // that completes the future (or at once), and yields result().
  auto operator co_await() const {
    struct Awaiter {
      Future f;
      bool await_ready() const { return f.done(); }
      void await_suspend(std::coroutine_handle<> h) const {
        f.state().on_done([h] { h.resume(); });
      }
      R await_resume() const { return f.result(); }
    };
    return Awaiter{*this};
  }

  bool valid() const { return st_ != nullptr; }
  // (internal) the state, for wait() and as_completed().
  const std::shared_ptr<State>& shared_state() const { return st_; }

 private:
  template <class F>
  decltype(auto) call_then(F& f) const {
    if constexpr (std::is_void_v<R>)
      return f();
    else
      return f(st_->value());
  }
  State& state() const {
    if (!st_) throw ProcessError("Future: empty (default-constructed, not from an executor)");
    return *st_;
  }
  void wait_or_throw(const Timeout& timeout, const char* what) const {
    if (!state().wait(detail::Deadline::after(timeout)))
      throw TimeoutError(std::string("Future::") + what + "(): not done within the timeout");
    if (cancelled()) throw CancelledError(std::string("Future::") + what + "(): cancelled");
  }
  friend class SharedFuture<R>;
  std::shared_ptr<State> st_;
};

// What Future<R>::share() returns: std::shared_future<R>'s calls on the future's own state, so
// that get() and wait() recognise what Future::result() does: in a done callback of a
// ProcessPoolExecutor's future, a wait without a timeout for a call of that executor that only
// this thread could complete throws ProcessError instead of waiting for ever. A std::shared_future
// cannot do that (its wait is the standard library's, fed by a promise that the waiting thread
// itself would have to fulfil): SharedFuture converts to one where the standard type is needed.
template <class R>
class SharedFuture {
 public:
  SharedFuture() = default;
  explicit SharedFuture(Future<R> f) : f_(std::move(f)) {}

  // std::shared_future<R>::get(): the value (a const reference to it; void for a void call),
  // the call's exception, or CancelledError.
  std::conditional_t<std::is_void_v<R>, void, const detail::value_of<R>&> get() const {
    f_.wait_or_throw(std::nullopt, "get");
    if (auto e = f_.state().error()) std::rethrow_exception(e);
    if constexpr (!std::is_void_v<R>) return f_.st_->value();
  }
  void wait() const { (void)f_.wait(); }
  template <class Rep, class Period>
  std::future_status wait_for(const std::chrono::duration<Rep, Period>& d) const {
    return f_.wait(std::chrono::duration<double>(d)) ? std::future_status::ready
                                                     : std::future_status::timeout;
  }
  template <class Clock, class Duration>
  std::future_status wait_until(const std::chrono::time_point<Clock, Duration>& t) const {
    auto left = t - Clock::now();
    return wait_for(left < left.zero() ? left.zero() : left);
  }
  bool valid() const { return f_.valid(); }

  operator std::shared_future<R>() const { return f_; }  // NOLINT: implicit on purpose
  const Future<R>& future() const { return f_; }

 private:
  Future<R> f_;
};

// ---- module functions
// ----------------------------------------------------------------------------

enum WaitWhen { FIRST_COMPLETED, FIRST_EXCEPTION, ALL_COMPLETED };

template <class R>
struct WaitResult {
  std::vector<Future<R>> done;
  std::vector<Future<R>> not_done;
};

namespace detail {
// Counts completions of a set of futures for wait() and as_completed().
struct Completions {
  std::mutex mu;
  std::condition_variable cv;
  std::deque<size_t> order;  // indexes, in the order they completed
  size_t failed = 0;
};
// An empty Future (default-constructed or moved from) has no state to wait on: a caller's mistake.
template <class R>
void require_valid(const std::vector<Future<R>>& fs, const char* what) {
  for (size_t i = 0; i < fs.size(); ++i)
    if (!fs[i].valid())
      throw ProcessError(std::string(what) + ": future " + std::to_string(i) +
                         " is empty (default-constructed or moved from, not from an executor)");
}
template <class R>
std::shared_ptr<Completions> watch(const std::vector<Future<R>>& fs, const char* what) {
  require_valid(fs, what);
  auto c = std::make_shared<Completions>();
  for (size_t i = 0; i < fs.size(); ++i) {
    fs[i].shared_state()->on_done([c, i, st = std::weak_ptr(fs[i].shared_state())] {
      auto s = st.lock();
      std::lock_guard lk(c->mu);
      c->order.push_back(i);
      if (s && s->has_error()) ++c->failed;
      c->cv.notify_all();
    });
  }
  return c;
}
// wait() / as_completed() without a timeout in a done callback: throws ProcessError where only
// this thread could complete what they wait for - any future not done (`any_will_do` false:
// every one is needed), or every one not done (true: the first to complete will do).
template <class R>
void check_can_wait(const std::vector<Future<R>>& fs, bool any_will_do, const char* what) {
  size_t not_done = 0, blocked = 0;
  for (const auto& f : fs) {
    if (f.done()) continue;
    ++not_done;
    if (f.shared_state()->needs_this_thread()) ++blocked;
  }
  if (blocked > 0 && (!any_will_do || blocked == not_done))
    FutureStateBase::throw_waits_for_itself(what);
}
}  // namespace detail

// Python's concurrent.futures.wait(): returns when `when` is met or the timeout passes (no
// TimeoutError: what is not done is in not_done).
template <class R>
WaitResult<R> wait(const std::vector<Future<R>>& futures, Timeout timeout = std::nullopt,
                   WaitWhen when = ALL_COMPLETED) {
  auto deadline = detail::Deadline::after(timeout);
  auto c = detail::watch(futures, "wait()");
  if (deadline.is_never()) detail::check_can_wait(futures, when != ALL_COMPLETED, "wait()");
  {
    std::unique_lock lk(c->mu);
    auto met = [&] {
      if (c->order.size() == futures.size()) return true;
      if (when == FIRST_COMPLETED) return !c->order.empty();
      if (when == FIRST_EXCEPTION) return c->failed > 0;
      return false;
    };
    if (deadline.is_never())
      c->cv.wait(lk, met);
    else
      c->cv.wait_until(lk, *deadline.at, met);
  }
  WaitResult<R> out;
  for (const auto& f : futures) (f.done() ? out.done : out.not_done).push_back(f);
  return out;
}

// Python's concurrent.futures.as_completed(): the futures as they complete (those already done
// first); iterating past the deadline with some not done throws TimeoutError.
template <class R>
class AsCompleted {
 public:
  AsCompleted(std::vector<Future<R>> futures, Timeout timeout)
      : futures_(std::move(futures)),
        deadline_(detail::Deadline::after(timeout)),
        c_(detail::watch(futures_, "as_completed()")) {}

  std::optional<Future<R>> next() {
    if (yielded_ == futures_.size()) return std::nullopt;
    if (deadline_.is_never()) {
      bool none_yet;
      {
        std::lock_guard lk(c_->mu);
        none_yet = c_->order.empty();
      }
      if (none_yet) detail::check_can_wait(futures_, true, "as_completed()");
    }
    std::unique_lock lk(c_->mu);
    auto ready = [&] { return !c_->order.empty(); };
    if (deadline_.is_never())
      c_->cv.wait(lk, ready);
    else if (!c_->cv.wait_until(lk, *deadline_.at, ready))
      throw TimeoutError("as_completed(): " + std::to_string(futures_.size() - yielded_) + " of " +
                         std::to_string(futures_.size()) + " futures not done within the timeout");
    size_t i = c_->order.front();
    c_->order.pop_front();
    ++yielded_;
    return futures_[i];
  }

  using iterator = detail::NextIterator<AsCompleted, true>;
  iterator begin() { return iterator(this); }
  std::default_sentinel_t end() { return {}; }

 private:
  std::vector<Future<R>> futures_;
  detail::Deadline deadline_;
  std::shared_ptr<detail::Completions> c_;
  size_t yielded_ = 0;
};

template <class R>
AsCompleted<R> as_completed(std::vector<Future<R>> futures, Timeout timeout = std::nullopt) {
  // Duplicates are yielded once, as in Python.
  std::vector<Future<R>> unique;
  for (auto& f : futures)
    if (std::none_of(unique.begin(), unique.end(),
                     [&](const Future<R>& u) { return u.shared_state() == f.shared_state(); }))
      unique.push_back(std::move(f));
  return AsCompleted<R>(std::move(unique), timeout);
}

// A future of every value, in order; fails with the first exception (in order of the futures).
template <class R>
Future<std::vector<detail::value_of<R>>> when_all(std::vector<Future<R>> futures) {
  using V = detail::value_of<R>;
  detail::require_valid(futures, "when_all()");
  auto st = std::make_shared<detail::FutureState<std::vector<V>>>();
  st->set_running();
  // Completed by the thread that completes the last of them: it needs an executor's thread as
  // soon as one of them does (t_completing_executor).
  for (const auto& f : futures)
    if (f.shared_state()->owner()) {
      st->set_owner(f.shared_state()->owner());
      break;
    }
  auto left = std::make_shared<std::atomic<size_t>>(futures.size());
  auto all = std::make_shared<std::vector<Future<R>>>(std::move(futures));
  auto finish = [st, all] {
    std::vector<V> out;
    out.reserve(all->size());
    try {
      for (auto& f : *all) {
        if constexpr (std::is_void_v<R>) {
          f.result();
          out.emplace_back();
        } else {
          out.push_back(f.result());
        }
      }
    } catch (...) {
      st->set_error(std::current_exception());
      return;
    }
    st->set_value(std::move(out));
  };
  if (all->empty()) finish();
  for (auto& f : *all)
    f.shared_state()->on_done([left, finish] {
      if (left->fetch_sub(1) == 1) finish();
    });
  return Future<std::vector<V>>(st);
}

// A future of the index of the first future to complete (-1 for none given: it never completes).
template <class R>
Future<size_t> when_any(const std::vector<Future<R>>& futures) {
  detail::require_valid(futures, "when_any()");
  auto st = std::make_shared<detail::FutureState<size_t>>();
  st->set_running();
  // It needs an executor's thread only if every one of them does.
  if (!futures.empty()) {
    const void* owner = futures[0].shared_state()->owner();
    for (const auto& f : futures)
      if (f.shared_state()->owner() != owner) owner = nullptr;
    st->set_owner(owner);
  }
  for (size_t i = 0; i < futures.size(); ++i)
    futures[i].shared_state()->on_done([st, i] { st->set_value(i); });
  return Future<size_t>(st);
}

// ---- executors
// -----------------------------------------------------------------------------------

// Executor::map's options: the whole map's deadline (from the call, as Python), and how many
// calls travel together (ProcessPoolExecutor, one input range).
struct ExecutorMapOptions {
  Timeout timeout{};
  size_t chunksize = 1;
};

// Executor::map's results, in input order: next() waits at most until the map's deadline
// (TimeoutError), throws a call's exception at its position.
template <class R>
class ExecutorMapResult {
 public:
  using value_type = detail::value_of<R>;
  using Next = std::function<std::optional<value_type>(const detail::Deadline&)>;
  ExecutorMapResult(Next next, detail::Deadline deadline)
      : next_(std::move(next)), deadline_(deadline) {}

  std::optional<value_type> next() { return next_(deadline_); }

  using iterator = detail::NextIterator<ExecutorMapResult>;
  iterator begin() { return iterator(this); }
  std::default_sentinel_t end() { return {}; }

 private:
  Next next_;
  detail::Deadline deadline_;
};

namespace detail {
inline std::chrono::duration<double> remaining(const Deadline& d) {
  if (d.is_never()) return kForeverTimeout;
  return std::max(std::chrono::duration<double>(0),
                  std::chrono::duration<double>(*d.at - Deadline::Clock::now()));
}

// Splits (f, ranges..., [ExecutorMapOptions]) and zips the ranges into argument tuples (the
// shortest range ends the map, as Python's zip).
template <class... A>
constexpr bool last_is_map_options() {
  if constexpr (sizeof...(A) == 0)
    return false;
  else
    return std::is_same_v<
        std::remove_cvref_t<std::tuple_element_t<sizeof...(A) - 1, std::tuple<A...>>>,
        ExecutorMapOptions>;
}
template <class... Ranges>
auto zip_ranges(Ranges&&... rs) {
  using Tuple = std::tuple<std::remove_cvref_t<std::ranges::range_value_t<Ranges>>...>;
  std::vector<Tuple> out;
  auto its = std::make_tuple(std::ranges::begin(rs)...);
  auto ends = std::make_tuple(std::ranges::end(rs)...);
  auto any_end = [&]<size_t... I>(std::index_sequence<I...>) {
    return ((std::get<I>(its) == std::get<I>(ends)) || ...);
  };
  auto take = [&]<size_t... I>(std::index_sequence<I...>) {
    out.emplace_back(*std::get<I>(its)...);
    (++std::get<I>(its), ...);
  };
  constexpr auto seq = std::index_sequence_for<Ranges...>{};
  while (!any_end(seq)) take(seq);
  return out;
}

template <class D, class F, class Tuple>
struct submit_result;
template <class D, class F, class... E>
struct submit_result<D, F, std::tuple<E...>> {
  using type = decltype(std::declval<D&>().submit(std::declval<F&>(), std::declval<E&>()...));
};

// What both executors share: futures submitted, map over submit(), shutdown bookkeeping.
template <class Derived>
class ExecutorFront {
 public:
  // Python's Executor.map(fn, *iterables, timeout, chunksize): every call is submitted now; the
  // results come in input order. The last argument may be ExecutorMapOptions.
  template <class F, class... A>
  auto map(F f, A&&... args) {
    if constexpr (last_is_map_options<A...>()) {
      auto all = std::forward_as_tuple(std::forward<A>(args)...);
      ExecutorMapOptions options = std::get<sizeof...(A) - 1>(all);
      return [&]<size_t... I>(std::index_sequence<I...>) {
        return self().map_impl(f, options, std::get<I>(all)...);
      }
      (std::make_index_sequence<sizeof...(A) - 1>{});
    } else {
      return self().map_impl(f, ExecutorMapOptions{}, std::forward<A>(args)...);
    }
  }

 protected:
  template <class F, class... Ranges>
  auto map_by_submit(F f, const ExecutorMapOptions& options, Ranges&&... ranges) {
    auto deadline = Deadline::after(options.timeout);
    auto tuples = zip_ranges(std::forward<Ranges>(ranges)...);
    using R = typename submit_result<Derived, F, typename decltype(tuples)::value_type>::type;
    using Value = typename R::value_type;
    using Raw = std::remove_cvref_t<decltype(std::declval<R>().result())>;
    auto futures = std::make_shared<std::deque<R>>();
    for (auto& t : tuples)
      futures->push_back(std::apply([&](auto&... a) { return self().submit(f, a...); }, t));
    return ExecutorMapResult<Raw>(
        [futures](const Deadline& d) -> std::optional<Value> {
          if (futures->empty()) return std::nullopt;
          R fut = std::move(futures->front());
          futures->pop_front();
          try {
            if constexpr (std::is_void_v<Raw>) {
              fut.result(remaining(d));
              return Value{};
            } else {
              return fut.result(remaining(d));
            }
          } catch (const TimeoutError&) {
            // As Python: a timed-out map cancels the calls not yet started.
            fut.cancel();
            for (auto& rest : *futures) rest.cancel();
            futures->clear();
            throw;
          }
        },
        deadline);
  }
  // Remembers a pending future for shutdown(cancel_futures=true).
  void track(std::shared_ptr<FutureStateBase> st) {
    std::lock_guard lk(track_mu_);
    if (tracked_.size() > 64 && ++since_prune_ > tracked_.size()) {
      std::erase_if(tracked_, [](const auto& w) {
        auto s = w.lock();
        return !s || s->done();
      });
      since_prune_ = 0;
    }
    tracked_.push_back(std::move(st));
  }
  void cancel_tracked() {
    std::vector<std::weak_ptr<FutureStateBase>> all;
    {
      std::lock_guard lk(track_mu_);
      all.swap(tracked_);
    }
    for (auto& w : all)
      if (auto s = w.lock()) s->cancel();
  }

 private:
  Derived& self() { return static_cast<Derived&>(*this); }
  std::mutex track_mu_;
  std::vector<std::weak_ptr<FutureStateBase>> tracked_;
  size_t since_prune_ = 0;
};
}  // namespace detail

struct ThreadPoolExecutorOptions {
  unsigned max_workers = 0;             // 0 = min(32, cpu_count() + 4), as Python
  std::function<void()> initializer{};  // run by every thread when it starts
};

class ThreadPoolExecutor : public detail::ExecutorFront<ThreadPoolExecutor> {
 public:
  ThreadPoolExecutor() : ThreadPoolExecutor(ThreadPoolExecutorOptions{}) {}
  explicit ThreadPoolExecutor(unsigned max_workers)
      : ThreadPoolExecutor(ThreadPoolExecutorOptions{.max_workers = max_workers}) {}
  explicit ThreadPoolExecutor(ThreadPoolExecutorOptions options);
  // shutdown(wait=true), as leaving Python's `with` block.
  ~ThreadPoolExecutor();
  ThreadPoolExecutor(const ThreadPoolExecutor&) = delete;
  ThreadPoolExecutor& operator=(const ThreadPoolExecutor&) = delete;

  template <class F, class... A>
  requires detail::thread_task<F, A...>
  auto submit(F&& f, A&&... args) {
    using Fn = std::decay_t<F>;
    using R = std::remove_cvref_t<std::invoke_result_t<Fn&, std::decay_t<A>&...>>;
    using V = detail::value_of<R>;
    auto st = std::make_shared<detail::FutureState<V>>();
    auto run = [st, f = Fn(std::forward<F>(f)),
                args = std::tuple<std::decay_t<A>...>(std::forward<A>(args)...)]() mutable {
      if (!st->set_running()) return;  // cancelled while it waited
      try {
        if constexpr (std::is_void_v<R>) {
          std::apply([&](auto&... a) { std::invoke(f, a...); }, args);
          st->set_value({});
        } else {
          st->set_value(std::apply([&](auto&... a) -> R { return std::invoke(f, a...); }, args));
        }
      } catch (...) {
        st->set_error(std::current_exception());
      }
    };
    submit_task({std::move(run), [st](std::exception_ptr e) { st->set_error(e); }});
    track(st);
    return Future<R>(st);
  }

  // Python's shutdown(wait, cancel_futures): no more submissions; cancel_futures cancels every
  // call not started; wait waits for the others.
  void shutdown(bool wait = true, bool cancel_futures = false);
  unsigned max_workers() const { return core_->threads(); }

 private:
  friend class detail::ExecutorFront<ThreadPoolExecutor>;
  template <class F, class... Ranges>
  auto map_impl(F f, const ExecutorMapOptions& options, Ranges&&... ranges) {
    return this->map_by_submit(f, options, std::forward<Ranges>(ranges)...);
  }
  void submit_task(detail::ThreadPoolCore::Task task);
  std::shared_ptr<detail::ThreadPoolCore> core_;
  std::mutex shutdown_mu_;
};

struct ProcessPoolExecutorOptions {
  unsigned max_workers = 0;             // 0 = cpu_count()
  std::optional<Context> mp_context{};  // start method (default: the global one)
  Initializer initializer{};            // run by every worker when it starts
  uint64_t max_tasks_per_child = 0;     // 0 = workers live as long as the executor
};

namespace detail {
// A ProcessPoolExecutor's engine (src/futures/futures.cpp): its pool, the calls waiting to be
// handed to it, and the manager thread that hands them over. The executor owns it through a
// std::shared_ptr, and the code that completes a call holds it while it runs the call's done
// callbacks: a callback may destroy the executor, and the engine must outlive what that thread
// still does with it. The executor's destructor run by one of the engine's own threads (a done
// callback) cannot wait for that thread: it leaves the engine to itself (a reference the engine
// holds to itself), and the manager thread ends the pool and frees the engine once every call has
// finished, as Python's manager thread does when its executor is dropped.
class ProcessExecutorCore : public std::enable_shared_from_this<ProcessExecutorCore> {
 public:
  struct Call {
    std::function<bool(Pool&)> start;  // false: nothing handed to the pool
    std::function<void(std::exception_ptr)> fail;
  };
  ProcessExecutorCore(unsigned max_workers, PoolOptions pool_options);
  ~ProcessExecutorCore();
  ProcessExecutorCore(const ProcessExecutorCore&) = delete;
  ProcessExecutorCore& operator=(const ProcessExecutorCore&) = delete;
  // Starts the manager thread (once a std::shared_ptr owns the engine).
  void start();

  void enqueue(Call call);
  void call_finished();
  // No more calls (shutdown(), the destructor).
  void stop_taking();
  bool taking() const;
  // shutdown(wait=true) from a thread that is not the engine's: waits for every call, then ends
  // the manager thread and the pool.
  void finish();
  // The destructor in one of the engine's own threads: see the class comment.
  void leave_to_itself();
  // terminate_workers()/kill_workers(): the manager stops handing calls to the pool, and once
  // joined (unless this is its thread) has failed what it had not handed over.
  void stop_manager();
  void join_manager();
  Pool& pool() { return *pool_; }
  unsigned max_workers() const { return max_workers_; }
  // This thread completes the engine's calls (running their done callbacks) or hands them to the
  // pool: a wait here for the executor's calls would wait for itself.
  bool is_own_thread() const {
    return t_completing_executor == this || t_starting_executor == this;
  }
  // Throws ProcessError in a forked child's copy (the manager thread and the pool's workers are
  // the parent's: a call handed to it would never complete). Before any lock: a thread of the
  // parent may have held one when the child was forked.
  void check_owner(const char* what) const;
  bool inherited() const { return made_in_ != fork_generation(); }

 private:
  // True when the executor was orphaned (leave_to_itself): the engine is freed by then.
  bool manager_loop();

  unsigned max_workers_;
  std::unique_ptr<Pool> pool_;
  mutable std::mutex mu_;
  std::condition_variable cv_;
  std::deque<Call> pending_;
  size_t in_pool_ = 0;
  bool shutdown_ = false;
  bool stop_manager_ = false;
  bool manager_done_ = false;  // the manager thread has left its loop (set last, under mu_)
  bool orphaned_ = false;      // leave_to_itself(): the manager thread ends everything
  std::shared_ptr<ProcessExecutorCore> self_;  // set while orphaned_
  std::thread manager_;
  pid_t maker_pid_;   // the process that made it, for check_owner's message
  uint32_t made_in_;  // the fork generation of that process (see inherited())
};

// Marks the thread that completes one of an executor's calls (and so runs its futures' done
// callbacks): shutdown(wait=true) there would wait for the very call being completed.
struct Completing {
  explicit Completing(const void* ex) : saved(t_completing_executor) { t_completing_executor = ex; }
  ~Completing() { t_completing_executor = saved; }
  Completing(const Completing&) = delete;
  Completing& operator=(const Completing&) = delete;
  const void* saved;
};
}  // namespace detail

class ProcessPoolExecutor : public detail::ExecutorFront<ProcessPoolExecutor> {
 public:
  ProcessPoolExecutor() : ProcessPoolExecutor(ProcessPoolExecutorOptions{}) {}
  explicit ProcessPoolExecutor(unsigned max_workers)
      : ProcessPoolExecutor(ProcessPoolExecutorOptions{.max_workers = max_workers}) {}
  explicit ProcessPoolExecutor(ProcessPoolExecutorOptions options);
  // shutdown(wait=true), as leaving Python's `with` block. Run by a done callback of this
  // executor's futures (the callback drops the last handle), it cannot wait for the thread it
  // runs on: it returns at once, every call still runs, and the executor's own thread ends the
  // workers and frees what is left once they have.
  ~ProcessPoolExecutor();
  ProcessPoolExecutor(const ProcessPoolExecutor&) = delete;
  ProcessPoolExecutor& operator=(const ProcessPoolExecutor&) = delete;

  template <class F, class... A>
  requires detail::is_task_callable_v<F>
  auto submit(F f, A&&... args) {
    static_assert(detail::check_task<F, A...>());
    using ArgsTuple = detail::task_args_t<F, A...>;
    using R = detail::task_result_t<F, ArgsTuple>;
    using V = detail::value_of<R>;
    auto st = std::make_shared<detail::FutureState<V>>();
    st->set_owner(core_.get());
    // The call is handed to the pool only when a worker is about to be free (start_calls), so
    // that cancel() still applies until then. What completes it holds the engine meanwhile (a
    // done callback may destroy the executor); it is gone only while the pool is being destroyed
    // with the engine, failing what it still held.
    std::weak_ptr<detail::ProcessExecutorCore> weak = core_;
    auto start = [st, f, args = ArgsTuple(std::forward<A>(args)...), weak](Pool& pool) mutable {
      if (!st->set_running()) return false;  // cancelled while it waited
      auto on_ok = [st, weak](auto&... v) {
        auto core = weak.lock();
        detail::Completing in_callbacks(core.get());
        if constexpr (std::is_void_v<R>)
          st->set_value({});
        else
          st->set_value(std::move(v...));
        if (core) core->call_finished();
      };
      auto on_err = [st, weak](std::exception_ptr e) {
        auto core = weak.lock();
        detail::Completing in_callbacks(core.get());
        st->set_error(e);
        if (core) core->call_finished();
      };
      try {
        std::apply(
            [&](auto&... a) {
              (void)pool.apply_async(callbacks(on_ok, on_err), f, std::move(a)...);
            },
            args);
      } catch (...) {
        st->set_error(std::current_exception());
        return false;
      }
      return true;
    };
    enqueue({std::move(start), [st](std::exception_ptr e) { st->set_error(e); }});
    track(st);
    return Future<R>(st);
  }

  // Python's shutdown(wait, cancel_futures). From a done callback of this executor's futures
  // (which runs in the thread that completes the call), wait=true throws ProcessError after the
  // executor has stopped taking calls, as Python's raises RuntimeError there: the callback's own
  // call is not finished until the callback returns.
  void shutdown(bool wait = true, bool cancel_futures = false);
  // Python 3.14: end every worker at once (SIGTERM / SIGKILL) and shut the executor down; the
  // calls they were running fail, the calls not started are cancelled.
  void terminate_workers();
  void kill_workers();
  unsigned max_workers() const { return core_->max_workers(); }
  // The current workers' pids (they change as workers are replaced).
  std::vector<pid_t> worker_pids() const;

 private:
  friend class detail::ExecutorFront<ProcessPoolExecutor>;
  template <class F, class... Ranges>
  auto map_impl(F f, const ExecutorMapOptions& options, Ranges&&... ranges) {
    if constexpr (sizeof...(Ranges) == 1) {
      if (options.chunksize > 1) {
        // Chunks of calls: Pool's imap, over a copy of the input (read now, as Python reads it).
        auto items = [](auto&& r) {
          std::vector<std::remove_cvref_t<std::ranges::range_value_t<decltype(r)>>> v;
          for (auto&& x : r) v.emplace_back(std::forward<decltype(x)>(x));
          return v;
        }(std::forward<Ranges>(ranges)...);
        check_running();
        Pool& pool = core_->pool();
        using IR = decltype(pool.imap(f, std::move(items), options.chunksize));
        using V = typename IR::value_type;
        auto it = std::make_shared<IR>(pool.imap(f, std::move(items), options.chunksize));
        return ExecutorMapResult<V>(
            [it](const detail::Deadline& d) { return it->next(detail::remaining(d)); },
            detail::Deadline::after(options.timeout));
      }
    }
    return this->map_by_submit(f, options, std::forward<Ranges>(ranges)...);
  }
  void check_running() const;
  void enqueue(detail::ProcessExecutorCore::Call call);
  void force_shutdown(int sig);

  std::shared_ptr<detail::ProcessExecutorCore> core_;
};

}  // namespace multiproc
