// A pool worker: take a task (claiming its slot in the task table while the task queue's lock is
// held, see pool_protocol.hpp), run it, send the result; until a stop sentinel or maxtasks.
#include <malloc.h>
#include <unistd.h>
#include <algorithm>
#include <cstring>
#include <unordered_map>

#include <multiproc/detail/child.hpp>
#include <multiproc/detail/pool_core.hpp>
#include <multiproc/errors.hpp>
#include <multiproc/process.hpp>
#include <multiproc/serialization.hpp>

namespace multiproc::detail {
namespace {

struct Take {
  PoolData* pool;
  uint32_t pid;
  std::string* task;
  bool stop = false;
  bool claimed = false;
};

// Runs with the task queue's get lock held, before the dequeue commits.
void take_task(void* ctx, const char* src, size_t size) {
  auto* t = static_cast<Take*>(ctx);
  t->claimed = false;
  if (size < sizeof(TaskHeader)) return;
  TaskHeader h;
  std::memcpy(&h, src, sizeof h);
  if (h.kind == static_cast<uint32_t>(TaskKind::stop)) {
    t->stop = true;
    return;
  }
  if (h.slot >= kTaskSlots) return;
  auto& word = t->pool->slots[h.slot];
  uint64_t cur = word.load(std::memory_order_acquire);
  for (;;) {
    SlotState st = slot_state(cur);
    // TAKEN here means a worker died between claiming and committing: the task is ours now.
    if (slot_gen(cur) != h.gen || (st != SlotState::queued && st != SlotState::taken)) return;
    if (word.compare_exchange_weak(cur, slot_word(h.gen, SlotState::taken, t->pid))) break;
  }
  t->claimed = true;
  t->task->assign(src, size);
}

void put_result(QueueCore& results, const std::string& msg) {
  size_t size = msg.size();
  results.put(
      1, &size, 0,
      [](void* c, size_t, char* dst) {
        auto* m = static_cast<const std::string*>(c);
        std::memcpy(dst, m->data(), m->size());
      },
      const_cast<std::string*>(&msg), Deadline::never());
}

}  // namespace

void pool_worker_main(WorkerArgs args) {
  // A worker decodes and encodes chunks of up to megabytes over and over: let malloc keep that
  // memory instead of mapping fresh (zeroed, faulting) pages for every chunk.
  // A worker process is single-threaded while it starts.
  mallopt(M_MMAP_THRESHOLD, 64 << 20);   // NOLINT(concurrency-mt-unsafe)
  mallopt(M_TRIM_THRESHOLD, 256 << 20);  // NOLINT(concurrency-mt-unsafe)
  auto seg = Segment::attach(args.pool_segment, SegmentKind::pool, true, false);
  auto* pool = static_cast<PoolData*>(seg->payload());
  auto tasks = QueueCore::attach_existing(args.task_queue);
  auto results = QueueCore::attach_existing(args.result_queue);
  WorkerSlot& me = pool->workers[args.index];
  const uint32_t pid = static_cast<uint32_t>(getpid());

  if (args.has_initializer) {
    try {
      ResolvedTask init = resolve_task(args.initializer);
      init.invoker(init.fn, args.initializer_args.data(),
                   args.initializer_args.data() + args.initializer_args.size(), nullptr);
    } catch (...) {
      std::string why = current_exception_type() + ": " + current_exception_message();
      size_t n = std::min(why.size(), sizeof me.init_error - 1);
      std::memcpy(me.init_error, why.data(), n);
      me.init_error[n] = 0;
      me.exit_reason.store(static_cast<uint32_t>(WorkerExit::init_failed),
                           std::memory_order_release);
      exit_child(1);
    }
  }

  std::unordered_map<std::string, ResolvedTask> resolved;  // code bytes -> addresses
  std::string task, out;
  uint64_t done = 0;
  bool took_task = false;
  for (;;) {
    Take t{pool, pid, &task};
    if (tasks->get(1, &take_task, &t, Deadline::never()) == 0) continue;
    if (t.stop) {
      me.exit_reason.store(static_cast<uint32_t>(WorkerExit::stopped));
      exit_child(0);
    }
    if (!t.claimed) continue;  // the parent gave this task up
    if (!took_task) {
      me.took_task.store(1, std::memory_order_relaxed);
      took_task = true;
    }
    TaskHeader h;
    std::memcpy(&h, task.data(), sizeof h);
    out.assign(sizeof(ResultHeader), '\0');
    ResultHeader rh{
        h.slot, h.gen, static_cast<uint32_t>(ResultKind::result), static_cast<int32_t>(pid), 0, 0};
    std::memcpy(out.data(), &rh, sizeof rh);
    try {
      const TaskFrame frame = split_task_frame(task.data(), task.size());
      std::string code_key(frame.code);
      auto it = resolved.find(code_key);
      if (it == resolved.end())
        it = resolved.emplace(code_key, resolve_task(load<TaskCode>(frame.code))).first;
      it->second.invoker(it->second.fn, frame.args, frame.end, &out);
    } catch (...) {
      // The chunk could not even be decoded: report it as one failure for the whole chunk.
      out.resize(sizeof(ResultHeader));
      out.push_back(static_cast<char>(2));
      dump(out, current_exception_type());
      dump(out, current_exception_message());
      dump(out, task_worker_identity());
    }
    put_result(*results, out);
    if (args.maxtasks && ++done >= args.maxtasks) {
      me.exit_reason.store(static_cast<uint32_t>(WorkerExit::recycled));
      exit_child(0);
    }
  }
}

std::string task_worker_identity() {
  // Not cached: a forked child would inherit its parent's answer. Only errors ask.
  try {
    ProcessInfo me = current_process();
    return me.name + " (pid " + std::to_string(me.pid) + ")";
  } catch (...) {
    return "pid " + std::to_string(getpid());  // the error being reported matters more
  }
}

}  // namespace multiproc::detail
