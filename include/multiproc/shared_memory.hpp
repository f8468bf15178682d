// Python's multiprocessing.shared_memory: named blocks of raw shared memory that any process can
// attach by name. SharedMemory is one block (a file in /dev/shm named as the user says, with no
// header of multiproc's, so another program can open it too); ShareableList is a fixed-length list
// of int64/double/bool/string/bytes/none items laid out in one such block; SharedMemoryManager
// creates blocks and lists and unlinks every one at shutdown.
//
// Ownership follows Python: whoever creates a block unlinks it (unlink()); closing or destroying a
// handle only unmaps this handle's view. A block is not reference counted, so a handle crossing
// to another process (task argument, queue item, result) is just its name: the receiver attaches
// by name, and fails with FileNotFoundError if the creator unlinked it first. A block the program
// created and never unlinked is removed by the resource tracker when the program ends, also when
// it crashes (Python's resource_tracker does the same); pass track = false for a block that must
// outlive its creator.
#pragma once

#include <sys/types.h>
#include <cstddef>
#include <cstdint>
#include <initializer_list>
#include <memory>
#include <mutex>
#include <span>
#include <string>
#include <string_view>
#include <type_traits>
#include <utility>
#include <variant>
#include <vector>

#include <multiproc/detail/handle.hpp>
#include <multiproc/errors.hpp>

namespace multiproc {

// Creating a block under a name that exists already (Python's FileExistsError).
class FileExistsError : public ProcessError {
 public:
  using ProcessError::ProcessError;
};

// Attaching to, or unlinking, a name that does not exist (Python's FileNotFoundError).
class FileNotFoundError : public ProcessError {
 public:
  using ProcessError::ProcessError;
};

// One named block of shared memory. Copies of a handle share its mapping (unmapped when the last
// copy in this process is closed or destroyed); buf() stays valid while this handle is open.
// Nothing here locks: processes that write the same bytes coordinate themselves (a Lock, a Queue).
class SharedMemory {
 public:
  // An empty handle (what deserialization fills); buf() and size() throw until it is assigned.
  SharedMemory() = default;

  // create = false: attaches to the existing block `name` (size is ignored: the block's own size
  // is used); throws FileNotFoundError if there is none. create = true: makes a new block of
  // `size` zeroed bytes, its pages reserved now (a full /dev/shm throws here instead of SIGBUS at
  // first touch); throws FileExistsError if the name exists. An empty name with create = true
  // draws a fresh one (create(size) says so). A name is Python's: no '/' inside (one leading '/'
  // is dropped), stored as /dev/shm/<name>. size <= 0 with create, or < 0, throws
  // std::invalid_argument. track = false: the resource tracker is not told (the block may outlive
  // the program).
  explicit SharedMemory(std::string name, bool create = false, std::int64_t size = 0,
                        bool track = true);
  // A new block of `size` bytes under a fresh name ("<MULTIPROC_SHM_PREFIX or mp><pid>_<hex>").
  static SharedMemory create(std::int64_t size, bool track = true);

  // The block's bytes. Throws ProcessError when the handle is empty or closed.
  std::span<std::byte> buf() const {
    if (!map_) throw_closed();
    return {map_.get(), size_};
  }
  // The name without a leading '/', as another process passes it to attach.
  const std::string& name() const { return name_; }
  // The block's size in bytes (as created, or as found when attaching).
  std::size_t size() const { return size_; }
  // False for an empty or closed handle.
  bool is_open() const { return static_cast<bool>(map_); }

  // Drops this handle's view of the block (the block itself stays). Idempotent.
  void close() { map_.reset(); }
  // Removes the name (processes that have it mapped keep their view) and tells the tracker to
  // forget it. Call it once, in one process, normally the creator. Throws FileNotFoundError when
  // the name is already gone.
  void unlink();

  // Handle protocol: a handle crosses as its name and attaches on arrival.
  template <class Archive>
  void save(Archive& ar) const {
    if (name_.empty()) detail::throw_empty_handle("SharedMemory");
    ar(name_);
  }
  template <class Archive>
  void load(Archive& ar) {
    std::string name;
    ar(name);
    *this = SharedMemory(std::move(name));
  }

 private:
  [[noreturn]] static void throw_closed();
  std::string name_;
  std::size_t size_ = 0;
  bool track_ = true;
  std::shared_ptr<std::byte> map_;  // the mapping; its deleter unmaps
};

// A ShareableList item: None (nullptr), int64, double, bool, a (UTF-8) string or bytes.
using Bytes = std::vector<std::byte>;
using ShareableItem = std::variant<std::nullptr_t, std::int64_t, double, bool, std::string, Bytes>;

// Python's ShareableList: a fixed-length list in one SharedMemory block. Each slot keeps the room
// it was created with: 8 bytes for a number, bool or None, and for a string or bytes its length
// in bytes plus one, rounded up to a multiple of 8 (8 * (len / 8 + 1), as Python).
// Any item that fits may replace any other (a number in a string slot, a shorter string); a
// longer string or bytes throws std::invalid_argument. Unlike Python, strings keep trailing NULs
// (the length is stored) and equality is by type and value (1 != 1.0 != true). Indices may be
// negative (from the end); out of range throws std::out_of_range. Like Python's, it takes no
// lock: a get racing a set in another process may see a torn item.
class ShareableList {
 public:
  ShareableList() = default;  // empty handle (deserialization)
  // A new list in a new block (an empty name draws a fresh one; an existing one throws
  // FileExistsError).
  ShareableList(std::initializer_list<ShareableItem> items, std::string name = "");
  explicit ShareableList(const std::vector<ShareableItem>& items, std::string name = "");
  // Attaches to an existing list by name; throws FileNotFoundError, or ProcessError when the
  // block is not a ShareableList. Mind the parentheses: ShareableList{name} with braces makes a
  // new one-item list, as std::vector<std::string>{s} would; attach() cannot be misread.
  explicit ShareableList(std::string name);
  static ShareableList attach(std::string name) { return ShareableList(std::move(name)); }

  std::size_t size() const;
  const std::string& name() const { return shm_.name(); }
  // The block that holds the list (Python's .shm): close()/unlink() it like any other.
  SharedMemory& shm() { return shm_; }
  const SharedMemory& shm() const { return shm_; }

  ShareableItem get(std::int64_t index) const;
  // The item as T (one of ShareableItem's types); throws std::invalid_argument naming the type
  // the slot holds when it is another.
  template <class T>
  T get(std::int64_t index) const {
    ShareableItem item = get(index);
    if (auto* v = std::get_if<T>(&item)) return std::move(*v);
    throw_wrong_type(index, item.index(), ShareableItem(T{}).index());
  }
  void set(std::int64_t index, const ShareableItem& value);
  // Any integer, floating-point number, character string or view converts to its item type.
  template <class T>
  requires(!std::is_same_v<std::remove_cvref_t<T>, ShareableItem>) void set(std::int64_t index,
                                                                            T&& value) {
    set(index, to_item(std::forward<T>(value)));
  }

  // list[i] reads (converts to ShareableItem, or get<T>()) and assigns.
  class Ref {
   public:
    operator ShareableItem() const { return list_->get(index_); }
    template <class T>
    T get() const {
      return list_->get<T>(index_);
    }
    template <class T>
    requires(!std::is_same_v<std::remove_cvref_t<T>, Ref>) Ref& operator=(T&& value) {
      list_->set(index_, std::forward<T>(value));
      return *this;
    }
    // Copies the other element's value: an element assigned to itself writes its own value back.
    // NOLINTNEXTLINE(bugprone-unhandled-self-assignment,cert-oop54-cpp)
    Ref& operator=(const Ref& other) { return *this = static_cast<ShareableItem>(other); }
    bool operator==(const ShareableItem& v) const { return list_->get(index_) == v; }

   private:
    friend class ShareableList;
    Ref(ShareableList* list, std::int64_t index) : list_(list), index_(index) {}
    ShareableList* list_;
    std::int64_t index_;
  };
  Ref operator[](std::int64_t index) { return Ref(this, index); }
  ShareableItem operator[](std::int64_t index) const { return get(index); }

  // How many items equal `value` (same type and value).
  std::size_t count(const ShareableItem& value) const;
  // The position of the first item equal to `value`; std::invalid_argument when there is none.
  std::size_t index(const ShareableItem& value) const;
  // Every item, in order.
  std::vector<ShareableItem> items() const;

  // Handle protocol: crosses as the block's name.
  template <class Archive>
  void save(Archive& ar) const {
    ar(shm_);
  }
  template <class Archive>
  void load(Archive& ar) {
    SharedMemory shm;
    ar(shm);
    *this = ShareableList(shm.name());
  }

 private:
  template <class T>
  static ShareableItem to_item(T&& v) {
    using U = std::remove_cvref_t<T>;
    if constexpr (std::is_same_v<U, bool> || std::is_same_v<U, std::nullptr_t>)
      return ShareableItem(v);
    else if constexpr (std::is_integral_v<U>)
      return ShareableItem(static_cast<std::int64_t>(v));
    else if constexpr (std::is_floating_point_v<U>)
      return ShareableItem(static_cast<double>(v));
    else if constexpr (std::is_convertible_v<T, std::string_view>)
      return ShareableItem(std::string(std::string_view(v)));
    else
      return ShareableItem(std::forward<T>(v));
  }
  void create(const std::vector<ShareableItem>& items, std::string name);
  std::size_t position(std::int64_t index) const;
  [[noreturn]] static void throw_wrong_type(std::int64_t index, std::size_t held,
                                            std::size_t asked);
  SharedMemory shm_;
};

// Python's SharedMemoryManager, without its server process: it creates blocks and lists and, at
// shutdown() or destruction, unlinks every one it created (blocks already unlinked are skipped).
// Crash cleanup is the resource tracker's, as for every block. A fork child's copy unlinks
// nothing. Not copyable; safe to use from several threads.
class SharedMemoryManager {
 public:
  SharedMemoryManager();
  ~SharedMemoryManager();
  SharedMemoryManager(const SharedMemoryManager&) = delete;
  SharedMemoryManager& operator=(const SharedMemoryManager&) = delete;

  // A new block of `size` bytes under a fresh name; ProcessError after shutdown().
  multiproc::SharedMemory SharedMemory(std::int64_t size);
  // A new list under a fresh name; ProcessError after shutdown().
  multiproc::ShareableList ShareableList(std::initializer_list<ShareableItem> items);
  multiproc::ShareableList ShareableList(const std::vector<ShareableItem>& items);

  // Unlinks every block made here. Idempotent; later SharedMemory()/ShareableList() throw.
  void shutdown();

 private:
  void adopt(const std::string& name);
  std::mutex mu_;
  std::vector<std::string> names_;
  pid_t owner_;
  bool shut_down_ = false;
};

}  // namespace multiproc
