// The shared state behind a ThreadPool's results and an executor's Future (internal): a value or
// an error, set once, that any number of threads can wait on, and callbacks run when it is set.
//
// Unlike Pool's ResultState, nobody has to pump a queue for it to become ready: the thread that
// runs the task sets it, so a plain mutex and condition variable suffice.
#pragma once

#include <condition_variable>
#include <exception>
#include <functional>
#include <mutex>
#include <optional>
#include <string>
#include <utility>
#include <variant>
#include <vector>

#include <multiproc/errors.hpp>
#include <multiproc/timeout.hpp>

namespace multiproc::detail {

// The executor (ProcessPoolExecutor) whose calls this thread completes, running their futures'
// done callbacks: only this thread can complete the executor's other calls, so a wait there for
// one that is not done would wait for itself. And the executor whose calls this thread hands to
// its pool: a call it has not handed over yet cannot start while this thread waits.
inline thread_local const void* t_completing_executor = nullptr;
inline thread_local const void* t_starting_executor = nullptr;

class FutureStateBase;
// The ThreadPool result whose callbacks this thread is running: its value or error is staged
// already (stage_value / stage_error), and only publish() after the callbacks makes it done, as
// Python's ThreadPool runs callbacks before a result is ready. A wait on it from its own
// callback returns at once instead of waiting for itself.
inline thread_local const FutureStateBase* t_future_in_callbacks = nullptr;

class FutureStateBase {
 public:
  enum class Status { pending, running, cancelled, finished };

  // Returns whether the state is done (finished or cancelled) by the deadline. A wait without one
  // that only this thread could end throws ProcessError (see t_completing_executor).
  bool wait(const Deadline& deadline) const {
    if (t_future_in_callbacks == this) return true;
    if (deadline.is_never() && needs_this_thread()) throw_waits_for_itself("Future");
    std::unique_lock lk(mu_);
    auto is_done = [this] { return done_locked(); };
    if (deadline.is_never()) {
      cv_.wait(lk, is_done);
      return true;
    }
    return cv_.wait_until(lk, *deadline.at, is_done);
  }
  // The executor whose call this is (or, for then(), whose call it follows): see
  // t_completing_executor. Set before the future is handed out.
  void set_owner(const void* owner) { owner_ = owner; }
  const void* owner() const { return owner_; }
  // Not done, and only this thread could make it done: it completes the owner's calls, or it
  // hands them to the pool and this one is not handed over yet.
  bool needs_this_thread() const {
    if (!owner_ || (owner_ != t_completing_executor && owner_ != t_starting_executor)) return false;
    std::lock_guard lk(mu_);
    if (done_locked()) return false;
    return owner_ == t_completing_executor || status_ == Status::pending;
  }
  [[noreturn]] static void throw_waits_for_itself(const char* what) {
    throw ProcessError(
        std::string(what) +
        ": waiting without a timeout, in a done callback of an executor's future (which runs in "
        "the thread that completes that executor's calls), for a call of that executor that is "
        "not done: it could not finish while this thread waits. Wait from another thread, with "
        "a timeout, or chain the work with then()");
  }
  bool done() const {
    std::lock_guard lk(mu_);
    return done_locked();
  }
  Status status() const {
    std::lock_guard lk(mu_);
    return status_;
  }
  // A task about to run: false if it was cancelled first (then it must not run).
  bool set_running() {
    std::lock_guard lk(mu_);
    if (status_ != Status::pending) return false;
    status_ = Status::running;
    return true;
  }
  // Python's Future.cancel(): only a call that has not started can be cancelled.
  bool cancel() {
    std::unique_lock lk(mu_);
    if (status_ == Status::cancelled) return true;
    if (status_ != Status::pending) return false;
    status_ = Status::cancelled;
    complete(lk);
    return true;
  }
  bool set_error(std::exception_ptr e) {
    std::unique_lock lk(mu_);
    if (done_locked()) return false;
    error_ = std::move(e);
    status_ = Status::finished;
    complete(lk);
    return true;
  }
  // ThreadPool (see t_future_in_callbacks): the error set, the state not done until publish().
  bool stage_error(std::exception_ptr e) {
    std::lock_guard lk(mu_);
    if (done_locked()) return false;
    error_ = std::move(e);
    return true;
  }
  void publish() {
    std::unique_lock lk(mu_);
    if (done_locked()) return;
    status_ = Status::finished;
    complete(lk);
  }
  // Marks this thread as running the state's callbacks (see t_future_in_callbacks) for its scope.
  struct InCallbacks {
    const FutureStateBase* saved = t_future_in_callbacks;
    explicit InCallbacks(const FutureStateBase* st) { t_future_in_callbacks = st; }
    ~InCallbacks() { t_future_in_callbacks = saved; }
    InCallbacks(const InCallbacks&) = delete;
    InCallbacks& operator=(const InCallbacks&) = delete;
  };
  std::exception_ptr error() const {
    std::lock_guard lk(mu_);
    return error_;
  }
  bool has_error() const {
    std::lock_guard lk(mu_);
    return error_ != nullptr;
  }
  // Runs cb once the state is done: at once (in this thread) if it already is, otherwise in the
  // thread that completes it.
  void on_done(std::function<void()> cb) {
    std::unique_lock lk(mu_);
    if (!done_locked()) {
      callbacks_.push_back(std::move(cb));
      return;
    }
    lk.unlock();
    cb();
  }

 protected:
  bool done_locked() const { return status_ == Status::cancelled || status_ == Status::finished; }
  // Waiters wake first, then callbacks run outside the lock, as Python's Future does: a callback
  // may read the state (result() inside a done-callback returns at once).
  void complete(std::unique_lock<std::mutex>& lk) {
    auto cbs = std::move(callbacks_);
    callbacks_.clear();
    lk.unlock();
    cv_.notify_all();
    for (auto& cb : cbs) cb();
  }

  mutable std::mutex mu_;
  mutable std::condition_variable cv_;
  const void* owner_ = nullptr;
  Status status_ = Status::pending;
  std::exception_ptr error_;
  std::vector<std::function<void()>> callbacks_;
};

template <class V>
class FutureState : public FutureStateBase {
 public:
  bool set_value(V v) {
    std::unique_lock lk(mu_);
    if (done_locked()) return false;
    value_.emplace(std::move(v));
    status_ = Status::finished;
    complete(lk);
    return true;
  }
  // ThreadPool (see t_future_in_callbacks): the value set, the state not done until publish().
  bool stage_value(V v) {
    std::lock_guard lk(mu_);
    if (done_locked()) return false;
    value_.emplace(std::move(v));
    return true;
  }
  // After done() with no error and not cancelled.
  V& value() { return *value_; }
  const V& value() const { return *value_; }

 private:
  std::optional<V> value_;
};

}  // namespace multiproc::detail
