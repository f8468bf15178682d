// Typed jobs on top of PoolCore: how a chunk of calls is encoded, run in a worker, and its
// outcomes brought back (internal).
//
// A chunk's arguments travel as std::vector<Elem> (Elem = the single parameter for map, the
// argument tuple for apply/starmap). A worker answers with one of:
//   0  all calls returned:   std::vector<R> (void: the count)
//   1  some threw:           count, then per call: ok byte, value | exception type, message and
//                            the worker's identity (task_worker_identity())
//   2  the chunk failed:     exception type, message and the worker's identity (could not decode)
#pragma once

#include <atomic>
#include <cstring>
#include <exception>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <variant>
#include <vector>

#include <multiproc/detail/child.hpp>
#include <multiproc/detail/pool_core.hpp>
#include <multiproc/detail/progress.hpp>
#include <multiproc/errors.hpp>
#include <multiproc/serialization.hpp>

namespace multiproc::detail {

template <class R>
using value_of = std::conditional_t<std::is_void_v<R>, std::monostate, R>;

// ---- the worker's side -------------------------------------------------------------------------

template <class F>
decltype(auto) task_function(const void* fn) {
  if constexpr (is_stateless_lambda_v<F>) {
    (void)fn;
    return F{};
  } else {
    return reinterpret_cast<F>(const_cast<void*>(fn));
  }
}

// What one call of a chunk travels as: the argument tuple (apply, starmap) or the one argument.
template <class ArgsTuple, bool kStar>
struct chunk_elem {
  using type = ArgsTuple;
};
template <class ArgsTuple>
struct chunk_elem<ArgsTuple, false> {
  using type = std::tuple_element_t<0, ArgsTuple>;
};

// A chunk's calls travel as std::vector<Elem>; calls without arguments (an empty Elem encodes to
// nothing) travel as their count alone.
template <class Elem>
void encode_chunk_items(std::string& out, const std::vector<Elem>& items) {
  if constexpr (std::is_empty_v<Elem>)
    dump(out, static_cast<uint64_t>(items.size()));
  else
    dump(out, items);
}
// The same encoding straight from a span of the caller's items: a vector of plain-bytes items is
// its count and its bytes (archive.hpp), so no intermediate vector is built.
template <class Elem>
void encode_chunk_span(std::string& out, const Elem* items, size_t n) {
  if constexpr (is_plain_bytes_v<Elem> && !std::is_same_v<Elem, bool> && !std::is_empty_v<Elem>) {
    uint64_t count = n;
    out.append(reinterpret_cast<const char*>(&count), sizeof count);
    out.append(reinterpret_cast<const char*>(items), n * sizeof(Elem));
  } else {
    encode_chunk_items(out, std::vector<Elem>(items, items + n));
  }
}

template <class Elem>
std::vector<Elem> decode_chunk_items(const char*& p, const char* end) {
  if constexpr (std::is_empty_v<Elem>) {
    auto n = load<uint64_t>(p, end);
    if (n > (uint64_t{1} << 32)) throw ProcessError("pool: corrupt chunk size");
    return std::vector<Elem>(n);
  } else {
    return load<std::vector<Elem>>(p, end);
  }
}

template <class F, class ArgsTuple, bool kStar>
void invoke_chunk(const void* fn, const char* p, const char* end, std::string* out) {
  using Elem = typename chunk_elem<ArgsTuple, kStar>::type;
  using R = task_result_t<F, ArgsTuple>;
  auto items = decode_chunk_items<Elem>(p, end);
  auto f = task_function<F>(fn);
  auto call = [&](Elem& e) -> decltype(auto) {
    if constexpr (kStar)
      return std::apply(f, e);
    else
      return f(e);
  };
  const size_t n = items.size();
  size_t i = 0;
  std::conditional_t<std::is_void_v<R>, int, std::vector<value_of<R>>> values{};
  std::string failed_type, failed_message;
  try {
    if constexpr (std::is_void_v<R>) {
      for (; i < n; ++i) call(items[i]);
      out->push_back(0);
      dump(*out, static_cast<uint64_t>(n));
    } else {
      values.reserve(n);
      for (; i < n; ++i) values.push_back(call(items[i]));
      if constexpr (is_plain_bytes_v<value_of<R>>) out->reserve(out->size() + 16 + n * sizeof(R));
      out->push_back(0);
      dump(*out, values);
    }
    return;
  } catch (...) {
    failed_type = current_exception_type();
    failed_message = current_exception_message();
  }
  // Mixed outcome: calls before i returned, call i threw; run the rest one by one.
  out->push_back(1);
  dump(*out, static_cast<uint64_t>(n));
  for (size_t j = 0; j < i; ++j) {
    out->push_back(1);
    if constexpr (!std::is_void_v<R>) dump(*out, values[j]);
  }
  out->push_back(0);
  dump(*out, failed_type);
  dump(*out, failed_message);
  dump(*out, task_worker_identity());
  for (size_t j = i + 1; j < n; ++j) {
    std::string encoded;
    try {
      if constexpr (std::is_void_v<R>)
        call(items[j]);
      else
        dump(encoded, call(items[j]));
      out->push_back(1);
      out->append(encoded);
    } catch (...) {
      out->push_back(0);
      dump(*out, current_exception_type());
      dump(*out, current_exception_message());
      dump(*out, task_worker_identity());
    }
  }
}

// JobBase::drop_args for a chunk of Elem: decoding opens (and then drops) every handle inside, as
// a worker would have, which releases the reference each one holds while in flight.
template <class Elem>
void drop_chunk_args(const char* p, const char* end) {
  (void)decode_chunk_items<Elem>(p, end);
}
template <class ArgsTuple, bool kStar>
constexpr auto chunk_args_dropper() -> void (*)(const char*, const char*) {
  using Elem = typename chunk_elem<ArgsTuple, kStar>::type;
  // Plain bytes (numbers, PODs) hold no handle: nothing to release.
  if constexpr (is_plain_bytes_v<Elem> || std::is_empty_v<Elem>)
    return nullptr;
  else
    return &drop_chunk_args<Elem>;
}

template <class F, class ArgsTuple, bool kStar>
std::string chunk_code_bytes(const F& f) {
  TaskCode code;
  Invoker inv = &invoke_chunk<F, ArgsTuple, kStar>;
  code.invoker = encode_code_address(reinterpret_cast<const void*>(inv));
  set_task_function(code, f);
  std::string bytes;
  dump(bytes, code);
  return bytes;
}

// ---- the parent's side -------------------------------------------------------------------------

// Calls on_value(i, value) / on_error(i, exception_ptr) for each call of a chunk of `count`.
// `first_item` is the chunk's first item's position in a map's input (nullopt for apply): a
// task's error names it.
template <class R, class OnValue, class OnError>
void decode_chunk(const char* p, size_t n, size_t count, std::optional<size_t> first_item,
                  OnValue&& on_value, OnError&& on_error) {
  const char* end = p + n;
  if (p == end) throw ProcessError("pool: empty result from worker");
  char mode = *p++;
  // The payload comes from shared memory a task can scribble on: a count that is not the chunk's
  // fails the chunk rather than leaving some of its calls without an outcome.
  auto check_count = [count](uint64_t k) {
    if (k != count)
      throw ProcessError("pool: damaged result from worker (" + std::to_string(k) +
                         " outcomes for a chunk of " + std::to_string(count) + ")");
  };
  if (mode == 0) {
    if constexpr (std::is_void_v<R>) {
      auto k = load<uint64_t>(p, end);
      check_count(k);
      for (uint64_t i = 0; i < k; ++i) on_value(i, std::monostate{});
    } else {
      auto values = load<std::vector<R>>(p, end);
      check_count(values.size());
      for (size_t i = 0; i < values.size(); ++i) on_value(i, std::move(values[i]));
    }
  } else if (mode == 1) {
    auto k = load<uint64_t>(p, end);
    check_count(k);
    for (uint64_t i = 0; i < k; ++i) {
      bool ok = load<uint8_t>(p, end) != 0;
      if (ok) {
        if constexpr (std::is_void_v<R>)
          on_value(i, std::monostate{});
        else
          on_value(i, load<R>(p, end));
      } else {
        std::string type = load<std::string>(p, end);
        std::string message = load<std::string>(p, end);
        std::string worker = load<std::string>(p, end);
        std::optional<size_t> item;
        if (first_item) item = *first_item + i;
        on_error(i, make_remote_exception(RemoteErrorInfo(std::move(type), std::move(message),
                                                          std::move(worker), item)));
      }
    }
  } else if (mode == 2) {
    std::string type = load<std::string>(p, end);
    std::string message = load<std::string>(p, end);
    std::string worker = load<std::string>(p, end);
    auto e = make_remote_exception(
        RemoteErrorInfo(std::move(type), std::move(message), std::move(worker), first_item));
    for (size_t i = 0; i < count; ++i) on_error(i, e);
  } else {
    throw ProcessError("pool: damaged result from worker (mode " +
                       std::to_string(static_cast<unsigned char>(mode)) + ")");
  }
}

struct ResultStateBase;
// The result whose callbacks this thread is running. A result is marked ready only once its
// callbacks return (as Python's), but its value or error is set before they run: a wait on it
// from its own callback returns at once instead of waiting for itself.
inline thread_local const ResultStateBase* t_in_callbacks_of = nullptr;

// What AsyncResult waits on.
struct ResultStateBase {
  std::atomic<bool> ready{false};
  std::mutex mu;
  bool success = false;
  std::exception_ptr error;
  std::weak_ptr<PoolCore> pool;

  bool wait(const Deadline& deadline) {
    if (ready.load(std::memory_order_acquire)) return true;
    if (t_in_callbacks_of == this) return true;
    if (auto p = pool.lock())
      return p->wait_until([this] { return ready.load(std::memory_order_acquire); }, deadline);
    return ready.load(std::memory_order_acquire);
  }
};

template <class V>
struct ResultState : ResultStateBase {
  std::optional<V> value;
};

// Callbacks as Python's callback / error_callback (nullptr = none). They run in the thread that
// processes the result: keep them short, and do not wait on this pool's results inside them.
template <class OnOk, class OnErr>
struct Callbacks {
  OnOk on_ok;
  OnErr on_err;
};

// A callback that throws is reported on stderr and otherwise ignored, as Python prints an
// exception in a thread: the result still becomes ready, the pool goes on. (src/pool/pool_core.cpp)
void report_callback_exception(const char* which) noexcept;

template <class V, class OnOk, class OnErr>
void run_callbacks(ResultState<V>& st, Callbacks<OnOk, OnErr>& cb) noexcept {
  struct InCallbacks {
    const ResultStateBase* saved = t_in_callbacks_of;
    explicit InCallbacks(const ResultStateBase* st) { t_in_callbacks_of = st; }
    ~InCallbacks() { t_in_callbacks_of = saved; }
  } in_callbacks(&st);
  if (st.success) {
    if constexpr (std::is_same_v<OnOk, std::nullptr_t>) {
    } else {
      try {
        if constexpr (std::is_invocable_v<OnOk&, V&>)
          cb.on_ok(*st.value);
        else
          cb.on_ok();  // a void task's callback takes nothing
      } catch (...) {
        report_callback_exception("callback");
      }
    }
  } else {
    if constexpr (!std::is_same_v<OnErr, std::nullptr_t>) {
      try {
        cb.on_err(st.error);
      } catch (...) {
        report_callback_exception("error_callback");
      }
    }
  }
}

// apply / apply_async: one chunk of one call.
template <class R, class OnOk, class OnErr>
class ApplyJob final : public JobBase {
 public:
  ApplyJob(std::shared_ptr<ResultState<value_of<R>>> st, std::string args,
           Callbacks<OnOk, OnErr> cb)
      : st_(std::move(st)), args_(std::move(args)), cb_(std::move(cb)) {}
  bool next_chunk(std::string& out, uint32_t& chunk) override {
    if (sent_) return false;
    sent_ = true;
    out += args_;
    chunk = 0;
    return true;
  }
  void chunk_done(uint32_t, const char* p, size_t n) override {
    try {
      decode_chunk<R>(
          p, n, 1, std::nullopt, [&](size_t, auto&& v) { finish(std::forward<decltype(v)>(v)); },
          [&](size_t, std::exception_ptr e) { fail(e); });
    } catch (...) {
      fail(std::current_exception());
    }
  }
  void chunk_failed(uint32_t, std::exception_ptr e) override { fail(e); }
  void input_failed(std::exception_ptr e) override { fail(e); }
  void abandon(std::exception_ptr e) override { fail(e); }
  void drop_unsent() override {
    if (!sent_ && drop_args) drop_args(args_.data(), args_.data() + args_.size());
    sent_ = true;
  }

 private:
  void finish(value_of<R>&& v) {
    {
      std::lock_guard lk(st_->mu);
      if (st_->ready.load()) return;
      st_->value.emplace(std::move(v));
      st_->success = true;
    }
    run_callbacks(*st_, cb_);
    st_->ready.store(true, std::memory_order_release);
  }
  void fail(std::exception_ptr e) {
    {
      std::lock_guard lk(st_->mu);
      if (st_->ready.load()) return;
      st_->error = e;
    }
    run_callbacks(*st_, cb_);
    st_->ready.store(true, std::memory_order_release);
  }
  std::shared_ptr<ResultState<value_of<R>>> st_;
  std::string args_;
  Callbacks<OnOk, OnErr> cb_;
  bool sent_ = false;
};

// One call's outcome, for callers who want the good results of a map in which some calls failed.
template <class V>
class Outcome {
 public:
  Outcome() = default;
  explicit Outcome(V v) : v_(std::move(v)) {}
  explicit Outcome(std::exception_ptr e) : e_(std::move(e)) {}
  bool ok() const { return v_.has_value(); }
  const V& value() const {
    if (!v_) std::rethrow_exception(e_);
    return *v_;
  }
  std::exception_ptr error() const { return e_; }

 private:
  std::optional<V> v_;
  std::exception_ptr e_;
};

template <class V>
struct MapState : ResultState<std::vector<V>> {
  std::vector<V> values;
  std::map<size_t, std::exception_ptr> errors;  // item index -> what went wrong
};

// map_async / starmap_async: every chunk encoded up front (the input is read once, in the
// caller's thread, so an input that throws surfaces in the caller).
template <class R, class OnOk, class OnErr>
class MapJob final : public JobBase {
 public:
  using V = value_of<R>;
  MapJob(std::shared_ptr<MapState<V>> st, std::vector<std::string> chunks,
         std::vector<size_t> starts, size_t total, Callbacks<OnOk, OnErr> cb, bool progress)
      : st_(std::move(st)),
        chunks_(std::move(chunks)),
        starts_(std::move(starts)),
        total_(total),
        remaining_(chunks_.size()),
        cb_(std::move(cb)) {
    st_->values.resize(total_);
    if (progress) progress_.emplace("map", total_);
    if (remaining_ == 0) finish();
  }
  bool next_chunk(std::string& out, uint32_t& chunk) override {
    if (next_ >= chunks_.size()) return false;
    std::string& c = chunks_[next_];
    if (c.size() >= out.size() + prefix_ && prefix_ == out.size()) {
      // The chunk was encoded after room for the task header and code: hand it over whole.
      std::memcpy(c.data(), out.data(), prefix_);
      out.swap(c);
    } else {
      out.append(c, prefix_, std::string::npos);
    }
    std::string().swap(c);
    chunk = static_cast<uint32_t>(next_++);
    return true;
  }
  // Chunks passed to the constructor start with this many bytes of room for the task's prefix.
  size_t prefix_ = 0;
  void chunk_done(uint32_t chunk, const char* p, size_t n) override {
    size_t start = starts_[chunk];
    size_t count = chunk_count(chunk);
    if constexpr (is_plain_bytes_v<V> && !std::is_same_v<V, bool> && !std::is_void_v<R>) {
      // All calls returned (mode 0): count and bytes go straight into the result.
      uint64_t k = 0;
      if (n == 1 + sizeof k + count * sizeof(V) && p[0] == 0) {
        std::memcpy(&k, p + 1, sizeof k);
        if (k == count) {
          std::memcpy(static_cast<void*>(st_->values.data() + start), p + 1 + sizeof k,
                      count * sizeof(V));
          chunk_finished(count);
          return;
        }
      }
    }
    try {
      decode_chunk<R>(
          p, n, count, start,
          [&](size_t i, auto&& v) { st_->values[start + i] = std::forward<decltype(v)>(v); },
          [&](size_t i, std::exception_ptr e) { record_error(start + i, e); });
    } catch (...) {
      for (size_t i = 0; i < count; ++i) record_error(start + i, std::current_exception());
    }
    chunk_finished(count);
  }
  void chunk_failed(uint32_t chunk, std::exception_ptr e) override {
    size_t count = chunk_count(chunk);
    for (size_t i = 0; i < count; ++i) record_error(starts_[chunk] + i, e);
    chunk_finished(count);
  }
  void input_failed(std::exception_ptr e) override { abandon(e); }
  void drop_unsent() override {
    for (; next_ < chunks_.size(); ++next_) {
      std::string c = std::move(chunks_[next_]);
      if (drop_args && c.size() >= prefix_) drop_args(c.data() + prefix_, c.data() + c.size());
    }
  }
  void abandon(std::exception_ptr e) override {
    std::lock_guard lk(mu_);
    if (st_->ready.load()) return;
    for (size_t c = 0; c < chunks_.size(); ++c)
      if (!finished_.count(c))
        for (size_t i = 0; i < chunk_count(static_cast<uint32_t>(c)); ++i)
          st_->errors.emplace(starts_[c] + i, e);
    remaining_ = 0;
    finish();
  }

 private:
  size_t chunk_count(uint32_t chunk) const {
    return (chunk + 1 < starts_.size() ? starts_[chunk + 1] : total_) - starts_[chunk];
  }
  void record_error(size_t index, std::exception_ptr e) {
    std::lock_guard lk(mu_);
    st_->errors.emplace(index, e);
  }
  void chunk_finished(size_t count) {
    std::lock_guard lk(mu_);
    done_items_ += count;
    if (progress_) progress_->update(done_items_);
    if (remaining_ > 0 && --remaining_ == 0) finish();
  }
  void finish() {
    if (progress_) progress_->finish(done_items_);
    if (st_->errors.empty()) {
      st_->success = true;
      st_->value.emplace(std::move(st_->values));
    } else {
      st_->error = st_->errors.begin()->second;  // the first failing item, as Python reports
    }
    run_callbacks(*st_, cb_);
    st_->ready.store(true, std::memory_order_release);
  }
  std::shared_ptr<MapState<V>> st_;
  std::vector<std::string> chunks_;
  std::vector<size_t> starts_;
  std::map<size_t, bool> finished_;
  size_t total_;
  size_t remaining_;
  size_t next_ = 0;
  size_t done_items_ = 0;
  Callbacks<OnOk, OnErr> cb_;
  std::optional<ProgressBar> progress_;
  std::mutex mu_;
};

// imap / imap_unordered: the input is read chunk by chunk as task slots free up and while the
// consumer keeps up (at most `window` chunks in flight or waiting to be taken).
template <class R>
class IMapJob final : public JobBase {
 public:
  using V = value_of<R>;
  // next_input(out) encodes up to chunksize items into out and returns how many (0 = end).
  using Source = std::function<size_t(std::string&)>;

  IMapJob(Source source, bool ordered, size_t chunksize, size_t window, std::optional<size_t> total,
          bool progress)
      : source_(std::move(source)),
        ordered_(ordered),
        chunksize_(std::max<size_t>(chunksize, 1)),
        window_(window) {
    if (progress) progress_.emplace(ordered ? "imap" : "imap_unordered", total.value_or(0));
  }

  bool next_chunk(std::string& out, uint32_t& chunk) override {
    size_t k;
    try {
      k = source_(out);
    } catch (...) {
      std::lock_guard lk(mu_);
      input_done_ = true;
      throw;
    }
    std::lock_guard lk(mu_);
    if (k == 0) {
      input_done_ = true;
      if (progress_ && in_flight_ == 0) progress_->finish(done_items_);
      return false;
    }
    chunk = static_cast<uint32_t>(counts_.size());
    counts_.push_back(k);
    starts_.push_back(items_read_);
    items_read_ += k;
    ++in_flight_;
    return true;
  }
  bool wants_more() override {
    std::lock_guard lk(mu_);
    // Unread results hold the input back only while someone can still read them before join().
    size_t held_back = unpaced_ ? 0 : (buffered_items_ + chunksize_ - 1) / chunksize_;
    return in_flight_ + held_back < window_;
  }
  void pool_closed() override {
    std::lock_guard lk(mu_);
    unpaced_ = true;
  }
  // The last IMapResult handle went: the remaining calls still run, as Python's do, and their
  // results, which nobody can read, are dropped as they come.
  void consumer_gone() {
    std::lock_guard lk(mu_);
    unpaced_ = true;
    consumer_gone_ = true;
    done_chunks_.clear();
    pending_.clear();
    buffered_items_ = 0;
  }
  void chunk_done(uint32_t chunk, const char* p, size_t n) override {
    std::vector<Outcome<V>> outs(counts_at(chunk));
    try {
      decode_chunk<R>(
          p, n, outs.size(), first_item_at(chunk),
          [&](size_t i, auto&& v) { outs[i] = Outcome<V>(std::forward<decltype(v)>(v)); },
          [&](size_t i, std::exception_ptr e) { outs[i] = Outcome<V>(e); });
    } catch (...) {
      for (auto& o : outs) o = Outcome<V>(std::current_exception());
    }
    deliver(chunk, std::move(outs));
  }
  void chunk_failed(uint32_t chunk, std::exception_ptr e) override {
    std::vector<Outcome<V>> outs(counts_at(chunk), Outcome<V>(e));
    deliver(chunk, std::move(outs));
  }
  void input_failed(std::exception_ptr e) override {
    std::lock_guard lk(mu_);
    input_error_ = e;
    input_done_ = true;
  }
  void abandon(std::exception_ptr e) override {
    std::lock_guard lk(mu_);
    abandoned_ = e;
  }

  // Consumer side. Returns the next outcome if one is ready, nullopt-with-end if finished.
  enum class Poll { item, waiting, end };
  Poll try_next(Outcome<V>& out) {
    std::lock_guard lk(mu_);
    if (ordered_ && pending_.empty()) {
      auto it = done_chunks_.find(next_chunk_to_yield_);
      if (it != done_chunks_.end()) {
        for (auto& o : it->second) pending_.push_back(std::move(o));
        done_chunks_.erase(it);
        ++next_chunk_to_yield_;
      }
    }
    if (!pending_.empty()) {
      out = std::move(pending_.front());
      pending_.pop_front();
      --buffered_items_;
      return Poll::item;
    }
    if (abandoned_) {  // the pool ended: report it once, then stop
      out = Outcome<V>(abandoned_);
      abandoned_ = nullptr;
      input_done_ = true;
      in_flight_ = 0;
      next_chunk_to_yield_ = counts_.size();
      return Poll::item;
    }
    if (input_done_ && all_yielded_locked()) {
      if (input_error_) {  // the input range threw: surface it where the input stopped
        out = Outcome<V>(input_error_);
        input_error_ = nullptr;
        return Poll::item;
      }
      if (progress_) progress_->finish(done_items_);
      return Poll::end;
    }
    return Poll::waiting;
  }
  bool has_something() {
    std::lock_guard lk(mu_);
    if (!pending_.empty() || abandoned_) return true;
    if (ordered_ && done_chunks_.count(next_chunk_to_yield_)) return true;
    return input_done_ && all_yielded_locked();
  }

 private:
  bool all_yielded_locked() const {
    return ordered_ ? next_chunk_to_yield_ >= counts_.size() : in_flight_ == 0;
  }
  size_t first_item_at(uint32_t chunk) {
    std::lock_guard lk(mu_);
    return starts_[chunk];
  }
  size_t counts_at(uint32_t chunk) {
    std::lock_guard lk(mu_);
    return counts_[chunk];
  }
  void deliver(uint32_t chunk, std::vector<Outcome<V>> outs) {
    std::lock_guard lk(mu_);
    --in_flight_;
    done_items_ += outs.size();
    if (progress_) progress_->update(done_items_);
    if (consumer_gone_) {
      if (progress_ && input_done_ && in_flight_ == 0) progress_->finish(done_items_);
      return;
    }
    buffered_items_ += outs.size();
    if (ordered_) {
      done_chunks_.emplace(chunk, std::move(outs));
    } else {
      for (auto& o : outs) pending_.push_back(std::move(o));
    }
    if (progress_ && input_done_ && in_flight_ == 0) progress_->finish(done_items_);
  }

  Source source_;
  bool ordered_;
  size_t chunksize_;
  size_t window_;
  std::mutex mu_;
  std::vector<size_t> counts_;  // items per chunk
  std::vector<size_t> starts_;  // each chunk's first item's position in the input
  size_t items_read_ = 0;
  size_t in_flight_ = 0;
  size_t buffered_items_ = 0;
  std::map<uint32_t, std::vector<Outcome<V>>> done_chunks_;
  std::deque<Outcome<V>> pending_;
  size_t next_chunk_to_yield_ = 0;
  bool input_done_ = false;
  bool unpaced_ = false;        // read the input without waiting for the consumer
  bool consumer_gone_ = false;  // no IMapResult left: results are dropped
  std::exception_ptr input_error_;
  std::exception_ptr abandoned_;
  size_t done_items_ = 0;
  std::optional<ProgressBar> progress_;
};

}  // namespace multiproc::detail
