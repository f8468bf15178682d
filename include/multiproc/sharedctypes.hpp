// Values and arrays in shared memory (CPython's sharedctypes.py: Value and Array with lock=True).
//
//   mp::Value<int> counter(0);             mp::Array<double> xs(1000);
//   { std::lock_guard g(counter.get_lock()); counter.set(counter.value() + 1); }
//   xs[3] = 1.5;   std::vector<double> copy = xs.to_vector();
//
// Both are handles (copies share the memory; they travel to other processes by fork inheritance
// or as task arguments under every start method) and each comes with a Lock, its own or one
// passed in (several values may share a lock). value()/set()/to_vector() take that lock, unless
// the calling thread holds it already, so the Python idiom `with v.get_lock(): v.value += 1`
// is the lock_guard line above. raw() and operator[] give references into shared memory without
// locking: hold get_lock() around them when other processes may write.
//
// T must be plain bytes (trivially copyable, default-constructible, no pointers or views, see
// serialization.hpp): its bytes mean the same in every process. Anything else is a compile-time
// error that names T.
#pragma once

#include <cstddef>
#include <cstdint>
#include <cstring>
#include <memory>
#include <new>
#include <string>
#include <typeinfo>
#include <vector>

#include <multiproc/detail/handle.hpp>
#include <multiproc/detail/sync_data.hpp>
#include <multiproc/errors.hpp>
#include <multiproc/serialization.hpp>
#include <multiproc/synchronize.hpp>

namespace multiproc {

namespace detail {

// Never defined: naming it with T makes the compiler print T in its error.
template <class T>
struct this_type_cannot_live_in_shared_memory;

template <class T>
constexpr void require_shared_plain() {
  if constexpr (!is_plain_bytes_v<T>) {
    static_assert(dependent_false_v<T>,
                  "multiproc: Value<T> and Array<T> keep T as raw bytes in shared memory, so T "
                  "must be plain bytes: an arithmetic type, an enum, or a trivially copyable, "
                  "default-constructible struct without pointers. For strings and containers "
                  "use a Queue or a manager.");
    (void)sizeof(this_type_cannot_live_in_shared_memory<T>);
  } else {
    static_assert(alignof(T) <= 64, "multiproc: Value<T>/Array<T>: T's alignment exceeds 64");
  }
}

// What identifies T's layout to a process that opens the object: size, alignment and the type's
// name (std::type_info::hash_code is a hash of the mangled name with libstdc++: the same in every
// process running the same program).
template <class T>
uint64_t element_fingerprint() {
  return static_cast<uint64_t>(typeid(T).hash_code()) ^ (uint64_t{sizeof(T)} << 40) ^
         (uint64_t{alignof(T)} << 56);
}

// A Value's payload. The value has a cache line of its own.
template <class T>
struct ValueData {
  SyncTag tag;
  alignas(64) T value;
};

// An Array's payload: a header line, then the elements.
struct ArrayHeader {
  SyncTag tag;
  uint64_t size;
};
inline constexpr size_t kArrayElementsOffset = 64;
static_assert(sizeof(ArrayHeader) <= kArrayElementsOffset);

// Holds a lock for the duration of a scope unless the calling thread holds it already.
class HoldUnlessHeld {
 public:
  explicit HoldUnlessHeld(Lock& l) : lock_(LockAccess::held_by_me(l) ? nullptr : &l) {
    if (lock_) lock_->acquire();
  }
  ~HoldUnlessHeld() {
    if (lock_) lock_->release();
  }
  HoldUnlessHeld(const HoldUnlessHeld&) = delete;
  HoldUnlessHeld& operator=(const HoldUnlessHeld&) = delete;

 private:
  Lock* lock_;
};

// Value's and Array's handle protocol, saving side: the object's name (with a reference for the
// copy in flight), then its lock.
template <class Archive>
void save_with_lock(Archive& ar, const SyncCore& core, const Lock& lock) {
  core.add_flight_ref();
  ar(core.name());
  ar(lock);
}

}  // namespace detail

// One T in shared memory, with a lock (Python's multiprocessing.Value(typecode, init, lock=True)).
template <class T>
class Value {
  static_assert((detail::require_shared_plain<T>(), true));

 public:
  using value_type = T;

  // A value of T{} (zero for arithmetic types), with a lock of its own. T is built in shared
  // memory, never on the stack, so a T of any size is fine.
  Value() { create(nullptr); }
  explicit Value(const T& init) { create(&init); }
  // A value guarded by an existing lock (Python's lock=some_lock).
  Value(const T& init, Lock lock) : lock_(std::move(lock)) { create(&init); }

  // A copy of the value, read under the lock (not taken again if this thread holds it).
  T value() const {
    auto& d = data();
    detail::HoldUnlessHeld hold(lock_);
    T out;
    std::memcpy(static_cast<void*>(&out), static_cast<const void*>(&d.value), sizeof(T));
    return out;
  }
  // Stores v under the lock (not taken again if this thread holds it).
  void set(const T& v) {
    auto& d = data();
    detail::HoldUnlessHeld hold(lock_);
    std::memcpy(static_cast<void*>(&d.value), static_cast<const void*>(&v), sizeof(T));
  }
  void value(const T& v) { set(v); }

  // The lock that guards the value: `std::lock_guard g(v.get_lock());`. A reference to this
  // handle's Lock (copy it to keep a handle of your own).
  Lock& get_lock() const { return lock_; }
  // The value in shared memory, without locking (Python's get_obj() / RawValue).
  T& raw() const { return data().value; }

  // The shared-memory name of the value (its lock has its own, get_lock().name()).
  const std::string& name() const { return core().name(); }
  bool operator==(const Value& other) const { return core_ == other.core_; }

  // Handle protocol: the value's name, then its lock.
  template <class Archive>
  void save(Archive& ar) const {
    detail::save_with_lock(ar, core(), lock_);
  }
  template <class Archive>
  void load(Archive& ar) {
    std::string name;
    ar(name);
    auto c = detail::SyncCore::attach(name, detail::SegmentKind::shared, detail::SyncType::value,
                                      sizeof(Data), detail::element_fingerprint<T>());
    d_ = static_cast<Data*>(c->data());
    core_ = std::move(c);
    ar(lock_);
  }

 private:
  using Data = detail::ValueData<T>;
  // init == nullptr: T{} (a temporary T{} could overflow the stack for a large T).
  void create(const T* init) {
    if (detail::loading_handles()) return;
    auto c = detail::SyncCore::create(detail::SegmentKind::shared, detail::SyncType::value,
                                      sizeof(Data), detail::element_fingerprint<T>());
    d_ = static_cast<Data*>(c->data());
    if (init)
      std::memcpy(static_cast<void*>(&d_->value), static_cast<const void*>(init), sizeof(T));
    else
      ::new (static_cast<void*>(&d_->value)) T{};
    core_ = std::move(c);
  }
  detail::SyncCore& core() const {
    if (!core_) detail::throw_empty_handle("Value");
    return *core_;
  }
  Data& data() const {
    if (!d_) detail::throw_empty_handle("Value");
    return *d_;
  }

  std::shared_ptr<detail::SyncCore> core_;
  Data* d_ = nullptr;
  mutable Lock lock_;
};

// A fixed-size array of T in shared memory, with a lock (Python's multiprocessing.Array).
// Elements start as T{} (zero) or as copies of an initial vector.
template <class T>
class Array {
  static_assert((detail::require_shared_plain<T>(), true));

 public:
  using value_type = T;
  using iterator = T*;
  using const_iterator = const T*;

  // An empty array (size 0). Throws ProcessError when `size` elements would not fit in memory
  // (Array<double>(-1) is a mistake, not 2^64-1 elements).
  Array() : Array(size_t{0}) {}
  explicit Array(size_t size) { create(size, nullptr); }
  explicit Array(const std::vector<T>& init) { create(init.size(), init.data()); }
  // Arrays guarded by an existing lock.
  Array(size_t size, Lock lock) : lock_(std::move(lock)) { create(size, nullptr); }
  Array(const std::vector<T>& init, Lock lock) : lock_(std::move(lock)) {
    create(init.size(), init.data());
  }

  size_t size() const {
    elements();
    return size_;
  }
  // Element i in shared memory, without locking and without a bounds check.
  T& operator[](size_t i) const { return elements()[i]; }
  // Element i, bounds-checked (ProcessError), without locking.
  T& at(size_t i) const {
    if (i >= size())
      throw ProcessError("Array index " + std::to_string(i) + " out of range (size " +
                         std::to_string(size_) + ")");
    return elements()[i];
  }
  T* data() const { return elements(); }
  T* begin() const { return elements(); }
  T* end() const { return elements() + size(); }

  // A copy of every element, read under the lock (not taken again if this thread holds it).
  std::vector<T> to_vector() const {
    T* p = elements();
    detail::HoldUnlessHeld hold(lock_);
    std::vector<T> out(size_);
    if (size_)
      std::memcpy(static_cast<void*>(out.data()), static_cast<const void*>(p), size_ * sizeof(T));
    return out;
  }

  Lock& get_lock() const { return lock_; }

  const std::string& name() const { return core().name(); }
  bool operator==(const Array& other) const { return core_ == other.core_; }

  template <class Archive>
  void save(Archive& ar) const {
    detail::save_with_lock(ar, core(), lock_);
  }
  template <class Archive>
  void load(Archive& ar) {
    std::string name;
    ar(name);
    auto c =
        detail::SyncCore::attach(name, detail::SegmentKind::shared, detail::SyncType::array,
                                 detail::kArrayElementsOffset, detail::element_fingerprint<T>());
    auto* h = static_cast<detail::ArrayHeader*>(c->data());
    // Divided, not multiplied: the size comes from shared memory and must not wrap.
    if ((c->data_size() - detail::kArrayElementsOffset) / sizeof(T) < h->size)
      throw ProcessError("shared memory segment " + name + " is too small for its Array");
    open(std::move(c));
    ar(lock_);
  }

 private:
  void create(size_t n, const T* init) {
    if (detail::loading_handles()) return;
    // The byte count must not wrap (a negative size converts to ~2^64): the mapping would be
    // tiny while size() claims 2^64-1 elements. No mapping can exceed PTRDIFF_MAX bytes.
    constexpr size_t kMaxBytes = static_cast<size_t>(PTRDIFF_MAX) - detail::kArrayElementsOffset;
    if (n > kMaxBytes / sizeof(T))
      throw ProcessError("Array: " + std::to_string(n) + " elements of " +
                         std::to_string(sizeof(T)) +
                         " bytes do not fit in memory (was the size negative?)");
    auto c = detail::SyncCore::create(detail::SegmentKind::shared, detail::SyncType::array,
                                      detail::kArrayElementsOffset + n * sizeof(T),
                                      detail::element_fingerprint<T>());
    static_cast<detail::ArrayHeader*>(c->data())->size = n;
    if (init && n)
      std::memcpy(static_cast<char*>(c->data()) + detail::kArrayElementsOffset,
                  static_cast<const void*>(init), n * sizeof(T));
    open(std::move(c));
  }
  void open(std::shared_ptr<detail::SyncCore> c) {
    size_ = static_cast<size_t>(static_cast<detail::ArrayHeader*>(c->data())->size);
    elements_ = reinterpret_cast<T*>(static_cast<char*>(c->data()) + detail::kArrayElementsOffset);
    core_ = std::move(c);
  }
  detail::SyncCore& core() const {
    if (!core_) detail::throw_empty_handle("Array");
    return *core_;
  }
  T* elements() const {
    if (!core_) detail::throw_empty_handle("Array");
    return elements_;
  }

  std::shared_ptr<detail::SyncCore> core_;
  T* elements_ = nullptr;
  size_t size_ = 0;
  mutable Lock lock_;
};

}  // namespace multiproc
