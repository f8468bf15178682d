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

ThreadPoolExecutor::~ThreadPoolExecutor() {
  if (core_->inherited()) return;  // a forked child's copy: the core forgets the parent's threads
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
  core_->check_owner("ThreadPoolExecutor::shutdown");  // before shutdown_mu_ (see check_owner)
  std::lock_guard lk(shutdown_mu_);
  core_->close();
  if (cancel_futures) cancel_tracked();
  if (wait) core_->join();
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

ProcessPoolExecutor::ProcessPoolExecutor(ProcessPoolExecutorOptions options)
    : max_workers_(options.max_workers ? options.max_workers : cpu_count()),
      maker_pid_(::getpid()),
      made_in_(detail::fork_generation()) {
  pool_ = std::make_unique<Pool>(pool_options(options));
  manager_ = std::thread([this] { manager_loop(); });
}

ProcessPoolExecutor::~ProcessPoolExecutor() {
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
  try {
    shutdown(true, false);
  } catch (...) {
  }
}

void ProcessPoolExecutor::check_owner(const char* what) const {
  // Before any lock: a thread of the parent may have held one when the child was forked.
  if (inherited())
    throw ProcessError(std::string("ProcessPoolExecutor::") + what +
                       "(): this executor belongs to process " + std::to_string(maker_pid_) +
                       ", which made it; a forked child (a pool worker included) cannot use its "
                       "copy (its thread and workers are the parent's): make an executor in the "
                       "child, or send work back to the parent");
}

void ProcessPoolExecutor::check_running() const {
  check_owner("map");
  std::lock_guard lk(mu_);
  if (shutdown_)
    throw ProcessError(
        "ProcessPoolExecutor: cannot schedule new futures after shutdown (or "
        "terminate_workers/kill_workers)");
}

void ProcessPoolExecutor::enqueue(Call call) {
  check_owner("submit");
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

void ProcessPoolExecutor::call_finished() {
  {
    std::lock_guard lk(mu_);
    --in_pool_;
  }
  cv_.notify_all();
}

void ProcessPoolExecutor::manager_loop() {
  // Python keeps max_workers + 1 calls in its call queue: a worker that finishes finds the next
  // call waiting, and every other call can still be cancelled.
  const size_t limit = static_cast<size_t>(max_workers_) + 1;
  // A call that cannot be handed to the pool fails here, running its done callbacks in this
  // thread: shutdown(wait=true) there would wait for this thread.
  detail::t_starting_executor = this;
  std::unique_lock lk(mu_);
  for (;;) {
    cv_.wait(lk, [&] { return stop_manager_ || (!pending_.empty() && in_pool_ < limit); });
    if (stop_manager_) break;
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
}

void ProcessPoolExecutor::shutdown(bool wait, bool cancel_futures) {
  check_owner("shutdown");
  {
    std::lock_guard lk(mu_);
    shutdown_ = true;
  }
  if (cancel_futures) cancel_tracked();
  cv_.notify_all();
  if (!wait) return;
  if (detail::t_completing_executor == this || detail::t_starting_executor == this)
    throw ProcessError(
        "ProcessPoolExecutor::shutdown(wait=true) called from a done callback of its own future: "
        "the callback's call cannot finish while it waits. The executor takes no more calls; "
        "wait for it from another thread (or let its destructor do so)");
  {
    std::unique_lock lk(mu_);
    cv_.wait(lk, [&] { return stop_manager_ || (pending_.empty() && in_pool_ == 0); });
    stop_manager_ = true;
  }
  cv_.notify_all();
  if (manager_.joinable()) manager_.join();
  pool_->close();
  pool_->join();
}

void ProcessPoolExecutor::force_shutdown(int sig) {
  check_owner(sig == SIGKILL ? "kill_workers" : "terminate_workers");
  {
    std::lock_guard lk(mu_);
    shutdown_ = true;
    stop_manager_ = true;
  }
  cancel_tracked();
  cv_.notify_all();
  // From a done callback run by the manager thread itself, that thread cannot be joined here: it
  // leaves its loop once the callback returns, and shutdown() (the destructor's) joins it.
  if (manager_.joinable() && manager_.get_id() != std::this_thread::get_id()) manager_.join();
  for (pid_t pid : pool_->worker_pids()) ::kill(pid, sig);
  // The calls the workers held fail (WorkerLost or BrokenPool); nothing waits for them.
  pool_->terminate();
}

void ProcessPoolExecutor::terminate_workers() {
  force_shutdown(SIGTERM);
}
void ProcessPoolExecutor::kill_workers() {
  force_shutdown(SIGKILL);
}

std::vector<pid_t> ProcessPoolExecutor::worker_pids() const {
  check_owner("worker_pids");
  return pool_->worker_pids();
}

}  // namespace multiproc
