#include <multiproc/detail/segment.hpp>

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/random.h>
#include <sys/stat.h>
#include <unistd.h>
#include <atomic>
#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <mutex>
#include <system_error>
#include <unordered_map>
#include <utility>
#include <vector>

#include <multiproc/detail/resource_tracker.hpp>
#include <multiproc/errors.hpp>

namespace multiproc::detail {
namespace {

// Every mapping this process holds, by name, so that a segment is mapped (and counted) once per
// process however many handles point at it. Leaked on purpose: handles in static storage are
// destroyed after function-local statics, and must still find the registry.
struct Registry {
  std::mutex mu;
  std::unordered_map<std::string, std::weak_ptr<Segment>> by_name;
  SegmentFinalizer finalizers[128] = {};
};
Registry& registry() {
  static Registry* r = new Registry;
  return *r;
}

std::string errno_text() {
  return std::generic_category().message(errno);
}

size_t page_round(size_t n) {
  const size_t page = 4096;
  return (n + page - 1) / page * page;
}

void run_finalizer(Segment& s) {
  uint32_t kind = s.header().kind;
  SegmentFinalizer f = nullptr;
  if (kind < 128) {
    std::lock_guard lk(registry().mu);
    f = registry().finalizers[kind];
  }
  if (f) f(s);
}

// Drops one reference; the last one unlinks.
void release_ref(Segment& s) {
  if (s.header().refs.fetch_sub(1, std::memory_order_acq_rel) == 1) {
    run_finalizer(s);
    s.unlink();
  }
}

std::string (*g_segment_name_source)() = nullptr;

}  // namespace

std::string new_segment_name() {
  if (g_segment_name_source) return g_segment_name_source();
  // 64 bits from the kernel: another local user cannot pre-create the names we will pick (16
  // bits could be exhausted in a second), and a forked child draws fresh ones (no generator
  // state to inherit). Uniqueness within the program comes from O_EXCL and a retry.
  uint64_t random = 0;
  size_t got = 0;
  while (got < sizeof random) {
    ssize_t n = getrandom(reinterpret_cast<char*>(&random) + got, sizeof random - got, 0);
    if (n > 0)
      got += static_cast<size_t>(n);
    else if (n < 0 && errno != EINTR)
      throw ProcessError(std::string("cannot name a shared memory segment: getrandom: ") +
                         errno_text());
  }
  const char* prefix = std::getenv("MULTIPROC_SHM_PREFIX");
  if (!prefix || !*prefix || std::strlen(prefix) > 16) prefix = "mp";
  // At most 1 + 16 + 7 (pid_max is 2^22) + 1 + 16 = 41 characters.
  char buf[kMaxSegmentName];
  std::snprintf(buf, sizeof buf, "/%s%d_%016llx", prefix, static_cast<int>(getpid()),
                static_cast<unsigned long long>(random));
  return buf;
}

void set_segment_name_source_for_testing(std::string (*source)()) {
  g_segment_name_source = source;
}

namespace {

// Creates a fresh name exclusively. A name that exists already (someone else's, by chance or
// not) is never opened: another random name is drawn.
std::pair<std::string, int> create_unique_name() {
  constexpr int kAttempts = 64;
  for (int attempt = 0; attempt < kAttempts; ++attempt) {
    std::string name = new_segment_name();
    tracker_register(name);  // before it exists: a crash right after leaves nothing untracked
    int fd = shm_open(name.c_str(), O_RDWR | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
    if (fd >= 0) return {std::move(name), fd};
    const int e = errno;
    tracker_unregister(name);
    errno = e;
    if (e != EEXIST)
      throw ProcessError("cannot create shared memory segment " + name +
                         " in /dev/shm: " + errno_text());
  }
  throw ProcessError("cannot create a shared memory segment in /dev/shm: " +
                     std::to_string(kAttempts) + " fresh random names all existed already");
}

}  // namespace

std::shared_ptr<Segment> Segment::create(SegmentKind kind, size_t payload_size, bool refcounted) {
  // Sizes come from users (Array(n)) and from peers: the byte count must not wrap, and a file
  // offset is signed.
  constexpr size_t kMaxPayload = static_cast<size_t>(INT64_MAX) - sizeof(SegmentHeader) - 4096;
  if (payload_size > kMaxPayload)
    throw ProcessError("cannot create a shared memory segment of " + std::to_string(payload_size) +
                       " bytes: too large");
  const size_t map_size = page_round(sizeof(SegmentHeader) + payload_size);
  auto [name, fd] = create_unique_name();
  // tmpfs's ftruncate reserves nothing: a full /dev/shm would show as SIGBUS at the first touch
  // of a page, anywhere in the program. posix_fallocate takes the pages now, or fails here.
  int e;
  do {
    e = posix_fallocate(fd, 0, static_cast<off_t>(map_size));
  } while (e == EINTR);
  if (e != 0) {
    close(fd);
    shm_unlink(name.c_str());
    tracker_unregister(name);
    errno = e;
    throw ProcessError("cannot reserve " + std::to_string(map_size) +
                       " bytes of shared memory in /dev/shm for segment " + name + ": " +
                       errno_text() + (e == ENOSPC ? " (/dev/shm is full)" : ""));
  }
  void* addr = mmap(nullptr, map_size, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
  close(fd);
  if (addr == MAP_FAILED) {
    shm_unlink(name.c_str());
    tracker_unregister(name);
    throw ProcessError("cannot map shared memory segment " + name + " (" +
                       std::to_string(map_size) + " bytes): " + errno_text());
  }
  std::shared_ptr<Segment> seg(new Segment);
  seg->name_ = name;
  seg->map_size_ = map_size;
  seg->header_ = static_cast<SegmentHeader*>(addr);
  seg->payload_ = static_cast<char*>(addr) + sizeof(SegmentHeader);
  seg->refcounted = refcounted;
  auto* h = seg->header_;
  h->magic = kSegmentMagic;
  h->layout_version = kSegmentLayoutVersion;
  h->kind = static_cast<uint32_t>(kind);
  h->payload_size = payload_size;
  h->refs.store(refcounted ? 1 : 0, std::memory_order_release);
  if (refcounted) {
    seg->ref_owner = getpid();
    std::lock_guard lk(registry().mu);
    registry().by_name[name] = seg;
  }
  return seg;
}

std::shared_ptr<Segment> Segment::attach(const std::string& name, SegmentKind kind, bool refcounted,
                                         bool consume_flight_ref) {
  if (name.empty() || name.size() >= kMaxSegmentName || name[0] != '/')
    throw ProcessError("malformed shared memory segment name '" + name + "'");
  std::unique_lock lk(registry().mu, std::defer_lock);
  if (refcounted) {
    lk.lock();
    auto it = registry().by_name.find(name);
    if (it != registry().by_name.end()) {
      if (auto existing = it->second.lock()) {
        lk.unlock();  // release_ref may run a finalizer, which takes the registry lock
        // Already mapped here: the in-flight reference is not needed.
        if (consume_flight_ref) release_ref(*existing);
        return existing;
      }
    }
  }
  int fd = shm_open(name.c_str(), O_RDWR | O_CLOEXEC, 0);
  if (fd < 0)
    throw ProcessError("cannot open shared memory segment " + name + ": " + errno_text() +
                       " (the object was destroyed: every handle to it was released)");
  struct stat st {};
  if (fstat(fd, &st) != 0 || static_cast<size_t>(st.st_size) < sizeof(SegmentHeader)) {
    close(fd);
    throw ProcessError("shared memory segment " + name + " is truncated");
  }
  size_t map_size = static_cast<size_t>(st.st_size);
  void* addr = mmap(nullptr, map_size, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
  close(fd);
  if (addr == MAP_FAILED)
    throw ProcessError("cannot map shared memory segment " + name + ": " + errno_text());
  auto* h = static_cast<SegmentHeader*>(addr);
  if (h->magic != kSegmentMagic || h->layout_version != kSegmentLayoutVersion ||
      h->kind != static_cast<uint32_t>(kind) ||
      sizeof(SegmentHeader) + h->payload_size > map_size) {
    munmap(addr, map_size);
    throw ProcessError("shared memory segment " + name +
                       " is not a multiproc object of the expected kind and layout version");
  }
  std::shared_ptr<Segment> seg(new Segment);
  seg->name_ = name;
  seg->map_size_ = map_size;
  seg->header_ = h;
  seg->payload_ = static_cast<char*>(addr) + sizeof(SegmentHeader);
  seg->refcounted = refcounted;
  if (refcounted) {
    if (!consume_flight_ref) h->refs.fetch_add(1, std::memory_order_relaxed);
    seg->ref_owner = getpid();
    registry().by_name[name] = seg;
  }
  return seg;
}

Segment::~Segment() {
  if (refcounted) {
    {
      std::lock_guard lk(registry().mu);
      auto it = registry().by_name.find(name_);
      if (it != registry().by_name.end() && it->second.expired()) registry().by_name.erase(it);
    }
    // Only the process that took the reference gives it back: a child made by a plain fork()
    // outside multiproc inherits this object but holds no reference of its own.
    if (ref_owner == getpid()) release_ref(*this);
  }
  if (header_) munmap(header_, map_size_);
}

void unlink_segment(const std::string& name) {
  if (shm_unlink(name.c_str()) == 0 || errno == ENOENT) tracker_unregister(name);
}

void Segment::unlink() {
  unlink_segment(name_);
}

void register_segment_finalizer(SegmentKind kind, SegmentFinalizer f) {
  std::lock_guard lk(registry().mu);
  registry().finalizers[static_cast<uint32_t>(kind)] = f;
}

namespace {
// Live segments pinned across a fork by the forking thread (the registry lock is held meanwhile).
std::vector<std::shared_ptr<Segment>>& fork_pins() {
  static auto* v = new std::vector<std::shared_ptr<Segment>>;
  return *v;
}
}  // namespace

void segments_before_fork() {
  registry().mu.lock();
  auto& pins = fork_pins();
  pins.clear();
  for (auto& [name, weak] : registry().by_name)
    if (auto s = weak.lock()) {
      s->header().refs.fetch_add(1, std::memory_order_relaxed);
      pins.push_back(std::move(s));
    }
}

void segments_after_fork_child() {
  pid_t self = getpid();
  for (auto& s : fork_pins()) s->ref_owner = self;
  // The pins are dropped below without the lock held: ~Segment takes it.
  auto pins = std::move(fork_pins());
  fork_pins().clear();
  registry().mu.unlock();
  pins.clear();
}

void segments_after_fork_parent(bool fork_failed) {
  auto pins = std::move(fork_pins());
  fork_pins().clear();
  registry().mu.unlock();
  if (fork_failed)
    for (auto& s : pins) s->header().refs.fetch_sub(1, std::memory_order_relaxed);
  pins.clear();
}

void release_all_segments() {
  std::vector<std::shared_ptr<Segment>> live;
  {
    std::lock_guard lk(registry().mu);
    for (auto& [name, weak] : registry().by_name)
      if (auto s = weak.lock()) live.push_back(std::move(s));
  }
  pid_t self = getpid();
  for (auto& s : live)
    if (s->ref_owner == self) {
      s->ref_owner = 0;
      release_ref(*s);
    }
}

}  // namespace multiproc::detail
