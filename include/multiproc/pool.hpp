// Pool: a fixed number of worker processes running tasks (CPython's pool.py, same API).
//
//   mp::Pool pool(4);
//   auto r = pool.apply_async(task, x);         r.get();
//   std::vector<int> ys = pool.map(square, xs);  // chunks chosen automatically
//   for (int y : pool.imap(square, std::views::iota(0))) ...   // lazy input, bounded memory
//
// Tasks are free functions or capture-free lambdas; arguments and results cross as
// serialization.hpp says - including queues, locks and values, so a queue created at any time
// can be a task argument, under every start method.
//
// Failures stay local. A task that throws makes its result throw the same standard (or
// register_exception'ed) type again, else RemoteError; either carries RemoteErrorInfo (type,
// message, worker, item index; errors.hpp). A worker that dies inside a task (signal, abort, exit,
// out of memory) fails that task only, with WorkerLost (pid, signal or exit code); the pool starts
// a replacement and every other task completes. For a map in which some calls failed, get() throws
// the first failure and MapResult::outcomes() gives every call's value or error.
//
// Lifetime. close() stops new submissions; join() (after close or terminate) waits for the
// workers to finish what was submitted and exit. terminate() stops the workers at once; pending
// results fail with BrokenPool. The destructor calls terminate(), as Python's `with Pool()` does:
// wait for the results you need (or close() and join()) before a Pool goes out of scope: if calls
// are still pending then, the destructor says so on stderr (as Python's ResourceWarning).
// close() and terminate() may be called from a callback (which runs in the pool's own thread);
// join() there throws ProcessError, as it would wait for that thread. A forked child's copy of a
// Pool (a global) belongs to the parent: every call on it throws ProcessError.
#pragma once

#include <iterator>
#include <memory>
#include <optional>
#include <ranges>
#include <string>
#include <tuple>
#include <type_traits>
#include <vector>

#include <multiproc/context.hpp>
#include <multiproc/detail/next_iterator.hpp>
#include <multiproc/detail/pool_core.hpp>
#include <multiproc/detail/pool_front.hpp>
#include <multiproc/detail/pool_jobs.hpp>
#include <multiproc/detail/task.hpp>
#include <multiproc/errors.hpp>
#include <multiproc/serialization.hpp>
#include <multiproc/timeout.hpp>

namespace multiproc {

using detail::Outcome;

// The function each worker runs once at start (Python's initializer + initargs):
//   PoolOptions{.initializer = setup}  or  PoolOptions{.initializer = {setup, "config.ini", 3}}
class Initializer {
 public:
  Initializer() = default;
  template <class F, class... A>
  requires detail::is_task_callable_v<F> Initializer(F f, A&&... args)
      : set_(true) {  // NOLINT: implicit, for designated initializers
    code_ = detail::make_task_code<F, A...>();
    detail::set_task_function(code_, f);
    // The shared objects among the arguments: the pool gives each worker launch references of
    // its own to them (the encoded copy's in-flight references go when the last copy of this
    // Initializer does).
    detail::FlightRefLog log;
    std::string bytes;
    detail::encode_task_args<F>(bytes, std::forward<A>(args)...);
    flight_refs_ = std::move(log.entries);
    if constexpr (detail::check_task<F, A...>())
      args_->template set<detail::task_args_t<F, A...>>(std::move(bytes));
  }
  bool is_set() const { return set_; }
  const detail::TaskCode& code() const { return code_; }
  const std::string& args() const { return args_->bytes(); }
  const std::string& shared_objects() const { return flight_refs_; }  // FlightRefLog entries

 private:
  bool set_ = false;
  detail::TaskCode code_;
  std::shared_ptr<detail::EncodedArgs> args_ = std::make_shared<detail::EncodedArgs>();
  std::string flight_refs_;
};

struct PoolOptions {
  unsigned processes = 0;            // 0 = cpu_count()
  Initializer initializer{};         // run by every worker when it starts
  uint64_t maxtasksperchild = 0;     // 0 = workers live as long as the pool
  std::optional<Context> context{};  // start method for the workers (default: the global one)
};

template <class R>
class [[nodiscard]] AsyncResult {
 public:
  using value_type = detail::value_of<R>;
  AsyncResult() = default;
  explicit AsyncResult(std::shared_ptr<detail::ResultState<value_type>> st) : st_(std::move(st)) {}

  // Waits at most `timeout`; throws TimeoutError if not ready by then, or the task's error
  // (the task's own exception type or RemoteError, WorkerLost, BrokenPool).
  R get(Timeout timeout = std::nullopt) const& {
    check();
    if (!st_->wait(detail::Deadline::after(timeout)))
      throw TimeoutError("AsyncResult::get(): the result is not ready within the timeout");
    if (!st_->success) std::rethrow_exception(st_->error);
    if constexpr (!std::is_void_v<R>) return *st_->value;
  }
  // On a result nobody else holds (pool.map(...) is map_async(...).get()): the value is moved out,
  // not copied - a map's result vector can be large.
  R get(Timeout timeout = std::nullopt) && {
    check();
    if (!st_->wait(detail::Deadline::after(timeout)))
      throw TimeoutError("AsyncResult::get(): the result is not ready within the timeout");
    if (!st_->success) std::rethrow_exception(st_->error);
    if constexpr (!std::is_void_v<R>) {
      if (st_.use_count() == 1) return std::move(*st_->value);
      return *st_->value;
    }
  }
  // Waits at most `timeout`; returns whether the result is ready.
  bool wait(Timeout timeout = std::nullopt) const {
    check();
    return st_->wait(detail::Deadline::after(timeout));
  }
  bool ready() const { return st_ && st_->ready.load(std::memory_order_acquire); }
  // Throws ProcessError if the result is not ready yet (Python's ValueError).
  bool successful() const {
    if (!ready()) throw ProcessError("AsyncResult::successful(): the result is not ready");
    return st_->success;
  }

 protected:
  void check() const {
    if (!st_) throw ProcessError("AsyncResult: empty (default-constructed, not from a Pool)");
  }
  std::shared_ptr<detail::ResultState<value_type>> st_;
};

// map_async's result: also every call's own outcome, so the good results of a map in which some
// calls failed (a worker was killed, a task threw) can be used.
template <class R>
class [[nodiscard]] MapResult : public AsyncResult<std::vector<detail::value_of<R>>> {
 public:
  using V = detail::value_of<R>;
  explicit MapResult(std::shared_ptr<detail::MapState<V>> st)
      : AsyncResult<std::vector<V>>(st), map_st_(std::move(st)) {}

  // One Outcome per input item, in order. Waits like get(); never throws a task's error.
  std::vector<Outcome<V>> outcomes(Timeout timeout = std::nullopt) const {
    if (!this->wait(timeout))
      throw TimeoutError("MapResult::outcomes(): not ready within the timeout");
    const std::vector<V>& values = map_st_->success ? *map_st_->value : map_st_->values;
    return detail::map_outcomes<V>(values.size(), map_st_->errors,
                                   [&](size_t i) -> V { return values[i]; });
  }
  // How many calls failed (after the result is ready).
  size_t failures() const { return map_st_->errors.size(); }

 private:
  std::shared_ptr<detail::MapState<V>> map_st_;
};

// imap / imap_unordered: results as they come (in input order for imap).
template <class R>
class IMapResult {
 public:
  using value_type = detail::value_of<R>;
  IMapResult(std::shared_ptr<detail::IMapJob<R>> job, std::shared_ptr<detail::PoolCore> pool)
      : job_(std::move(job)), pool_(std::move(pool)), consumer_(consumer_token(job_, pool_)) {}

  // The next result; std::nullopt once every input item has been answered. Throws the call's
  // error at its position (the iteration may continue after it), the input range's exception
  // where the input stopped, or TimeoutError.
  std::optional<value_type> next(Timeout timeout = std::nullopt) {
    auto deadline = detail::Deadline::after(timeout);
    for (;;) {
      Outcome<value_type> out;
      switch (job_->try_next(out)) {
        case detail::IMapJob<R>::Poll::item:
          pool_->feed();  // a slot in the window freed up
          return out.value();
        case detail::IMapJob<R>::Poll::end:
          return std::nullopt;
        case detail::IMapJob<R>::Poll::waiting:
          if (!pool_->wait_until([this] { return job_->has_something(); }, deadline))
            throw TimeoutError("IMapResult::next(): no result within the timeout");
      }
    }
  }

  using iterator = detail::NextIterator<IMapResult>;
  iterator begin() { return iterator(this); }
  std::default_sentinel_t end() { return {}; }

 private:
  // Shared by the copies of this result; the last one to go tells the job that nobody reads its
  // results any more, so that they no longer hold its input back (close() + join() would wait
  // for them for ever).
  static std::shared_ptr<void> consumer_token(const std::shared_ptr<detail::IMapJob<R>>& job,
                                              const std::shared_ptr<detail::PoolCore>& pool) {
    return std::shared_ptr<void>(nullptr, [job, pool](void*) noexcept {
      job->consumer_gone();
      try {
        pool->feed();
      } catch (...) {
        // The pool's own feeding reports failures to the jobs; nothing is waiting on this one.
      }
    });
  }

  std::shared_ptr<detail::IMapJob<R>> job_;
  std::shared_ptr<detail::PoolCore> pool_;
  std::shared_ptr<void> consumer_;
};

namespace detail {
template <class F, class Elem, class = void>
struct star_args {
  using type = std::decay_t<Elem>;
};
template <class F, class Elem>
struct star_args<F, Elem, std::enable_if_t<callable_params<F>::known>> {
  using type = typename callable_params<F>::type;
};
}  // namespace detail

// The public calls (apply, map, imap... and their async forms) are PoolFront's, shared with
// ThreadPool; Pool supplies how a call is encoded and sent to a worker process.
class Pool : public detail::PoolFront<Pool> {
 public:
  Pool() : Pool(PoolOptions{}) {}  // cpu_count() workers
  // At least 1 (Python's ValueError otherwise): Pool(0) or a negative count throws ProcessError.
  explicit Pool(int processes);
  explicit Pool(PoolOptions options);
  ~Pool();
  Pool(Pool&&) noexcept = default;
  Pool& operator=(Pool&&) = delete;

  using PoolFront::apply;
  using PoolFront::apply_async;
  using PoolFront::imap;
  using PoolFront::imap_unordered;
  using PoolFront::map;
  using PoolFront::map_async;
  using PoolFront::starmap;
  using PoolFront::starmap_async;

  // ---- a task that captures (or is no function at all): one readable first error ----
  // Without these, overload resolution rejects the calls above and the user reads a list of
  // candidates; these take the same calls and fail with check_task's message instead.
  template <detail::not_a_task F, class... Rest>
  auto apply(F, Rest&&...) {
    static_assert(detail::check_task<F>());
  }
  template <detail::not_a_task F, class... Rest>
  auto apply_async(F, Rest&&...) {
    static_assert(detail::check_task<F>());
  }
  template <class OnOk, class OnErr, detail::not_a_task F, class... Rest>
  auto apply_async(detail::Callbacks<OnOk, OnErr>, F, Rest&&...) {
    static_assert(detail::check_task<F>());
  }
  template <detail::not_a_task F, class... Rest>
  auto map(F, Rest&&...) {
    static_assert(detail::check_task<F>());
  }
  template <detail::not_a_task F, class... Rest>
  auto map_async(F, Rest&&...) {
    static_assert(detail::check_task<F>());
  }
  template <class OnOk, class OnErr, detail::not_a_task F, class... Rest>
  auto map_async(detail::Callbacks<OnOk, OnErr>, F, Rest&&...) {
    static_assert(detail::check_task<F>());
  }
  template <detail::not_a_task F, class... Rest>
  auto starmap(F, Rest&&...) {
    static_assert(detail::check_task<F>());
  }
  template <detail::not_a_task F, class... Rest>
  auto starmap_async(F, Rest&&...) {
    static_assert(detail::check_task<F>());
  }
  template <class OnOk, class OnErr, detail::not_a_task F, class... Rest>
  auto starmap_async(detail::Callbacks<OnOk, OnErr>, F, Rest&&...) {
    static_assert(detail::check_task<F>());
  }
  template <detail::not_a_task F, class... Rest>
  auto imap(F, Rest&&...) {
    static_assert(detail::check_task<F>());
  }
  template <detail::not_a_task F, class... Rest>
  auto imap_unordered(F, Rest&&...) {
    static_assert(detail::check_task<F>());
  }

  // ---- lifetime ----
  void close();
  // After close(): waits until every submitted task is done and the workers have exited.
  // After terminate(): returns at once. Otherwise throws ProcessError.
  void join();
  void terminate();

  unsigned processes() const;
  // The current workers' pids (they change as workers are replaced or recycled).
  std::vector<pid_t> worker_pids() const;

 private:
  friend class detail::PoolFront<Pool>;
  template <class F>
  static constexpr bool accepts_task = detail::is_task_callable_v<F>;

  template <class OnOk, class OnErr, class F, class... A>
  auto apply_impl(detail::Callbacks<OnOk, OnErr> cb, F f, A&&... args) {
    static_assert(detail::check_task<F, A...>());  // first, so its message is the first error
    using ArgsTuple = detail::task_args_t<F, A...>;
    using R = detail::task_result_t<F, ArgsTuple>;
    detail::require_all_transferable<ArgsTuple>(
        std::make_index_sequence<std::tuple_size_v<ArgsTuple>>{});
    if constexpr (!std::is_void_v<R>) detail::require_transferable<R>();
    std::string encoded;
    detail::encode_chunk_items(encoded,
                               std::vector<ArgsTuple>{ArgsTuple(std::forward<A>(args)...)});
    auto st = std::make_shared<detail::ResultState<detail::value_of<R>>>();
    st->pool = core();
    auto job =
        std::make_shared<detail::ApplyJob<R, OnOk, OnErr>>(st, std::move(encoded), std::move(cb));
    job->code_bytes = detail::chunk_code_bytes<F, ArgsTuple, true>(f);
    job->drop_args = detail::chunk_args_dropper<ArgsTuple, true>();
    core()->submit(job);
    return AsyncResult<R>(st);
  }

  template <bool kStar, class OnOk, class OnErr, class F, class Range>
  auto map_impl(detail::Callbacks<OnOk, OnErr> cb, F f, Range&& items, MapOptions options) {
    if constexpr (kStar) {
      using Elem = std::ranges::range_value_t<Range>;
      using ArgsTuple = typename detail::star_args<F, Elem>::type;
      static_assert(detail::check_task_tuple<F, ArgsTuple>());  // first: the first error
      return submit_map<F, ArgsTuple, ArgsTuple, true>(cb, f, std::forward<Range>(items), options);
    } else {
      using Elem = std::ranges::range_reference_t<Range>;
      static_assert(detail::check_task<F, Elem>());  // first, so its message is the first error
      using ArgsTuple = detail::task_args_t<F, Elem>;
      static_assert(std::tuple_size_v<ArgsTuple> == 1,
                    "map's task must take exactly one argument; use starmap for several");
      using P = std::tuple_element_t<0, ArgsTuple>;
      return submit_map<F, ArgsTuple, P, false>(cb, f, std::forward<Range>(items), options);
    }
  }

  template <class F, class Range>
  auto imap_impl(F f, Range&& items, MapOptions options, bool ordered) {
    return submit_imap(f, std::forward<Range>(items), options, ordered);
  }

  template <class F, class ArgsTuple, class P, bool kStar, class OnOk, class OnErr, class Range>
  auto submit_map(detail::Callbacks<OnOk, OnErr>& cb, F f, Range&& items, MapOptions options) {
    using R = detail::task_result_t<F, ArgsTuple>;
    using V = detail::value_of<R>;
    detail::require_all_transferable<ArgsTuple>(
        std::make_index_sequence<std::tuple_size_v<ArgsTuple>>{});
    if constexpr (!std::is_void_v<R>) detail::require_transferable<R>();
    // A contiguous range of the parameter type is chunked in place; anything else is read once.
    std::vector<P> copied;
    const P* all = nullptr;
    size_t n = 0;
    if constexpr (std::ranges::contiguous_range<Range> && std::ranges::sized_range<Range> &&
                  std::is_same_v<std::remove_cv_t<std::ranges::range_value_t<Range>>, P>) {
      all = std::ranges::data(items);
      n = std::ranges::size(items);
    } else {
      if constexpr (std::ranges::sized_range<Range>) copied.reserve(std::ranges::size(items));
      for (auto&& x : items) copied.emplace_back(std::forward<decltype(x)>(x));
      all = copied.data();
      n = copied.size();
    }
    size_t cs = options.chunksize;
    if (cs == 0) {  // Python's rule: about four chunks per worker
      size_t per = static_cast<size_t>(processes()) * 4;
      cs = n / per + (n % per ? 1 : 0);
      if (cs == 0) cs = 1;
    }
    // Each chunk is encoded after room for the header and code the pool puts in front of it.
    std::string code_bytes = detail::chunk_code_bytes<F, ArgsTuple, kStar>(f);
    const size_t prefix = sizeof(detail::TaskHeader) + code_bytes.size();
    std::vector<std::string> chunks;
    std::vector<size_t> starts;
    for (size_t s = 0; s < n; s += cs) {
      chunks.push_back(core()->take_buffer());
      chunks.back().assign(prefix, '\0');
      detail::encode_chunk_span(chunks.back(), all + s, std::min(n, s + cs) - s);
      starts.push_back(s);
    }
    auto st = std::make_shared<detail::MapState<V>>();
    st->pool = core();
    auto job = std::make_shared<detail::MapJob<R, OnOk, OnErr>>(
        st, std::move(chunks), std::move(starts), n, std::move(cb), options.progress);
    job->code_bytes = std::move(code_bytes);
    job->prefix_ = prefix;
    job->drop_args = detail::chunk_args_dropper<ArgsTuple, kStar>();
    if (n) core()->submit(job);
    return MapResult<R>(st);
  }

  template <class F, class Range>
  auto submit_imap(F f, Range&& items, MapOptions options, bool ordered) {
    using Elem = std::ranges::range_reference_t<Range>;
    static_assert(detail::check_task<F, Elem>());  // first, so its message is the first error
    using ArgsTuple = detail::task_args_t<F, Elem>;
    static_assert(std::tuple_size_v<ArgsTuple> == 1,
                  "imap's task must take exactly one argument; use starmap for several");
    using P = std::tuple_element_t<0, ArgsTuple>;
    using R = detail::task_result_t<F, ArgsTuple>;
    detail::require_transferable<P>();
    if constexpr (!std::is_void_v<R>) detail::require_transferable<R>();
    std::optional<size_t> total;
    if constexpr (std::ranges::sized_range<Range>) total = std::ranges::size(items);
    // The range is kept (a reference to an lvalue range: keep it alive while iterating) and read
    // only when the pool has room for another chunk.
    using View = std::views::all_t<Range>;
    struct Input {
      View view;
      std::ranges::iterator_t<View> it;
      bool started = false;
      std::exception_ptr failed;  // raised after the items read before it have been sent
    };
    auto input =
        std::make_shared<Input>(Input{std::views::all(std::forward<Range>(items)), {}, false, {}});
    size_t cs = options.chunksize ? options.chunksize : 1;
    auto source = [input, cs](std::string& out) -> size_t {
      if (input->failed) std::rethrow_exception(std::exchange(input->failed, nullptr));
      std::vector<P> chunk;
      try {
        detail::read_input_chunk(*input, chunk, cs);
      } catch (...) {
        if (chunk.empty()) throw;
        input->failed = std::current_exception();
      }
      if (!chunk.empty()) detail::encode_chunk_items(out, chunk);
      return chunk.size();
    };
    size_t window = 2 * static_cast<size_t>(processes()) + 2;
    auto job = std::make_shared<detail::IMapJob<R>>(std::move(source), ordered, cs, window, total,
                                                    options.progress);
    job->code_bytes = detail::chunk_code_bytes<F, ArgsTuple, false>(f);
    job->drop_args = detail::chunk_args_dropper<ArgsTuple, false>();
    core()->submit(job);
    return IMapResult<R>(job, core());
  }

  // Every method goes through here: a moved-from Pool has no core.
  const std::shared_ptr<detail::PoolCore>& core() const {
    if (!core_) throw ProcessError("this Pool was moved from");
    return core_;
  }

  std::shared_ptr<detail::PoolCore> core_;
};

}  // namespace multiproc
