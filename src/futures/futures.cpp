// The executors' engines: ThreadPoolExecutor on ThreadPoolCore, ProcessPoolExecutor on Pool with
// a manager thread that hands calls to the pool only as workers are about to be free.
#include <multiproc/futures.hpp>

#include <signal.h>
#include <unistd.h>

#include <algorithm>
#include <string>

namespace multiproc {

// ---- ThreadPoolExecutor ----

ThreadPoolExecutor::ThreadPoolExecutor(ThreadPoolExecutorOptions options) {
  unsigned n = options.max_workers;
  if (n == 0) n = std::min(32u, cpu_count() + 4);
  core_ = std::make_shared<detail::ThreadPoolCore>(n, std::move(options.initializer));
}

namespace {
// The executor whose futures this thread is cancelling in shutdown(cancel_futures=true) or
// terminate_workers()/kill_workers(): a done callback run there may destroy the executor, and
// its destructor must leave the ending to the call on the stack (which holds the engine) instead
// of taking the shutdown lock again, waiting for the calls that call is about to cancel, or (for
// a terminate) waiting for the running calls the terminate is about to kill.
struct Cancelling {
  explicit Cancelling(const void* ex) : ex(ex), saved(t_cancelling) { t_cancelling = this; }
  ~Cancelling() { t_cancelling = saved; }
  Cancelling(const Cancelling&) = delete;
  Cancelling& operator=(const Cancelling&) = delete;
  // The innermost cancelling of `ex` on this thread, if any.
  static Cancelling* of(const void* ex) {
    for (Cancelling* c = t_cancelling; c; c = c->saved)
      if (c->ex == ex) return c;
    return nullptr;
  }
  const void* ex;
  Cancelling* saved;
  // The executor was destroyed by a callback (ex is cleared then: another executor may be made
  // at its address).
  bool dropped = false;
  void drop() {
    dropped = true;
    ex = nullptr;
  }
  static thread_local Cancelling* t_cancelling;
};
thread_local Cancelling* Cancelling::t_cancelling = nullptr;
}  // namespace

ThreadPoolExecutor::~ThreadPoolExecutor() {
  if (core_->inherited()) return;  // a forked child's copy: the core forgets the parent's threads
  if (Cancelling* c = Cancelling::of(this)) {
    // shutdown(cancel_futures=true) is on this thread's stack, holding the core: it waits for
    // the calls once it has cancelled the rest.
    c->drop();
    return;
  }
  try {
    shutdown(true, false);
  } catch (...) {
  }
}

void ThreadPoolExecutor::submit_task(detail::ThreadPoolCore::Task task) {
  core_->check_owner("ThreadPoolExecutor::submit");
  if (core_->closed())
    throw ProcessError("ThreadPoolExecutor::submit(): cannot schedule new futures after shutdown");
  core_->submit(std::move(task));
}

void ThreadPoolExecutor::shutdown(bool wait, bool cancel_futures) {
  // The core, held here: a done callback that cancel_futures runs may destroy the executor, and
  // after cancel_tracked() nothing of `this` is touched.
  auto core = core_;
  core->check_owner("ThreadPoolExecutor::shutdown");  // before shutdown_mu_ (see check_owner)
  {
    std::lock_guard lk(shutdown_mu_);
    core->close();
  }
  if (cancel_futures) {
    Cancelling cancelling(this);
    cancel_tracked();
    // Destroyed there: its destructor left the wait to this call (shutdown(wait=true)).
    if (cancelling.dropped) wait = true;
  }
  if (wait) core->join();
}

// ---- ProcessPoolExecutor ----

namespace {
PoolOptions pool_options(ProcessPoolExecutorOptions& o) {
  PoolOptions p;
  p.processes = o.max_workers ? o.max_workers : cpu_count();
  p.initializer = std::move(o.initializer);
  p.maxtasksperchild = o.max_tasks_per_child;
  p.context = std::move(o.mp_context);
  return p;
}
}  // namespace

namespace detail {

ProcessExecutorCore::ProcessExecutorCore(unsigned max_workers, PoolOptions pool_options)
    : max_workers_(max_workers), maker_pid_(::getpid()), made_in_(fork_generation()) {
  pool_ = std::make_unique<Pool>(std::move(pool_options));
}

void ProcessExecutorCore::start() {
  // The manager thread works on the engine through `this`: whoever owns the engine joins that
  // thread before letting it go, or (leave_to_itself) the thread frees the engine itself.
  manager_ = std::thread([this] {
    // Orphaned (leave_to_itself), the loop freed the engine at its end: nothing of it is touched.
    if (manager_loop()) orphan_ended();
  });
}

ProcessExecutorCore::~ProcessExecutorCore() {
  if (inherited()) {
    // A forked child's copy (a child that calls exit() runs its globals' destructors): the
    // manager thread and the pool are the parent's; waiting for them would wait for ever, and a
    // joinable std::thread destroyed ends the program. The copy forgets them (the Pool's own
    // destructor leaves an inherited pool alone).
    // The manager thread may have been waiting on cv_ when the child was forked: destroying it
    // would wait for that waiter for ever. A fresh one has none.
    new (&manager_) std::thread();
    new (&cv_) std::condition_variable();
    return;
  }
  // Here after finish() (joined), after the manager thread ended everything itself (detached),
  // or after it stopped at terminate_workers() and the executor was destroyed in a done callback
  // (it has left its loop; the join returns at once).
  if (manager_.joinable()) {
    if (manager_.get_id() == std::this_thread::get_id())
      manager_.detach();
    else
      manager_.join();
  }
}

void ProcessExecutorCore::check_owner(const char* what) const {
  if (inherited())
    throw ProcessError(std::string("ProcessPoolExecutor::") + what +
                       "(): this executor belongs to process " + std::to_string(maker_pid_) +
                       ", which made it; a forked child (a pool worker included) cannot use its "
                       "copy (its thread and workers are the parent's): make an executor in the "
                       "child, or send work back to the parent");
}

void ProcessExecutorCore::enqueue(Call call) {
  {
    std::lock_guard lk(mu_);
    if (shutdown_)
      throw ProcessError(
          "ProcessPoolExecutor::submit(): cannot schedule new futures after shutdown (or "
          "terminate_workers/kill_workers)");
    pending_.push_back(std::move(call));
  }
  cv_.notify_all();
}

void ProcessExecutorCore::call_finished() {
  {
    std::lock_guard lk(mu_);
    --in_pool_;
  }
  cv_.notify_all();
}

void ProcessExecutorCore::stop_taking() {
  {
    std::lock_guard lk(mu_);
    shutdown_ = true;
  }
  cv_.notify_all();
}

bool ProcessExecutorCore::taking() const {
  std::lock_guard lk(mu_);
  return !shutdown_;
}

void ProcessExecutorCore::finish() {
  {
    std::unique_lock lk(mu_);
    shutdown_ = true;
    cv_.wait(lk, [&] { return stop_manager_ || (pending_.empty() && in_pool_ == 0); });
    stop_manager_ = true;
  }
  cv_.notify_all();
  if (manager_.joinable()) manager_.join();
  pool_->close();
  pool_->join();
}

void ProcessExecutorCore::leave_to_itself() {
  std::lock_guard lk(mu_);
  shutdown_ = true;
  // A manager thread that has left its loop (terminate_workers() came first) does nothing more:
  // the engine goes with the last handle, that of the code completing the call being called back.
  if (manager_done_) return;
  orphaned_ = true;
  self_ = shared_from_this();
  orphan_begun();  // the process's exit waits for the calls left (ended by manager_loop)
  cv_.notify_all();
}

void ProcessExecutorCore::stop_manager() {
  std::lock_guard lk(mu_);
  shutdown_ = true;
  stop_manager_ = true;
}

void ProcessExecutorCore::join_manager() {
  cv_.notify_all();
  // From a done callback run by the manager thread itself, that thread cannot be joined here: it
  // leaves its loop once the callback returns, and finish() (the destructor's) joins it, or it
  // ends everything itself (leave_to_itself).
  if (manager_.joinable() && manager_.get_id() != std::this_thread::get_id()) manager_.join();
}

bool ProcessExecutorCore::manager_loop() {
  // Python keeps max_workers + 1 calls in its call queue: a worker that finishes finds the next
  // call waiting, and every other call can still be cancelled.
  const size_t limit = static_cast<size_t>(max_workers_) + 1;
  // A call that cannot be handed to the pool fails here, running its done callbacks in this
  // thread: shutdown(wait=true) there would wait for this thread.
  t_starting_executor = this;
  std::unique_lock lk(mu_);
  auto all_done = [&] { return orphaned_ && pending_.empty() && in_pool_ == 0; };
  for (;;) {
    cv_.wait(
        lk, [&] { return stop_manager_ || (!pending_.empty() && in_pool_ < limit) || all_done(); });
    if (stop_manager_ || all_done()) break;
    Call call = std::move(pending_.front());
    pending_.pop_front();
    ++in_pool_;
    lk.unlock();
    bool started = call.start(*pool_);
    call = Call{};
    lk.lock();
    if (!started) --in_pool_;
    cv_.notify_all();
  }
  // Calls never handed over (the executor was ended by force): they fail.
  std::deque<Call> left = std::move(pending_);
  pending_.clear();
  lk.unlock();
  auto err = std::make_exception_ptr(
      BrokenPool("ProcessPoolExecutor: the executor ended before this call started"));
  for (auto& c : left) c.fail(err);
  left.clear();
  lk.lock();
  manager_done_ = true;
  if (!orphaned_) return false;  // the executor's owner joins this thread
  // The executor was destroyed in a done callback (leave_to_itself), and every call has finished
  // (or the executor was ended by force): end the pool, then free the engine, here.
  std::shared_ptr<ProcessExecutorCore> self = std::move(self_);
  lk.unlock();
  try {
    pool_->close();
    pool_->join();
  } catch (...) {
    // The pool's destructor (with the engine's, below) ends what is left.
  }
  // The engine's destructor lets this thread go (it cannot join itself).
  self.reset();
  return true;
}

}  // namespace detail

ProcessPoolExecutor::ProcessPoolExecutor(ProcessPoolExecutorOptions options) {
  unsigned n = options.max_workers ? options.max_workers : cpu_count();
  core_ = std::make_shared<detail::ProcessExecutorCore>(n, pool_options(options));
  core_->start();
}

ProcessPoolExecutor::~ProcessPoolExecutor() {
  // A forked child's copy: the engine's destructor forgets the parent's thread and pool.
  if (core_->inherited()) return;
  try {
    if (core_->is_own_thread())
      core_->leave_to_itself();
    else if (Cancelling* c = Cancelling::of(this))
      // terminate_workers()/kill_workers() is on this thread's stack, holding the engine: it
      // ends the workers and the pool. A graceful shutdown here would wait for the very calls
      // it is about to kill (for ever, for a call that never ends).
      c->drop();
    else
      shutdown(true, false);
  } catch (...) {
  }
}

void ProcessPoolExecutor::check_running() const {
  core_->check_owner("map");
  if (!core_->taking())
    throw ProcessError(
        "ProcessPoolExecutor: cannot schedule new futures after shutdown (or "
        "terminate_workers/kill_workers)");
}

void ProcessPoolExecutor::enqueue(detail::ProcessExecutorCore::Call call) {
  core_->check_owner("submit");
  core_->enqueue(std::move(call));
}

void ProcessPoolExecutor::shutdown(bool wait, bool cancel_futures) {
  // The engine, held here: a done callback that cancel_futures runs may destroy the executor.
  auto core = core_;
  core->check_owner("shutdown");
  core->stop_taking();
  if (cancel_futures) cancel_tracked();
  if (!wait) return;
  if (core->is_own_thread())
    throw ProcessError(
        "ProcessPoolExecutor::shutdown(wait=true) called from a done callback of its own future: "
        "the callback's call cannot finish while it waits. The executor takes no more calls; "
        "wait for it from another thread (or let its destructor do so)");
  core->finish();
}

void ProcessPoolExecutor::force_shutdown(int sig) {
  auto core = core_;  // as in shutdown()
  core->check_owner(sig == SIGKILL ? "kill_workers" : "terminate_workers");
  core->stop_manager();  // before cancelling: it hands no more calls to the pool
  {
    Cancelling cancelling(this);
    cancel_tracked();
  }
  core->join_manager();
  Pool& pool = core->pool();
  for (pid_t pid : pool.worker_pids()) ::kill(pid, sig);
  // The calls the workers held fail (WorkerLost or BrokenPool); nothing waits for them.
  pool.terminate();
}

void ProcessPoolExecutor::terminate_workers() {
  force_shutdown(SIGTERM);
}
void ProcessPoolExecutor::kill_workers() {
  force_shutdown(SIGKILL);
}

std::vector<pid_t> ProcessPoolExecutor::worker_pids() const {
  core_->check_owner("worker_pids");
  return core_->pool().worker_pids();
}

}  // namespace multiproc
