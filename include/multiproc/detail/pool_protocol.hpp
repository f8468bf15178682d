// The pool's messages and shared task table (internal).
//
// Task queue (parent -> workers): TaskHeader, encoded TaskCode, encoded chunk arguments.
// Result queue (workers and the parent's monitor -> parent): ResultHeader, payload.
//
// The task table (in the pool's segment) makes worker deaths exact. Each task in flight owns a
// slot whose word packs {generation, state, pid}. A worker moves QUEUED (or TAKEN by a worker that
// died mid-dequeue) to TAKEN(its pid) while it still holds the task queue's lock, before the
// dequeue commits; only the parent moves TAKEN to DONE (a result arrived) or FAILED (the worker
// died), each with a CAS. So a task either runs once or is reported lost once.
#pragma once

#include <atomic>
#include <cstdint>
#include <cstring>
#include <string>
#include <string_view>

#include <multiproc/errors.hpp>

namespace multiproc::detail {

inline constexpr uint32_t kTaskSlots = 16384;

enum class SlotState : uint32_t { free = 0, queued = 1, taken = 2, done = 3, failed = 4 };

inline uint64_t slot_word(uint32_t gen, SlotState s, uint32_t pid) {
  return (uint64_t{gen} << 40) | (uint64_t{static_cast<uint32_t>(s)} << 32) | pid;
}
inline uint32_t slot_gen(uint64_t w) {
  return static_cast<uint32_t>(w >> 40);
}
inline SlotState slot_state(uint64_t w) {
  return static_cast<SlotState>((w >> 32) & 0xff);
}
inline uint32_t slot_pid(uint64_t w) {
  return static_cast<uint32_t>(w);
}

enum class WorkerExit : uint32_t { running = 0, stopped = 1, recycled = 2, init_failed = 3 };

struct WorkerSlot {
  std::atomic<uint32_t> pid;
  std::atomic<uint32_t> exit_reason;  // WorkerExit, written just before an orderly exit
  // Set once the worker has claimed its first task: a worker that ends without it counts towards
  // a respawn storm (PoolCore gives up after kRespawnStormLimit such deaths in a row).
  std::atomic<uint32_t> took_task;
  // Why the initializer failed ("Type: message", truncated), written before exit_reason, so the
  // monitor can report it as soon as it sees the worker gone.
  char init_error[244];
};

static_assert(sizeof(WorkerSlot) == 256);

struct PoolData {
  uint32_t layout_version;
  uint32_t processes;
  alignas(64) std::atomic<uint64_t> slots[kTaskSlots];
  WorkerSlot workers[1024];
};

enum class TaskKind : uint32_t { task = 0, stop = 1 };

struct TaskHeader {
  uint32_t slot;
  uint32_t gen;
  uint32_t kind;
  uint32_t code_size;  // bytes of encoded TaskCode after the header; args follow
};
static_assert(sizeof(TaskHeader) == 16);

// A task message taken apart: the bytes come from shared memory any process of the user can
// write, so the sizes in the header are checked against the message before anything is read.
struct TaskFrame {
  TaskHeader header;
  std::string_view code;  // the encoded TaskCode
  const char* args;       // the encoded arguments: [args, end)
  const char* end;
};

inline TaskFrame split_task_frame(const char* p, size_t n) {
  TaskFrame f{};
  if (n < sizeof(TaskHeader))
    throw ProcessError("pool: corrupt task: " + std::to_string(n) + " bytes");
  std::memcpy(&f.header, p, sizeof f.header);
  if (f.header.code_size > n - sizeof(TaskHeader)) {
    throw ProcessError("pool: corrupt task: code of " + std::to_string(f.header.code_size) +
                       " bytes in a message of " + std::to_string(n));
  }
  f.code = std::string_view(p + sizeof(TaskHeader), f.header.code_size);
  f.args = p + sizeof(TaskHeader) + f.header.code_size;
  f.end = p + n;
  return f;
}

// What the result queue carries: a task's result (from a worker), and the monitor's notices. The
// monitor's notices go through the same queue as the results so that the pump sees everything in
// the order it happened: a worker's last results before its death, its death before the pool's
// break.
enum class ResultKind : uint32_t { result = 0, worker_died = 1, pool_broken = 2 };

struct ResultHeader {
  uint32_t slot;
  uint32_t gen;
  uint32_t kind;
  int32_t pid;
  int32_t exitcode;
  uint32_t reserved;
};
static_assert(sizeof(ResultHeader) == 24);

}  // namespace multiproc::detail
