#include <multiproc/detail/pool_core.hpp>

#include <poll.h>
#include <sys/eventfd.h>
#include <unistd.h>
#include <algorithm>
#include <cerrno>
#include <csignal>
#include <cstring>
#include <system_error>

#include <multiproc/detail/child.hpp>
#include <multiproc/errors.hpp>
#include <multiproc/logging.hpp>
#include <multiproc/serialization.hpp>
#include "process/children.hpp"

namespace multiproc::detail {
namespace {

// The pool whose own thread (result pump, worker monitor) this is: pool callbacks run there, and
// join() from one would wait for itself.
thread_local const PoolCore* g_own_thread_of = nullptr;

int64_t now_ns() {
  return std::chrono::duration_cast<std::chrono::nanoseconds>(
             std::chrono::steady_clock::now().time_since_epoch())
      .count();
}

std::string describe_end(pid_t pid, int exitcode) {
  std::string s = "pool worker " + std::to_string(pid);
  if (exitcode < 0) {
    const char* name = sigabbrev_np(-exitcode);
    s += " was killed by signal " + std::to_string(-exitcode) +
         (name ? std::string(" (SIG") + name + ")" : "");
  } else {
    s += " exited with code " + std::to_string(exitcode);
  }
  return s;
}

std::string describe_exit(pid_t pid, int exitcode) {
  return describe_end(pid, exitcode) + " while running this task; the pool started a replacement";
}

std::string what_of(std::exception_ptr e) {
  try {
    std::rethrow_exception(e);
  } catch (...) {
    return current_exception_type() + ": " + current_exception_message();
  }
}

struct Message {
  size_t offset, size;
};
struct MessageBuffer {
  std::string bytes;
  std::vector<Message> messages;
};
void collect_message(void* ctx, const char* src, size_t size) {
  auto* b = static_cast<MessageBuffer*>(ctx);
  b->messages.push_back({b->bytes.size(), size});
  b->bytes.append(src, size);
}

// Puts the concatenated messages `batch` (sizes[i] bytes each) in one go.
void put_messages(QueueCore& q, const std::string& batch, const std::vector<size_t>& sizes) {
  if (sizes.empty()) return;
  struct Ctx {
    const char* base;
    std::vector<size_t> offsets;
    const std::vector<size_t>* sizes;
  } ctx{batch.data(), {}, &sizes};
  ctx.offsets.reserve(sizes.size());
  size_t off = 0;
  for (size_t s : sizes) {
    ctx.offsets.push_back(off);
    off += s;
  }
  q.put(
      sizes.size(), sizes.data(), 1,
      [](void* c, size_t i, char* dst) {
        auto* x = static_cast<Ctx*>(c);
        std::memcpy(dst, x->base + x->offsets[i], (*x->sizes)[i]);
      },
      &ctx, Deadline::never());
}

// How long a foreground waiter leaves the pump to the background thread after it is done: a
// caller in a get() loop keeps the pump without a hand-off each time.
constexpr int64_t kForegroundGraceNs = 2'000'000;
// Respawn storms: a worker that ends before taking its first task (its initializer failed or
// crashed, the program's binary is gone, the process cannot open the pool's segments...) will
// most likely be followed by a replacement that does the same. After max(20, 2 x processes) such
// deaths in a row, with no worker taking a task in between, the pool stops replacing them and
// breaks with BrokenPool naming the last cause.
constexpr unsigned kRespawnStormMin = 20;

}  // namespace

void report_callback_exception(const char* which) noexcept {
  try {
    std::string line = std::string("multiproc: exception in a Pool ") + which +
                       " (ignored): " + current_exception_type() + ": " +
                       current_exception_message() + "\n";
    (void)!::write(STDERR_FILENO, line.data(), line.size());  // one write: lines stay whole
  } catch (...) {
  }
}

PoolCore::PoolCore(PoolConfig config)
    : config_(std::move(config)), made_in_(fork_generation()), maker_pid_(::getpid()) {
  if (config_.processes == 0) config_.processes = cpu_count();
  if (config_.processes > 1024) throw ProcessError("Pool: at most 1024 processes");
}

void PoolCore::start() {
  // A reference of the pool's own to each of the initializer's shared objects (the caller may
  // drop its handles while the pool still starts workers).
  const std::string& refs = config_.initializer_objects;
  for (size_t at = 0; at + 8 <= refs.size();) {
    uint32_t kind = 0, len = 0;
    std::memcpy(&kind, refs.data() + at, 4);
    std::memcpy(&len, refs.data() + at + 4, 4);
    std::string name = refs.substr(at + 8, len);
    at += 8 + len;
    init_objects_.push_back(Segment::attach(name, static_cast<SegmentKind>(kind), true, false));
  }
  seg_ = Segment::create(SegmentKind::pool, sizeof(PoolData), true);
  data_ = new (seg_->payload()) PoolData{};
  data_->processes = config_.processes;
  tasks_ = QueueCore::create(0);
  results_ = QueueCore::create(0);
  slots_.resize(kTaskSlots);
  free_slots_.reserve(kTaskSlots);
  for (uint32_t i = kTaskSlots; i-- > 0;) free_slots_.push_back(i);
  event_fd_ = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
  if (event_fd_ < 0)
    throw ProcessError(std::string("Pool: eventfd: ") + std::generic_category().message(errno));
  {
    std::lock_guard lk(mu_);
    for (uint32_t i = 0; i < config_.processes; ++i) start_worker_locked(i);
  }
  note_internal_thread(+2);
  threads_started_ = true;
  // Each thread holds the pool only while it works on it (see pump_loop): a callback may drop
  // the last Pool handle, and the pool must outlive what that thread still does with it.
  std::weak_ptr<PoolCore> weak = weak_from_this();
  if (weak.expired()) throw ProcessError("PoolCore: must be owned by a std::shared_ptr");
  monitor_ = std::thread([this, weak] { monitor_loop(weak); });
  try {
    pump_thread_ = std::thread([this, weak] { pump_loop(weak); });
  } catch (const std::exception& e) {
    throw ProcessError(std::string("Pool: cannot start its result thread: ") + e.what());
  }
}

bool PoolCore::inherited() const {
  return made_in_ != fork_generation();
}

void PoolCore::check_owner(const char* what) const {
  if (inherited())
    throw ProcessError(std::string("Pool::") + what + "(): this Pool belongs to process " +
                       std::to_string(maker_pid_) +
                       ", which made it; a forked child (a pool worker included) cannot use its "
                       "copy: make a Pool in the child, or send work back to the parent");
}

PoolCore::~PoolCore() {
  if (inherited()) {
    // A forked child's copy (a child that calls exit() runs the destructors of its globals): the
    // threads, workers, queues and segment are the parent's. Ending or removing them would break
    // the parent's pool, so the copy forgets them.
    new (&monitor_) std::thread();
    new (&pump_thread_) std::thread();
    new (&tasks_) std::shared_ptr<QueueCore>();
    new (&results_) std::shared_ptr<QueueCore>();
    new (&seg_) std::shared_ptr<Segment>();
    // The parent's threads may have been waiting on these when the child was forked: destroying
    // one would wait for that waiter for ever. Fresh ones have none.
    new (&pump_idle_) std::condition_variable();
    new (&workers_changed_) std::condition_variable();
    if (event_fd_ >= 0) ::close(event_fd_);
    return;
  }
  if (state_.load() != State::terminated) {
    try {
      terminate();
    } catch (...) {
    }
  }
  // terminate() from a callback left the thread that ran it (it could not join itself).
  try {
    stop_threads();
  } catch (...) {
  }
  // The last handle went in a callback, and this is one of the pool's own threads: it cannot
  // join itself. It ends as soon as this destructor returns (its loop holds nothing of the pool).
  for (std::thread* t : {&monitor_, &pump_thread_})
    if (t->joinable() && t->get_id() == std::this_thread::get_id()) t->detach();
  if (threads_started_ && !monitor_.joinable() && !pump_thread_.joinable()) {
    note_internal_thread(-2);
    threads_started_ = false;
  }
  if (event_fd_ >= 0) ::close(event_fd_);
  // The pool's queues and table are private to it: remove them even if a killed worker never
  // released its reference.
  if (tasks_) tasks_->destroy();
  if (results_) results_->destroy();
  if (seg_) seg_->unlink();
}

void PoolCore::start_worker_locked(uint32_t index) {
  WorkerArgs args;
  args.pool_segment = seg_->name();
  args.task_queue = tasks_->name();
  args.result_queue = results_->name();
  args.index = index;
  args.maxtasks = config_.maxtasksperchild;
  args.has_initializer = config_.has_initializer;
  args.initializer = config_.initializer;
  args.initializer_args = config_.initializer_args;
  ChildPayload payload;
  payload.code = make_task_code<decltype(&pool_worker_main), WorkerArgs>();
  set_task_function(payload.code, &pool_worker_main);
  encode_task_args<decltype(&pool_worker_main)>(payload.args, args);
  // Python's names: ForkPoolWorker-1, SpawnPoolWorker-1, ForkServerPoolWorker-1.
  static constexpr const char* kWorkerPrefix[] = {"ForkPoolWorker-", "SpawnPoolWorker-",
                                                  "ForkServerPoolWorker-"};
  const auto method_index = static_cast<size_t>(config_.method);
  payload.name = std::string(method_index < 3 ? kWorkerPrefix[method_index] : "PoolWorker-") +
                 std::to_string(index + 1);
  payload.daemon = 1;  // as Python's pool workers
  payload.start_method = static_cast<uint8_t>(config_.method);
  payload.start_method_set = 1;
  std::string bytes;
  dump(bytes, payload);
  data_->workers[index].exit_reason.store(static_cast<uint32_t>(WorkerExit::running));
  data_->workers[index].took_task.store(0);  // the slot's previous worker may have set it
  check_can_start_processes(config_.method);
  note_process_started();
  // This launch's copy of the initializer's arguments carries one in-flight reference per
  // shared object, which the worker consumes when it opens them.
  for (auto& obj : init_objects_) obj->add_flight_ref();
  std::shared_ptr<Popen> popen;
  try {
    popen = launch(config_.method, bytes);
  } catch (...) {
    // No worker will consume them; the pool's own references keep the counts above zero.
    for (auto& obj : init_objects_) obj->header().refs.fetch_sub(1, std::memory_order_relaxed);
    throw;
  }
  data_->workers[index].pid.store(static_cast<uint32_t>(popen->pid()));
  workers_.push_back({std::move(popen), index});
  if (event_fd_ >= 0) {
    uint64_t one = 1;
    (void)!::write(event_fd_, &one, sizeof one);  // the monitor rebuilds its poll set
  }
}

size_t PoolCore::pending_calls() const {
  std::lock_guard lk(mu_);
  std::vector<const JobBase*> jobs;
  for (auto& s : slots_)
    if (s.job) jobs.push_back(s.job.get());
  for (auto& j : feeding_) jobs.push_back(j.get());
  std::sort(jobs.begin(), jobs.end());
  return static_cast<size_t>(std::unique(jobs.begin(), jobs.end()) - jobs.begin());
}

std::vector<pid_t> PoolCore::worker_pids() const {
  check_owner("worker_pids");  // the parent's workers: a child must not signal them
  std::lock_guard lk(mu_);
  std::vector<pid_t> pids;
  for (auto& w : workers_) pids.push_back(w.popen->pid());
  return pids;
}

// ---- dispatch ----------------------------------------------------------------------------------

void PoolCore::submit(std::shared_ptr<JobBase> job) {
  check_owner("apply/map/imap");
  {
    std::lock_guard lk(mu_);
    if (broken_) std::rethrow_exception(broken_);
    if (state_.load() != State::running)
      throw ProcessError("Pool not running: close() or terminate() was called");
    feeding_.push_back(std::move(job));
  }
  feed();
}

void PoolCore::feed() {
  std::vector<FailedChunk> failed;
  feed_locked(failed);
  // Outside feed_mu_: a job's error callback may submit to this pool.
  for (auto& f : failed) f.job->chunk_failed(f.chunk, f.error);
}

void PoolCore::retract_unsent(const std::string& batch, std::vector<Sent>& sent,
                              std::exception_ptr error, std::vector<FailedChunk>& failed) {
  // A put that fails may have put some of the messages. The ones no worker has claimed yet are
  // given up as a terminated pool gives up its tasks (a worker skips a message whose slot is no
  // longer QUEUED with its generation); each fails its own chunk with the put's error, as
  // Python's task handler does, and the pool goes on.
  for (const Sent& m : sent) {
    uint64_t queued = slot_word(m.gen, SlotState::queued, 0);
    if (!data_->slots[m.slot].compare_exchange_strong(queued,
                                                      slot_word(m.gen, SlotState::failed, 0)))
      continue;  // a worker took it: its result comes as usual
    slots_[m.slot] = {};
    free_slots_.push_back(m.slot);
    if (m.job->drop_args) {
      try {
        m.job->drop_args(batch.data() + m.args_at, batch.data() + m.end);
      } catch (...) {
        // Best effort: the resource tracker removes what is left at exit.
      }
    }
    failed.push_back({m.job, m.chunk, error});
  }
  sent.clear();
}

void PoolCore::put_or_retract(const std::string& batch, std::vector<size_t>& sizes,
                              std::vector<Sent>& sent, std::vector<FailedChunk>& failed) {
  try {
    put_messages(*tasks_, batch, sizes);
    sent.clear();
  } catch (...) {
    retract_unsent(batch, sent, std::current_exception(), failed);
  }
  sizes.clear();
}

void PoolCore::feed_locked(std::vector<FailedChunk>& failed) {
  std::lock_guard feeding(feed_mu_);
  std::string batch;
  std::vector<size_t> sizes;
  std::vector<Sent> sent;  // the messages in `batch`
  std::vector<std::pair<std::shared_ptr<JobBase>, std::exception_ptr>> input_errors;
  for (;;) {
    std::shared_ptr<JobBase> job;
    uint32_t slot = 0, gen = 0;
    {
      std::lock_guard lk(mu_);
      if (state_.load() == State::terminated) return;
      while (!feeding_.empty() && feeding_.front()->exhausted) feeding_.pop_front();
      if (feeding_.empty()) {
        if (state_.load() == State::closed && !sentinels_sent_) {
          sentinels_sent_ = true;
          // The chunks gathered in this pass go first: a worker leaves at its sentinel, and a
          // chunk queued behind every sentinel would never run (its result never ready).
          put_or_retract(batch, sizes, sent, failed);
          batch.clear();
          put_stop_sentinels_locked(config_.processes);
        }
        break;
      }
      if (free_slots_.empty()) break;
      // Round robin over jobs that want more; a job that does not is skipped for now.
      size_t tries = feeding_.size();
      while (tries-- && !feeding_.front()->wants_more()) {
        feeding_.push_back(feeding_.front());
        feeding_.pop_front();
      }
      if (!feeding_.front()->wants_more()) break;
      job = feeding_.front();
      slot = free_slots_.back();
      free_slots_.pop_back();
      gen = (slot_gen(data_->slots[slot].load()) + 1) & 0xffffff;
    }
    TaskHeader h{slot, gen, static_cast<uint32_t>(TaskKind::task),
                 static_cast<uint32_t>(job->code_bytes.size())};
    std::string msg(reinterpret_cast<const char*>(&h), sizeof h);
    msg += job->code_bytes;
    uint32_t chunk = 0;
    bool more = false;
    std::exception_ptr input_error;
    try {
      more = job->next_chunk(msg, chunk);
    } catch (...) {
      input_error = std::current_exception();
    }
    std::lock_guard lk(mu_);
    if (more && state_.load() == State::terminated) {
      // terminate() ran while the chunk was encoded: it fails the job; the chunk's handles go.
      free_slots_.push_back(slot);
      size_t args_at = sizeof h + job->code_bytes.size();
      if (job->drop_args) job->drop_args(msg.data() + args_at, msg.data() + msg.size());
      return;
    }
    if (!more) {
      free_slots_.push_back(slot);
      job->exhausted = true;
      if (input_error) input_errors.push_back({job, input_error});
      continue;
    }
    data_->slots[slot].store(slot_word(gen, SlotState::queued, 0), std::memory_order_release);
    slots_[slot] = {job, chunk, gen};
    const size_t args_at = sizeof h + job->code_bytes.size();
    if (msg.size() >= (64u << 10)) {
      // A big chunk goes out on its own, without being copied into the batch first.
      put_or_retract(batch, sizes, sent, failed);
      batch.clear();
      std::vector<Sent> alone{{job, chunk, slot, gen, args_at, msg.size()}};
      std::vector<size_t> size{msg.size()};
      put_or_retract(msg, size, alone, failed);
      give_buffer(std::move(msg));
      continue;
    }
    sent.push_back({job, chunk, slot, gen, batch.size() + args_at, batch.size() + msg.size()});
    sizes.push_back(msg.size());
    batch += msg;
    if (batch.size() > (1u << 20)) {  // keep workers busy while a long input is encoded
      put_or_retract(batch, sizes, sent, failed);
      batch.clear();
    }
  }
  {
    std::lock_guard lk(mu_);  // as the puts inside the loop
    put_or_retract(batch, sizes, sent, failed);
  }
  for (auto& [job, error] : input_errors) job->input_failed(error);
}

std::string PoolCore::take_buffer() {
  std::lock_guard lk(buffers_mu_);
  if (buffers_.empty()) return {};
  std::string b = std::move(buffers_.back());
  buffers_.pop_back();
  b.clear();
  return b;
}

void PoolCore::give_buffer(std::string&& buffer) {
  constexpr size_t kKeep = 64;
  constexpr size_t kBiggest = 8u << 20;
  if (buffer.capacity() < (64u << 10) || buffer.capacity() > kBiggest) return;
  std::lock_guard lk(buffers_mu_);
  if (buffers_.size() < kKeep) buffers_.push_back(std::move(buffer));
}

void PoolCore::put_stop_sentinels_locked(unsigned count) {
  for (unsigned i = 0; i < count; ++i) {
    TaskHeader h{0, 0, static_cast<uint32_t>(TaskKind::stop), 0};
    size_t size = sizeof h;
    tasks_->put(
        1, &size, 0, [](void* c, size_t, char* dst) { std::memcpy(dst, c, sizeof(TaskHeader)); },
        &h, Deadline::never());
  }
}

// ---- results -----------------------------------------------------------------------------------

size_t PoolCore::pump_once(const Deadline& deadline, bool spin,
                           const std::atomic<uint32_t>* interrupt) {
  // Kept between calls: big results would otherwise fault in fresh pages. A nested call (a
  // callback that waits on a result) gets a buffer of its own: the outer one is still being read.
  static thread_local MessageBuffer reused;
  static thread_local int depth = 0;
  MessageBuffer nested;
  MessageBuffer& buf = depth == 0 ? reused : nested;
  struct Depth {
    Depth() { ++depth; }
    ~Depth() { --depth; }
  } in_pump;
  buf.bytes.clear();
  buf.messages.clear();
  size_t n = results_->get(1024, &collect_message, &buf, deadline, spin, interrupt);
  std::exception_ptr damage;
  for (auto& m : buf.messages) {
    // One damaged message must not keep the good ones after it from their results.
    try {
      handle_result(buf.bytes.data() + m.offset, m.size);
    } catch (...) {
      if (!damage) damage = std::current_exception();
    }
  }
  if (damage) std::rethrow_exception(damage);
  if (n) feed();
  return n;
}

// The result queue is shared memory that every worker (and so every task) can write: nothing in a
// message is trusted. A message that cannot be one of ours breaks the pool (the caller turns the
// exception into BrokenPool); a payload that does not decode fails its own task only (the jobs'
// chunk_done catch it).
void PoolCore::handle_result(const char* p, size_t n) {
  auto damaged = [&](const std::string& why) {
    return ProcessError("Pool: damaged message in the result queue (" + why + ", " +
                        std::to_string(n) +
                        " bytes): a task or worker wrote over the pool's shared memory");
  };
  if (n < sizeof(ResultHeader)) throw damaged("shorter than its header");
  ResultHeader h;
  std::memcpy(&h, p, sizeof h);
  const char* payload = p + sizeof h;
  size_t size = n - sizeof h;
  switch (static_cast<ResultKind>(h.kind)) {
    case ResultKind::worker_died:
      if (size != 0 || h.pid <= 0) throw damaged("malformed worker notice");
      handle_worker_died(h.pid, h.exitcode);
      return;
    case ResultKind::pool_broken: {
      if (size != 0) throw damaged("malformed break notice");
      std::exception_ptr broken;
      {
        std::lock_guard lk(mu_);
        broken = broken_;
      }
      if (!broken) throw damaged("a break notice from a pool that is not broken");
      fail_everything(broken);
      return;
    }
    case ResultKind::result:
      break;
    default:
      throw damaged("unknown kind " + std::to_string(h.kind));
  }
  if (h.slot >= kTaskSlots) throw damaged("task slot " + std::to_string(h.slot) + " out of range");
  if (h.gen > 0xffffff) throw damaged("task generation out of range");
  std::shared_ptr<JobBase> job;
  uint32_t chunk = 0;
  {
    std::lock_guard lk(mu_);
    auto& w = data_->slots[h.slot];
    uint64_t cur = w.load();
    if (slot_gen(cur) != h.gen || slot_state(cur) != SlotState::taken) return;  // already failed
    if (!w.compare_exchange_strong(cur, slot_word(h.gen, SlotState::done, 0))) return;
    job = std::move(slots_[h.slot].job);
    chunk = slots_[h.slot].chunk;
    free_slots_.push_back(h.slot);
  }
  job->chunk_done(chunk, payload, size);
}

void PoolCore::handle_worker_died(pid_t pid, int exitcode) {
  if (state_.load() == State::terminated) return;  // terminate() fails the rest as BrokenPool
  std::vector<std::pair<std::shared_ptr<JobBase>, uint32_t>> lost;
  {
    std::lock_guard lk(mu_);
    for (uint32_t i = 0; i < kTaskSlots; ++i) {
      if (!slots_[i].job) continue;
      auto& w = data_->slots[i];
      uint64_t cur = w.load();
      if (slot_state(cur) != SlotState::taken || slot_pid(cur) != static_cast<uint32_t>(pid))
        continue;
      if (!w.compare_exchange_strong(cur, slot_word(slot_gen(cur), SlotState::failed, 0))) continue;
      lost.push_back({std::move(slots_[i].job), slots_[i].chunk});
      free_slots_.push_back(i);
    }
  }
  for (auto& [job, chunk] : lost)
    job->chunk_failed(
        chunk, std::make_exception_ptr(WorkerLost(pid, exitcode, describe_exit(pid, exitcode))));
  if (!lost.empty()) feed();
}

bool PoolCore::wait_until(const std::function<bool()>& ready, const Deadline& deadline) {
  if (ready()) return true;
  foreground_waiters_.fetch_add(1);
  results_->wake_getters();  // the pump thread lets go of the pump
  bool ok = false;
  bool first_slice = true;
  for (;;) {
    if (ready()) {
      ok = true;
      break;
    }
    if (deadline.expired()) break;
    std::unique_lock pump(pump_mu_, std::try_to_lock);
    if (pump.owns_lock()) {
      Deadline slice{Deadline::Clock::now() + std::chrono::milliseconds(5)};
      if (deadline.at && *deadline.at < *slice.at) slice = deadline;
      // The monitor raises monitor_event_ (and wakes us) when a worker ends: join() and the
      // like need not wait for the slice to run out.
      // Spin only in the first slice: a long wait (CPU-bound tasks) must not take CPU time
      // from the workers.
      try {
        pump_once(slice, first_slice, &monitor_event_);
      } catch (...) {
        // Results cannot be processed: every pending one (this caller's included) fails.
        break_pool("processing results failed: " + what_of(std::current_exception()));
        std::this_thread::sleep_for(std::chrono::milliseconds(1));
      }
      first_slice = false;
      monitor_event_.store(0);
    } else {
      std::this_thread::sleep_for(std::chrono::microseconds(50));
    }
  }
  last_foreground_ns_.store(now_ns());
  if (foreground_waiters_.fetch_sub(1) == 1) {
    std::lock_guard lk(pump_idle_mu_);
    pump_idle_.notify_one();
  }
  return ok;
}

void PoolCore::pump_loop(const std::weak_ptr<PoolCore>& weak) {
  g_own_thread_of = this;
  // Results are processed here only while no caller is waiting on one (callbacks, imap feeding,
  // replacing input while the program does something else); a waiting caller pumps itself.
  for (;;) {
    // Declared first, so released last: a callback that dropped the last Pool handle leaves the
    // pool to be destroyed here, at the end of the pass (the destructor lets this thread go),
    // after which the loop finds nothing to lock and returns without touching the pool.
    std::shared_ptr<PoolCore> self = weak.lock();
    if (!self || stopping_.load()) return;
    {
      std::unique_lock lk(pump_idle_mu_);
      int64_t quiet_for = now_ns() - last_foreground_ns_.load();
      if (foreground_waiters_.load() > 0) {
        pump_idle_.wait_for(lk, std::chrono::milliseconds(100));
        continue;
      }
      if (quiet_for < kForegroundGraceNs) {
        pump_idle_.wait_for(lk, std::chrono::nanoseconds(kForegroundGraceNs - quiet_for));
        continue;
      }
    }
    std::unique_lock pump(pump_mu_, std::try_to_lock);
    if (!pump.owns_lock()) {
      std::this_thread::sleep_for(std::chrono::milliseconds(1));
      continue;
    }
    try {
      pump_once(Deadline{Deadline::Clock::now() + std::chrono::milliseconds(100)}, false,
                &foreground_waiters_);
    } catch (...) {
      // An exception must not leave this thread (std::terminate): the pool breaks instead, and
      // the thread stays to keep answering (slowly) until the pool is terminated.
      break_pool("the pool's result thread failed: " + what_of(std::current_exception()));
      pump.unlock();
      std::this_thread::sleep_for(std::chrono::milliseconds(100));
    }
  }
}

// ---- workers -----------------------------------------------------------------------------------

void PoolCore::monitor_loop(const std::weak_ptr<PoolCore>& weak) {
  g_own_thread_of = this;
  for (;;) {
    std::shared_ptr<PoolCore> self = weak.lock();  // as in pump_loop
    if (!self || stopping_.load()) return;
    try {
      std::vector<pollfd> fds;
      std::vector<std::shared_ptr<Popen>> popens;
      fds.push_back({event_fd_, POLLIN, 0});
      {
        std::lock_guard lk(mu_);
        for (auto& w : workers_) {
          fds.push_back({w.popen->sentinel(), POLLIN, 0});
          popens.push_back(w.popen);
        }
      }
      int r = ::poll(fds.data(), fds.size(), 1000);
      if (r < 0 && errno != EINTR)
        throw ProcessError(std::string("poll on the workers' sentinels: ") +
                           std::generic_category().message(errno));
      if (fds[0].revents) {
        uint64_t v;
        (void)!::read(event_fd_, &v, sizeof v);
      }
      for (size_t i = 1; i < fds.size(); ++i) {
        if (!fds[i].revents) continue;
        auto code = popens[i - 1]->poll();
        if (!code) continue;
        pid_t pid = popens[i - 1]->pid();
        bool died = false;
        bool put_sentinel = false;
        bool broke_now = false;  // this death broke the pool
        {
          std::lock_guard lk(mu_);
          auto it = std::find_if(workers_.begin(), workers_.end(),
                                 [&](const Worker& w) { return w.popen == popens[i - 1]; });
          if (it == workers_.end()) continue;
          uint32_t index = it->index;
          workers_.erase(it);
          WorkerSlot& slot = data_->workers[index];
          auto reason = static_cast<WorkerExit>(slot.exit_reason.load());
          const bool was_broken = broken_ != nullptr;
          State st = state_.load();
          // A worker killed by terminate() is not a loss to report: terminate fails what is
          // left with BrokenPool.
          died = reason == WorkerExit::running && st != State::terminated;
          bool early = (reason == WorkerExit::running || reason == WorkerExit::init_failed) &&
                       slot.took_task.load() == 0 && st != State::terminated;
          if (early) {
            ++early_deaths_;
            if (reason == WorkerExit::init_failed) {
              char why[sizeof slot.init_error + 1] = {};
              std::memcpy(why, slot.init_error, sizeof slot.init_error);  // may be unterminated
              early_death_cause_ = std::string("the initializer failed: ") + why;
            } else {
              early_death_cause_ = describe_end(pid, *code);
            }
          } else if (reason != WorkerExit::stopped) {
            early_deaths_ = 0;
          }
          const unsigned storm_limit = std::max(kRespawnStormMin, 2 * config_.processes);
          bool replace = st != State::terminated && reason != WorkerExit::stopped && !broken_;
          if (early && early_deaths_ >= storm_limit && !broken_) {
            replace = false;
            broken_ = std::make_exception_ptr(BrokenPool(
                "Pool is broken: " + std::to_string(early_deaths_) +
                " workers in a row ended before taking their first task, so the pool stopped "
                "replacing them; the last: " +
                early_death_cause_));
          }
          if (replace) {
            try {
              get_logger().info("worker " + std::to_string(index + 1) +
                                " of the pool ended; starting a replacement");
              start_worker_locked(index);
              // A worker that died after taking its stop sentinel leaves its replacement
              // without one.
              put_sentinel = died && sentinels_sent_;
            } catch (const std::exception& e) {
              broken_ = std::make_exception_ptr(BrokenPool(
                  std::string("Pool is broken: cannot start a replacement worker: ") + e.what()));
            }
          }
          broke_now = !was_broken && broken_ != nullptr;
          workers_changed_.notify_all();
        }
        monitor_event_.store(1);
        results_->wake_getters();
        if (put_sentinel) {
          std::lock_guard lk(mu_);
          put_stop_sentinels_locked(1);
        }
        auto notice = [&](ResultKind kind) {
          ResultHeader h{0, 0, static_cast<uint32_t>(kind), pid, *code, 0};
          size_t size = sizeof h;
          results_->put(
              1, &size, 0,
              [](void* c, size_t, char* dst) { std::memcpy(dst, c, sizeof(ResultHeader)); }, &h,
              Deadline::never());
        };
        if (died) notice(ResultKind::worker_died);
        // The pool's break fails what is left, but through the queue, behind the notices of the
        // workers that died before it (and their results): a task that killed its worker fails
        // with WorkerLost even when the respawn storm that followed broke the pool before the
        // pump got to that worker's notice (it failed with BrokenPool then, now and then under
        // load). Refused submissions already see broken_.
        if (broke_now) notice(ResultKind::pool_broken);
      }
    } catch (...) {
      // An exception must not leave this thread (std::terminate, the workers orphaned): the pool
      // breaks instead, and the thread goes on reaping workers until the pool is terminated.
      break_pool("the pool's monitor thread failed: " + what_of(std::current_exception()));
      std::this_thread::sleep_for(std::chrono::milliseconds(100));
    }
  }
}

void PoolCore::break_pool(const std::string& what) noexcept {
  try {
    std::exception_ptr broken;
    {
      std::lock_guard lk(mu_);
      if (!broken_) broken_ = std::make_exception_ptr(BrokenPool("Pool is broken: " + what));
      broken = broken_;
    }
    fail_everything(broken);
    monitor_event_.store(1);
    results_->wake_getters();
  } catch (...) {
    // Out of memory while reporting: nothing better to do than leave the pool as it is.
  }
}

void PoolCore::fail_everything(std::exception_ptr error) {
  std::vector<std::shared_ptr<JobBase>> jobs;
  {
    std::lock_guard lk(mu_);
    for (uint32_t i = 0; i < kTaskSlots; ++i)
      if (slots_[i].job) {
        data_->slots[i].store(slot_word(slots_[i].gen, SlotState::failed, 0));
        if (slots_[i].job->drop_args) unrun_.push_back({i, {slots_[i].gen, slots_[i].job}});
        jobs.push_back(std::move(slots_[i].job));
        free_slots_.push_back(i);
      }
    for (auto& j : feeding_) {
      jobs.push_back(j);
      if (j->drop_args) unsent_.push_back(j);
    }
    feeding_.clear();
  }
  for (auto& j : jobs) j->abandon(error);
}

// ---- lifecycle ---------------------------------------------------------------------------------

void PoolCore::close() {
  check_owner("close");
  {
    std::lock_guard lk(mu_);
    if (state_.load() == State::running) state_.store(State::closed);
    for (auto& j : feeding_) j->pool_closed();
  }
  feed();  // sends the stop sentinels once nothing is left to dispatch
}

void PoolCore::terminate() {
  check_owner("terminate");
  bool again = false;
  {
    std::lock_guard lk(mu_);
    again = state_.load() == State::terminated;
    state_.store(State::terminated);
  }
  if (again) {
    // terminate() from a callback left the thread that ran it going: wait here until it has left
    // the callback (~Pool relies on this: no callback may run once the Pool is gone).
    stop_threads();
    return;
  }
  std::vector<std::shared_ptr<Popen>> popens;
  {
    std::lock_guard lk(mu_);
    for (auto& w : workers_) popens.push_back(w.popen);
  }
  for (auto& p : popens) p->send_signal(SIGTERM);
  auto grace = Deadline{Deadline::Clock::now() + std::chrono::milliseconds(200)};
  for (auto& p : popens)
    if (!p->wait(grace)) p->send_signal(SIGKILL);
  for (auto& p : popens) p->wait(Deadline::never());
  stop_threads();
  {
    std::lock_guard lk(mu_);
    workers_.clear();
  }
  fail_everything(std::make_exception_ptr(BrokenPool("Pool terminated before the task completed")));
  release_unrun_tasks();
  workers_changed_.notify_all();
}

void PoolCore::stop_threads() {
  // A callback run by one of the pool's own threads may end the pool (terminate() there, as
  // Python's _terminate_pool allows from its result handler): that thread cannot join itself. It
  // leaves its loop once the callback returns, and whoever stops the threads next (the
  // destructor, a join()) joins it. If another caller is stopping the threads already, it is
  // joining this one: waiting for it here would wait for ever.
  const bool own_thread = g_own_thread_of == this;
  std::unique_lock threads(threads_mu_, std::defer_lock);
  if (own_thread) {
    if (!threads.try_lock()) {
      stopping_.store(true);
      return;
    }
  } else {
    threads.lock();
  }
  stopping_.store(true);
  if (event_fd_ >= 0) {
    uint64_t one = 1;
    (void)!::write(event_fd_, &one, sizeof one);
  }
  foreground_waiters_.fetch_add(1);        // makes the pump thread's wait return
  if (results_) results_->wake_getters();  // null when start() failed early
  {
    std::lock_guard lk(pump_idle_mu_);
    pump_idle_.notify_all();
  }
  const auto me = std::this_thread::get_id();
  if (monitor_.joinable() && monitor_.get_id() != me) monitor_.join();
  if (pump_thread_.joinable() && pump_thread_.get_id() != me) pump_thread_.join();
  foreground_waiters_.fetch_sub(1);
  if (threads_started_ && !monitor_.joinable() && !pump_thread_.joinable()) {
    note_internal_thread(-2);
    threads_started_ = false;
  }
}

void PoolCore::release_unrun_tasks() noexcept {
  try {
    std::lock_guard feeding(feed_mu_);  // a feeder still encoding sees `terminated` and stops
    std::vector<std::pair<uint32_t, Unrun>> unrun;
    std::vector<std::shared_ptr<JobBase>> unsent;
    {
      std::lock_guard lk(mu_);
      unrun.swap(unrun_);
      unsent.swap(unsent_);
    }
    // The workers are gone: what the task queue still holds was never opened by anyone (a worker
    // killed between claiming a task and committing its dequeue left it there too).
    if (!unrun.empty()) {
      std::sort(unrun.begin(), unrun.end(),
                [](const auto& a, const auto& b) { return a.first < b.first; });
      MessageBuffer buf;
      while (tasks_->get(1024, &collect_message, &buf, Deadline::now(), false, nullptr) > 0) {
        for (auto& m : buf.messages) {
          if (m.size < sizeof(TaskHeader)) continue;
          const char* p = buf.bytes.data() + m.offset;
          TaskHeader h;
          std::memcpy(&h, p, sizeof h);
          if (h.kind != static_cast<uint32_t>(TaskKind::task)) continue;
          auto it = std::lower_bound(unrun.begin(), unrun.end(), h.slot,
                                     [](const auto& a, uint32_t s) { return a.first < s; });
          if (it == unrun.end() || it->first != h.slot || it->second.gen != h.gen) continue;
          if (h.code_size > m.size - sizeof h) continue;
          try {
            it->second.job->drop_args(p + sizeof h + h.code_size, p + m.size);
          } catch (...) {
          }
        }
        buf.bytes.clear();
        buf.messages.clear();
      }
    }
    for (auto& job : unsent) {
      try {
        job->drop_unsent();
      } catch (...) {
      }
    }
  } catch (...) {
    // Releasing is best effort: what is left, the resource tracker removes at exit.
  }
}

bool PoolCore::join(const Deadline& deadline) {
  check_owner("join");
  if (state_.load() == State::running)
    throw ProcessError("Pool::join(): call close() or terminate() first");
  if (g_own_thread_of == this) {
    throw ProcessError(
        "Pool::join(): called from a callback of this pool, in the pool's result thread, "
        "which join() waits for; call join() from another thread");
  }
  if (state_.load() == State::closed) {
    // Workers leave once they take their stop sentinel, after every task; results meanwhile
    // are processed here.
    bool done = wait_until(
        [&] {
          std::lock_guard lk(mu_);
          return workers_.empty() || broken_ != nullptr;
        },
        deadline);
    if (!done) return false;
    std::exception_ptr broken;
    {
      std::lock_guard lk(mu_);
      broken = broken_;
    }
    // Drain results the last workers sent before leaving.
    {
      std::lock_guard pump(pump_mu_);
      try {
        while (pump_once(Deadline::now(), false, nullptr) > 0) {
        }
      } catch (...) {
        break_pool("processing results failed: " + what_of(std::current_exception()));
        std::lock_guard lk(mu_);
        broken = broken_;
      }
    }
    if (broken)
      terminate();
    else {
      stop_threads();
      state_.store(State::terminated);
    }
    return true;
  }
  // After terminate(): the pool's threads end (one that ran a terminate() from a callback may
  // still be in that callback).
  stop_threads();
  return true;
}

}  // namespace multiproc::detail
