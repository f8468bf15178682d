// The pool's engine, independent of task types (CPython's pool.py, restructured).
//
// Workers pull tasks from one shared task queue and push results to one result queue (both
// QueueCore, in shared memory). The parent runs two threads: a monitor that waits on the workers'
// sentinels and replaces any worker that ends, and a result pump. Any thread waiting on a result
// (AsyncResult::get, imap's next, join) takes the pump over while it waits, so a round trip costs
// no thread hand-off. Jobs (pool_jobs.hpp) produce chunks on demand, so imap reads its input only
// as slots free up, and consume their chunks' outcomes. See pool_protocol.hpp for how a worker's
// death fails exactly the tasks it held.
#pragma once

#include <sys/types.h>

#include <atomic>
#include <condition_variable>
#include <cstdint>
#include <deque>
#include <exception>
#include <functional>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include <multiproc/context.hpp>
#include <multiproc/detail/fork_generation.hpp>
#include <multiproc/detail/pool_protocol.hpp>
#include <multiproc/detail/popen.hpp>
#include <multiproc/detail/queue_core.hpp>
#include <multiproc/detail/segment.hpp>
#include <multiproc/detail/task.hpp>
#include <multiproc/timeout.hpp>

namespace multiproc::detail {

// One submitted call (apply, map, imap...). Methods are called by the pool with no pool lock held
// but never concurrently for one job (the pool serializes feeding and completion per job).
class JobBase {
 public:
  virtual ~JobBase() = default;
  // Encodes the next chunk's arguments into `args` (already holding the task code) and returns
  // true, or returns false when the input is exhausted. An exception from the user's input
  // range is caught by the pool and handed to input_failed().
  virtual bool next_chunk(std::string& args, uint32_t& chunk) = 0;
  // Whether the job wants more chunks in flight now (imap bounds its buffered results).
  virtual bool wants_more() { return true; }
  // close() was called: join() waits for every call, so a job may no longer wait for its
  // consumer before reading the rest of its input (Python's task handler reads it all).
  virtual void pool_closed() {}
  virtual void chunk_done(uint32_t chunk, const char* p, size_t n) = 0;
  virtual void chunk_failed(uint32_t chunk, std::exception_ptr error) = 0;
  virtual void input_failed(std::exception_ptr error) = 0;
  // The pool ends: fail whatever has not completed.
  virtual void abandon(std::exception_ptr error) = 0;
  // terminate(): chunks encoded but never handed to the pool will never be sent. Their handles
  // (queues, locks... inside arguments) each hold an in-flight reference: drop_args releases it.
  virtual void drop_unsent() {}

  std::string code_bytes;  // the encoded TaskCode of the chunk invoker, prefixed to each task
  bool exhausted = false;  // (pool-internal) no more chunks
  // Decodes a chunk's encoded arguments and discards them, so that every handle among them is
  // opened and released as a worker would have. Null when the arguments cannot hold a handle.
  void (*drop_args)(const char* p, const char* end) = nullptr;
};

struct PoolConfig {
  unsigned processes = 0;
  StartMethod method = StartMethod::fork;
  uint64_t maxtasksperchild = 0;
  bool has_initializer = false;
  TaskCode initializer;
  std::string initializer_args;
  std::string initializer_objects;  // FlightRefLog entries: the shared objects in the args
};

class PoolCore : public std::enable_shared_from_this<PoolCore> {
 public:
  explicit PoolCore(PoolConfig config);
  ~PoolCore();
  void start();

  // Queues a job and dispatches what the free task slots allow. Throws if closed/terminated.
  void submit(std::shared_ptr<JobBase> job);
  // Waits until ready() or the deadline, processing results meanwhile. Returns ready().
  bool wait_until(const std::function<bool()>& ready, const Deadline& deadline);
  // A job whose wants_more() may have turned true (its consumer took results): dispatch.
  void feed();

  void close();
  void terminate();
  bool join(const Deadline& deadline);

  // Buffers for encoding chunks, recycled: a big map would otherwise fault in fresh pages for
  // every chunk on every call.
  std::string take_buffer();
  void give_buffer(std::string&& buffer);

  unsigned processes() const { return config_.processes; }
  // Submitted jobs (apply, map...) not yet complete, for ~Pool's warning.
  size_t pending_calls() const;
  std::vector<pid_t> worker_pids() const;
  bool closed() const { return state_.load() != State::running; }
  // A copy inherited by a forked child (see check_owner): it must not touch the parent's pool.
  bool inherited() const;

 private:
  enum class State { running, closed, terminated };
  struct SlotInfo {
    std::shared_ptr<JobBase> job;
    uint32_t chunk = 0;
    uint32_t gen = 0;
  };
  struct Worker {
    std::shared_ptr<Popen> popen;
    uint32_t index;
  };

  // A chunk whose task message could not be put (a full /dev/shm, EMFILE...): it fails with the
  // put's error, reported once feed_mu_ is released.
  struct FailedChunk {
    std::shared_ptr<JobBase> job;
    uint32_t chunk;
    std::exception_ptr error;
  };
  // A task message in a batch being put: its slot and where its arguments lie in the batch.
  struct Sent {
    std::shared_ptr<JobBase> job;
    uint32_t chunk;
    uint32_t slot;
    uint32_t gen;
    size_t args_at;
    size_t end;
  };
  void feed_locked(std::vector<FailedChunk>& failed);
  // Both with mu_ held.
  void put_or_retract(const std::string& batch, std::vector<size_t>& sizes, std::vector<Sent>& sent,
                      std::vector<FailedChunk>& failed);
  void retract_unsent(const std::string& batch, std::vector<Sent>& sent, std::exception_ptr error,
                      std::vector<FailedChunk>& failed);
  void start_worker_locked(uint32_t index);
  void monitor_loop(const std::weak_ptr<PoolCore>& weak);
  void pump_loop(const std::weak_ptr<PoolCore>& weak);
  // Processes what the result queue holds (waiting until the deadline for the first message).
  size_t pump_once(const Deadline& deadline, bool spin, const std::atomic<uint32_t>* interrupt);
  void handle_result(const char* p, size_t n);
  void handle_worker_died(pid_t pid, int exitcode);
  void fail_everything(std::exception_ptr error);
  // An error inside one of the pool's own threads (or while a caller pumps): the pool is broken,
  // every pending result fails with BrokenPool naming `what`, and the program goes on.
  void break_pool(const std::string& what) noexcept;
  // terminate(): opens and drops the handles inside tasks that no worker took.
  void release_unrun_tasks() noexcept;
  void put_stop_sentinels_locked(unsigned count);
  // close()+join() and terminate(): wakes the monitor and the pump thread and joins them.
  void stop_threads();

  PoolConfig config_;
  // The initializer's shared objects, held for the pool's lifetime: each worker launch takes an
  // in-flight reference to each for its copy of the arguments, which the worker consumes.
  std::vector<std::shared_ptr<Segment>> init_objects_;
  std::shared_ptr<Segment> seg_;
  PoolData* data_ = nullptr;
  std::shared_ptr<QueueCore> tasks_;
  std::shared_ptr<QueueCore> results_;

  std::recursive_mutex pump_mu_;  // held by whoever processes results
  std::atomic<uint32_t> foreground_waiters_{0};
  std::atomic<int64_t> last_foreground_ns_{0};
  std::mutex pump_idle_mu_;  // the pump thread sleeps on pump_idle_ while a caller pumps
  std::condition_variable pump_idle_;
  std::atomic<uint32_t> monitor_event_{0};  // a worker ended: waiters re-check at once

  mutable std::mutex mu_;  // everything below
  std::condition_variable workers_changed_;
  std::atomic<State> state_{State::running};
  std::vector<SlotInfo> slots_;
  std::vector<uint32_t> free_slots_;
  std::deque<std::shared_ptr<JobBase>> feeding_;
  std::vector<Worker> workers_;
  bool sentinels_sent_ = false;
  unsigned early_deaths_ = 0;  // workers in a row that ended before taking their first task
  std::string early_death_cause_;
  std::exception_ptr broken_;
  std::mutex feed_mu_;  // one feeder at a time (it runs user input ranges)
  // What fail_everything() gave up, kept for release_unrun_tasks(): the tasks that may still sit
  // in the task queue (by slot, with their generation) and the jobs that had chunks left to send.
  struct Unrun {
    uint32_t gen;
    std::shared_ptr<JobBase> job;
  };
  std::vector<std::pair<uint32_t, Unrun>> unrun_;
  std::vector<std::shared_ptr<JobBase>> unsent_;

  std::mutex buffers_mu_;
  std::vector<std::string> buffers_;

  int event_fd_ = -1;
  std::thread monitor_;
  std::thread pump_thread_;
  std::atomic<bool> stopping_{false};
  bool threads_started_ = false;
  uint32_t made_in_;  // the fork generation of the process that made the pool
  pid_t maker_pid_;
  // Throws ProcessError in a forked child's copy of the pool (its workers are not the child's).
  void check_owner(const char* what) const;
  // Serializes stop_threads(): terminate() and a join() in another thread both end the pool's
  // threads, and a std::thread joined twice at once hangs.
  std::mutex threads_mu_;
};

// The worker process's main loop (src/pool/pool_worker.cpp), launched as an ordinary task.
struct WorkerArgs {
  std::string pool_segment;
  std::string task_queue;
  std::string result_queue;
  uint32_t index = 0;
  uint64_t maxtasks = 0;
  bool has_initializer = false;
  TaskCode initializer;
  std::string initializer_args;

  template <class Archive>
  void serialize(Archive& ar) {
    ar(pool_segment, task_queue, result_queue, index, maxtasks, has_initializer, initializer,
       initializer_args);
  }
};
void pool_worker_main(WorkerArgs args);
// The process running tasks, as a task's error names it: "ForkPoolWorker-2 (pid 4242)".
std::string task_worker_identity();

}  // namespace multiproc::detail
