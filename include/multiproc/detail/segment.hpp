// Named POSIX shared-memory segments: what every shared object (queue, lock, value, ...) lives in.
//
// Lifetime. A refcounted segment's header counts references held by processes (one per process
// that maps it, whatever the number of handles there) plus references "in flight": a handle that
// has been serialized into a message (task argument, queue item) but not yet opened by its
// receiver. The last release unlinks the name and runs the kind's finalizer (a queue unlinks its
// rings). A process that dies without releasing leaves its count behind; the resource tracker
// (resource_tracker.hpp) unlinks every name it was told about once the last process of the tree is
// gone, so nothing outlives the program in /dev/shm.
//
// Owned segments (a queue's rings and out-of-line blobs) are not refcounted: their owner object
// unlinks them.
#pragma once

#include <sys/types.h>
#include <atomic>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>

namespace multiproc::detail {

enum class SegmentKind : uint32_t {
  queue = 1,
  ring = 2,
  blob = 3,
  sync = 4,    // Lock, RLock, Semaphore, Event, Condition, Barrier
  shared = 5,  // Value, Array
  pool = 6,
  ordered_queue = 7,  // LifoQueue, PriorityQueue (their stores are owned `blob` segments)
  user = 100,
};

inline constexpr uint64_t kSegmentMagic = 0x4745534f52504d4dULL;  // "MMPROSEG"
inline constexpr uint32_t kSegmentLayoutVersion = 1;
inline constexpr size_t kMaxSegmentName = 48;

struct alignas(64) SegmentHeader {
  uint64_t magic;
  uint32_t layout_version;
  uint32_t kind;
  uint64_t payload_size;
  std::atomic<int64_t> refs;  // see the file comment; unused for owned segments
};
static_assert(sizeof(SegmentHeader) == 64);
static_assert(std::atomic<int64_t>::is_always_lock_free);

// The in-flight references a thread takes while one of these is active (serializing a queue
// item): a queue that holds the item records them, so that it can release them if it is
// destroyed with the item still in it (queue_core.hpp).
struct FlightRefLog {
  std::string entries;  // per reference: u32 kind, u32 name length, the name
  FlightRefLog* outer;
  FlightRefLog();
  ~FlightRefLog();
  FlightRefLog(const FlightRefLog&) = delete;
  FlightRefLog& operator=(const FlightRefLog&) = delete;
  void add(uint32_t kind, const std::string& name);
};
inline thread_local FlightRefLog* t_flight_ref_log = nullptr;
inline FlightRefLog::FlightRefLog() : outer(t_flight_ref_log) {
  t_flight_ref_log = this;
}
inline FlightRefLog::~FlightRefLog() {
  t_flight_ref_log = outer;
}
inline void FlightRefLog::add(uint32_t kind, const std::string& name) {
  const uint32_t len = static_cast<uint32_t>(name.size());
  entries.append(reinterpret_cast<const char*>(&kind), 4);
  entries.append(reinterpret_cast<const char*>(&len), 4);
  entries.append(name);
}

class Segment {
 public:
  // A fresh segment with `payload_size` zeroed bytes. Refcounted ones start with one reference,
  // this process's. Its pages are reserved now: a full /dev/shm throws ProcessError here (naming
  // /dev/shm and the size) instead of killing the process with SIGBUS at a later first touch.
  static std::shared_ptr<Segment> create(SegmentKind kind, size_t payload_size, bool refcounted);
  // Maps an existing segment. For a refcounted one, `consume_flight_ref` says the caller got the
  // name from a serialized handle whose in-flight reference now becomes this process's (or is
  // dropped when this process already maps it). Throws ProcessError when the name is gone or the
  // header does not match (wrong kind, magic or layout version).
  static std::shared_ptr<Segment> attach(const std::string& name, SegmentKind kind, bool refcounted,
                                         bool consume_flight_ref);

  ~Segment();
  Segment(const Segment&) = delete;
  Segment& operator=(const Segment&) = delete;

  void* payload() const { return payload_; }
  size_t payload_size() const { return header_->payload_size; }
  const std::string& name() const { return name_; }
  SegmentHeader& header() const { return *header_; }

  // Serializing a handle takes a reference for the copy in flight.
  void add_flight_ref() {
    header_->refs.fetch_add(1, std::memory_order_relaxed);
    if (t_flight_ref_log) t_flight_ref_log->add(header_->kind, name_);
  }
  // Removes the name now (owned segments). Mappings stay valid until unmapped.
  void unlink();

  // Internal: the process that holds this mapping's reference (0 = none).
  pid_t ref_owner = 0;
  bool refcounted = false;

 private:
  Segment() = default;
  std::string name_;
  SegmentHeader* header_ = nullptr;
  void* payload_ = nullptr;
  size_t map_size_ = 0;
};

// What to do when the last reference to a refcounted segment of `kind` goes (before unlink).
using SegmentFinalizer = void (*)(Segment&);
void register_segment_finalizer(SegmentKind kind, SegmentFinalizer f);

// A fresh name: "/<prefix><pid>_<16 hex digits from getrandom>". The prefix is
// MULTIPROC_SHM_PREFIX or "mp". Segment::create draws another when the name exists already.
std::string new_segment_name();
// Tests only: new_segment_name() returns source() instead while it is set (nullptr restores).
void set_segment_name_source_for_testing(std::string (*source)());

// Fork support, used by the fork start method only. Before fork(): take one reference per live
// refcounted segment for the child. In the child: become the owner of those references.
// If fork() failed: give them back.
void segments_before_fork();
void segments_after_fork_child();
void segments_after_fork_parent(bool fork_failed);

// Removes a segment by name (and tells the tracker); a missing name is not an error.
void unlink_segment(const std::string& name);

// Drops this process's reference to every segment it maps (a child's orderly exit).
void release_all_segments();

}  // namespace multiproc::detail
