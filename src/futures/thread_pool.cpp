// ThreadPool's engine: a closure queue and its threads.
#include <multiproc/thread_pool.hpp>

#include <unistd.h>

#include <atomic>
#include <cstdio>
#include <cstdlib>
#include <exception>
#include <string>

#include <multiproc/context.hpp>

namespace multiproc {
namespace detail {

namespace {
// The orphaned threads of this process (fork generation g_orphans_of): counted without a lock,
// which a forked child could inherit held by a thread it does not have.
std::atomic<uint32_t> g_orphans_of{0};
std::atomic<int> g_orphans{0};
// This thread let itself go (join_threads): it counts as an orphan until it ends.
thread_local bool t_orphan = false;

void wait_for_orphans() {
  // A forked child's count is its parent's threads, which it does not have.
  if (g_orphans_of.load() != fork_generation()) return;
  if (t_executor_thread || t_completing_executor || t_starting_executor) return;
  for (int n = g_orphans.load(); n > 0; n = g_orphans.load()) g_orphans.wait(n);
}
}  // namespace

void orphan_begun() {
  // Registered at the first orphan, so after the handler that ends the pool workers (registered
  // when the first worker started): atexit handlers run in reverse order, this one first.
  static bool installed = (std::atexit(wait_for_orphans), true);
  (void)installed;
  const uint32_t gen = fork_generation();
  if (g_orphans_of.load() != gen) {
    g_orphans.store(0);
    g_orphans_of.store(gen);
  }
  g_orphans.fetch_add(1);
}

void orphan_ended() {
  if (g_orphans_of.load() != fork_generation()) return;
  if (g_orphans.fetch_sub(1) == 1) g_orphans.notify_all();
}

ThreadPoolCore::ThreadPoolCore(unsigned threads, std::function<void()> initializer)
    : n_(threads),
      initializer_(std::move(initializer)),
      maker_pid_(::getpid()),
      made_in_(fork_generation()) {
  threads_.reserve(n_);
  try {
    for (unsigned i = 0; i < n_; ++i)
      threads_.emplace_back([this] {
        t_executor_thread = true;
        loop();
        // The core may be gone (loop() held the last reference): nothing of it is touched.
        if (t_orphan) orphan_ended();
      });
  } catch (...) {
    terminate();
    throw;
  }
}

ThreadPoolCore::~ThreadPoolCore() {
  if (inherited()) {
    // A forked child's copy (a child that calls exit() runs its globals' destructors): the
    // threads are the parent's. Joining them would wait for ever, and a joinable std::thread
    // destroyed ends the program: the copy forgets them. A thread of the parent may have been
    // waiting on cv_ when the child was forked: destroying it would wait for that waiter; a
    // fresh one has none. The calls still queued are dropped unrun: their results are the
    // parent's.
    for (auto& t : threads_) new (&t) std::thread();
    new (&cv_) std::condition_variable();
    return;
  }
  end_threads();
}

void ThreadPoolCore::check_owner(const char* call) const {
  // Before any lock: a thread of the parent may have held one when the child was forked.
  if (inherited())
    throw ProcessError(std::string(call) + "(): this pool's threads belong to process " +
                       std::to_string(maker_pid_) +
                       ", which made it; a forked child cannot use its copy (its threads are not "
                       "in the child): make one in the child");
}

void ThreadPoolCore::loop() {
  if (initializer_) {
    // A thread whose setup failed would run calls without it: the pool closes, and the calls
    // queued so far fail with BrokenPool (Python's ThreadPool retries the initializer forever).
    try {
      initializer_();
    } catch (const std::exception& e) {
      std::fprintf(stderr, "multiproc: ThreadPool initializer threw: %s\n", e.what());
      std::unique_lock lk(mu_);
      if (state_ == State::running) state_ = State::closed;
      std::deque<Task> dropped = std::move(queue_);
      queue_.clear();
      lk.unlock();
      cv_.notify_all();
      auto err = std::make_exception_ptr(
          BrokenPool(std::string("ThreadPool: the initializer threw: ") + e.what()));
      for (auto& t : dropped) t.fail(err);
      return;
    } catch (...) {
      std::fprintf(stderr, "multiproc: ThreadPool initializer threw a non-standard exception\n");
      std::unique_lock lk(mu_);
      if (state_ == State::running) state_ = State::closed;
      std::deque<Task> dropped = std::move(queue_);
      queue_.clear();
      lk.unlock();
      cv_.notify_all();
      auto err = std::make_exception_ptr(BrokenPool("ThreadPool: the initializer threw"));
      for (auto& t : dropped) t.fail(err);
      return;
    }
  }
  // Declared before the lock, so released after it: once this thread has run a task, the core
  // lives until the thread leaves this loop (see the class comment). Taken at the first task,
  // not at start: the owner's shared_ptr is made after the constructor starts the threads, and a
  // task is submitted only after it is. Nothing else costs a task an extra atomic operation.
  std::shared_ptr<ThreadPoolCore> self;
  std::unique_lock lk(mu_);
  for (;;) {
    cv_.wait(lk, [this] { return !queue_.empty() || state_ != State::running; });
    if (queue_.empty()) return;  // closed (or terminated) and drained
    if (!self) self = weak_from_this().lock();
    Task t = std::move(queue_.front());
    queue_.pop_front();
    ++running_;
    lk.unlock();
    t.run();
    t = Task{};  // the closure's captures (arguments, results) go before the next task
    lk.lock();
    --running_;
  }
}

void ThreadPoolCore::submit(Task task, bool internal) {
  check_owner("ThreadPool::apply/map/imap");
  {
    std::lock_guard lk(mu_);
    if (state_ == State::terminated || (state_ == State::closed && !internal))
      throw ProcessError("ThreadPool: not running (closed or terminated)");
    queue_.push_back(std::move(task));
  }
  cv_.notify_one();
}

bool ThreadPoolCore::closed() const {
  check_owner("ThreadPool");
  std::lock_guard lk(mu_);
  return state_ != State::running;
}

bool ThreadPoolCore::terminated() const {
  check_owner("ThreadPool");
  std::lock_guard lk(mu_);
  return state_ == State::terminated;
}

size_t ThreadPoolCore::pending() const {
  check_owner("ThreadPool");
  std::lock_guard lk(mu_);
  return queue_.size() + running_;
}

void ThreadPoolCore::close() {
  check_owner("ThreadPool::close");
  {
    std::lock_guard lk(mu_);
    if (state_ == State::running) state_ = State::closed;
  }
  cv_.notify_all();
}

void ThreadPoolCore::terminate() {
  check_owner("ThreadPool::terminate");
  end_threads();
}

void ThreadPoolCore::end_threads(bool warn_if_pending) {
  std::deque<Task> dropped;
  {
    std::lock_guard lk(mu_);
    if (warn_if_pending && state_ == State::running && queue_.size() + running_ > 0)
      std::fprintf(stderr,
                   "multiproc: ThreadPool destroyed with %zu call(s) pending: they are cancelled "
                   "(BrokenPool). Wait for the results, or close() and join(), first.\n",
                   queue_.size() + running_);
    state_ = State::terminated;
    dropped = std::move(queue_);
    queue_.clear();
  }
  cv_.notify_all();
  // Outside the lock: a fail hook completes a result, whose callbacks may do anything.
  auto err = std::make_exception_ptr(
      BrokenPool("ThreadPool terminated before this call started (terminate() or the pool's "
                 "destructor): keep the pool until its results are ready"));
  for (auto& t : dropped)
    if (t.fail) t.fail(err);
  join_threads();
}

void ThreadPoolCore::join() {
  check_owner("ThreadPool::join");
  {
    std::lock_guard lk(mu_);
    if (state_ == State::running)
      throw ProcessError("ThreadPool::join(): call close() or terminate() first");
  }
  join_threads();
}

void ThreadPoolCore::join_threads() {
  std::lock_guard jl(join_mu_);
  for (auto& t : threads_) {
    if (!t.joinable()) continue;
    // A task that ends its own pool cannot wait for itself: its thread is let go and exits
    // after the task returns (the core lives on in the pool's result states' closures).
    if (t.get_id() == std::this_thread::get_id()) {
      t.detach();
      t_orphan = true;
      orphan_begun();
    } else
      t.join();
  }
}

}  // namespace detail

ThreadPool::ThreadPool(int processes)
    : ThreadPool([processes] {
        if (processes < 1)
          throw ProcessError("ThreadPool: processes must be at least 1 (got " +
                             std::to_string(processes) + ")");
        return ThreadPoolOptions{static_cast<unsigned>(processes), {}};
      }()) {}

ThreadPool::ThreadPool(ThreadPoolOptions options) {
  unsigned n = options.processes ? options.processes : static_cast<unsigned>(cpu_count());
  if (n == 0) n = 1;
  core_ = std::make_shared<detail::ThreadPoolCore>(n, std::move(options.initializer));
}

ThreadPool::~ThreadPool() {
  if (!core_) return;
  if (core_->inherited()) return;  // a forked child's copy: the core forgets the parent's threads
  core_->end_threads(true);
}

void ThreadPool::close() {
  core()->close();
}
void ThreadPool::join() {
  core()->join();
}
void ThreadPool::terminate() {
  core()->terminate();
}
unsigned ThreadPool::processes() const {
  return core()->threads();
}

}  // namespace multiproc
