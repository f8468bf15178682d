// SharedMemory and SharedMemoryManager (Python's shared_memory.py). A block is a plain POSIX
// shared-memory object with no multiproc header, so that other programs (Python's
// SharedMemory(name) among them) can open it.
#include <multiproc/shared_memory.hpp>

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>
#include <cerrno>
#include <climits>
#include <cstring>
#include <stdexcept>
#include <system_error>
#include <utility>

#include <multiproc/detail/resource_tracker.hpp>
#include <multiproc/detail/segment.hpp>

namespace multiproc {
namespace {

std::string errno_text(int e) {
  return std::generic_category().message(e);
}

// Python's naming: the user's name without a leading '/'; the object is "/<name>".
std::string normalize_name(const std::string& given) {
  std::string name = given.substr(!given.empty() && given[0] == '/' ? 1 : 0);
  if (name.empty() || name.size() > NAME_MAX - 1 || name.find('/') != std::string::npos ||
      name == "." || name == "..")
    throw std::invalid_argument("invalid shared memory name '" + name +
                                "': it needs 1 to 254 characters and no '/' after the first");
  return name;
}

std::shared_ptr<std::byte> map_fd(int fd, std::size_t size, const std::string& name) {
  void* addr = mmap(nullptr, size, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
  if (addr == MAP_FAILED)
    throw ProcessError("cannot map shared memory block '" + name + "' (" + std::to_string(size) +
                       " bytes): " + errno_text(errno));
  return std::shared_ptr<std::byte>(static_cast<std::byte*>(addr),
                                    [size](std::byte* p) { munmap(p, size); });
}

// Closes a descriptor on every path out.
struct Fd {
  int fd;
  ~Fd() {
    if (fd >= 0) ::close(fd);
  }
};

}  // namespace

SharedMemory::SharedMemory(std::string name, bool create, std::int64_t size, bool track)
    : track_(track) {
  if (size < 0) throw std::invalid_argument("SharedMemory: size must not be negative");
  if (create && size == 0)
    throw std::invalid_argument("SharedMemory: a new block needs a size greater than zero");
  const bool generated = create && name.empty();
  if (!generated) name = normalize_name(name);

  if (!create) {
    Fd fd{shm_open(("/" + name).c_str(), O_RDWR | O_CLOEXEC, 0)};
    if (fd.fd < 0) {
      const int e = errno;
      if (e == ENOENT)
        throw FileNotFoundError("no shared memory block named '" + name + "' (/dev/shm/" + name +
                                ")");
      throw ProcessError("cannot open shared memory block '" + name + "': " + errno_text(e));
    }
    struct stat st {};
    if (fstat(fd.fd, &st) != 0)
      throw ProcessError("cannot stat shared memory block '" + name + "': " + errno_text(errno));
    if (st.st_size <= 0)
      throw ProcessError("shared memory block '" + name + "' is empty (size 0): nothing to map");
    size_ = static_cast<std::size_t>(st.st_size);
    map_ = map_fd(fd.fd, size_, name);
    name_ = std::move(name);
    return;
  }

  constexpr std::int64_t kMaxSize = INT64_MAX - 4096;
  if (size > kMaxSize)
    throw std::invalid_argument("SharedMemory: size " + std::to_string(size) + " is too large");
  Fd fd{-1};
  // A generated name that exists already is someone else's: draw another, never open it.
  for (int attempt = 0;; ++attempt) {
    if (generated) name = detail::new_segment_name().substr(1);
    fd.fd = shm_open(("/" + name).c_str(), O_RDWR | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
    if (fd.fd >= 0) break;
    const int e = errno;
    if (e == EEXIST && generated && attempt < 64) continue;
    if (e == EEXIST)
      throw FileExistsError("a shared memory block named '" + name + "' exists already");
    throw ProcessError("cannot create shared memory block '" + name +
                       "' in /dev/shm: " + errno_text(e));
  }
  // Registered once it is ours: registering before O_EXCL could, on EEXIST, make the tracker
  // forget an existing block of this program that has the same name (its table is a set).
  if (track_) detail::tracker_register("/" + name);
  auto fail = [&](const std::string& what) {
    shm_unlink(("/" + name).c_str());
    if (track_) detail::tracker_unregister("/" + name);
    throw ProcessError(what);
  };
  // tmpfs's ftruncate reserves nothing: a full /dev/shm would show as SIGBUS at the first touch.
  int e;
  do {
    e = posix_fallocate(fd.fd, 0, static_cast<off_t>(size));
  } while (e == EINTR);
  if (e != 0)
    fail("cannot reserve " + std::to_string(size) + " bytes of shared memory in /dev/shm for '" +
         name + "': " + errno_text(e) + (e == ENOSPC ? " (/dev/shm is full)" : ""));
  size_ = static_cast<std::size_t>(size);
  try {
    map_ = map_fd(fd.fd, size_, name);
  } catch (const ProcessError& err) {
    fail(err.what());
  }
  name_ = std::move(name);
}

SharedMemory SharedMemory::create(std::int64_t size, bool track) {
  return SharedMemory("", true, size, track);
}

void SharedMemory::unlink() {
  if (name_.empty()) detail::throw_empty_handle("SharedMemory");
  if (shm_unlink(("/" + name_).c_str()) != 0) {
    const int e = errno;
    if (e == ENOENT)
      throw FileNotFoundError("shared memory block '" + name_ + "' was unlinked already");
    throw ProcessError("cannot unlink shared memory block '" + name_ + "': " + errno_text(e));
  }
  if (track_) detail::tracker_unregister("/" + name_);
}

void SharedMemory::throw_closed() {
  throw ProcessError("SharedMemory: this handle is closed or empty (no mapping to read)");
}

// ---- SharedMemoryManager -------------------------------------------------------------------

SharedMemoryManager::SharedMemoryManager() : owner_(getpid()) {}

SharedMemoryManager::~SharedMemoryManager() {
  try {
    shutdown();
  } catch (...) {
    // Unlinking reports nothing worth ending the program for in a destructor.
  }
}

void SharedMemoryManager::adopt(const std::string& name) {
  names_.push_back(name);
}

multiproc::SharedMemory SharedMemoryManager::SharedMemory(std::int64_t size) {
  std::lock_guard lk(mu_);
  if (shut_down_) throw ProcessError("SharedMemoryManager: shut down, it creates no more blocks");
  multiproc::SharedMemory shm("", true, size);
  adopt(shm.name());
  return shm;
}

multiproc::ShareableList SharedMemoryManager::ShareableList(
    std::initializer_list<ShareableItem> items) {
  return ShareableList(std::vector<ShareableItem>(items));
}

multiproc::ShareableList SharedMemoryManager::ShareableList(
    const std::vector<ShareableItem>& items) {
  std::lock_guard lk(mu_);
  if (shut_down_) throw ProcessError("SharedMemoryManager: shut down, it creates no more lists");
  multiproc::ShareableList list(items);
  adopt(list.name());
  return list;
}

void SharedMemoryManager::shutdown() {
  std::vector<std::string> names;
  {
    std::lock_guard lk(mu_);
    shut_down_ = true;
    names.swap(names_);
  }
  // Python's Finalize checks the pid: a fork child's copy of the manager owns nothing.
  if (getpid() != owner_) return;
  for (const std::string& name : names)
    if (shm_unlink(("/" + name).c_str()) == 0) detail::tracker_unregister("/" + name);
}

}  // namespace multiproc
