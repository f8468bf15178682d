// Manager: a server process that hosts shared objects behind proxies (CPython's managers.py).
//
//   mp::Manager manager;                          // starts the server (current start method)
//   mp::Queue<double> q = manager.Queue<double>(); // a shared-memory queue the server keeps alive
//   auto d = manager.dict<std::string, int>();     // DictProxy: each call is one request
//   d.set("x", 1);  int x = d.get("x");
//   pool.map(task, std::vector(10, q));            // proxies are task arguments, any start method
//
// Queues are shared-memory queues (queues.hpp) handed out by the server, so put/get never make a
// round trip; manager.Queue<T>() returns a Queue<T> (QueueProxy<T> is an alias). The other
// hosted objects (dict, list, Value, Namespace, Lock, RLock, Semaphore, BoundedSemaphore,
// Condition, Event, Barrier) live in the server; a proxy is a
// copyable handle naming the server's address, its auth key and the object's id, and each call is
// one authenticated request/response on a connection that each thread of each process opens on
// first use. A proxy that travels carries the auth key, so it reconnects in any process, even
// one that does not share this program's default key.
//
// The server ends at shutdown(), at the Manager's destruction, and when the program that started
// it ends in any way (the end of a control pipe it watches; also PR_SET_PDEATHSIG when the
// Manager was made on the main thread). Once it has ended, every proxy call throws ProcessError
// at once. A client that disconnects releases the hosted locks it held.
//
// Lifetimes (CPython's incref/decref, kept per process): an object made without a name is freed
// when the last proxy to it in the process that made it goes, unless a proxy to it has left that
// process (serialized as a task argument, queue item, message or value of another hosted
// object), which keeps it for the server's lifetime; objects made by name live as long as the
// server. An unnamed manager Queue lives as long as its handles, as any Queue. A Queue cannot be
// stored in a hosted dict, list, Value or Namespace (a compile-time error says why).
//
// User types: Registry::add<Proxy<T, &T::method...>, &factory>("typeid"), Manager(registry),
// manager.make<P>("typeid", args...) (see Proxy below).
//
// Manager::serve(address, key) serves on TCP; Manager::connect(address, key) reaches that server
// from another program, and manager.dict<K, V>("name") (Queue, list, Value... alike) returns the
// one object of that name.
#pragma once

#include <sys/types.h>
#include <array>
#include <atomic>
#include <chrono>
#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <tuple>
#include <type_traits>
#include <typeinfo>
#include <utility>
#include <vector>

#include <multiproc/connection.hpp>
#include <multiproc/context.hpp>
#include <multiproc/detail/code_address.hpp>
#include <multiproc/errors.hpp>
#include <multiproc/ordered_queues.hpp>
#include <multiproc/process.hpp>
#include <multiproc/queues.hpp>
#include <multiproc/serialization.hpp>
#include <multiproc/synchronize.hpp>
#include <multiproc/timeout.hpp>

namespace multiproc {

// A dict proxy's missing key (Python's KeyError), a namespace's missing name (AttributeError).
class KeyError : public ProcessError {
 public:
  using ProcessError::ProcessError;
};

namespace detail {

struct ProxyOwner;

// What a proxy names: where the server is, how to prove we may talk to it, which object; and,
// in the process that made an unnamed object, that process's claim on it (never travels).
struct ProxyRef {
  std::string address;
  std::string authkey;
  uint64_t id = 0;
  std::shared_ptr<ProxyOwner> owner;
  template <class Archive>
  void serialize(Archive& ar) {
    ar(address, authkey, id);
  }
};

// The claim of the process that made an object without a name (CPython's incref/decref, kept
// per process): the proxy copies of that process share it, and when the last goes the server
// frees the object, unless a proxy to it has left the process (been serialized: task argument,
// queue item, message, value in another hosted object), which pins the object for the server's
// lifetime. A forked child's inherited copies never release it.
struct ProxyOwner {
  std::string address, authkey;
  uint64_t id = 0;
  pid_t pid = 0;
  std::atomic<bool> pinned{false};
  ProxyOwner(std::string a, std::string k, uint64_t i);
  ProxyOwner(const ProxyOwner&) = delete;
  ProxyOwner& operator=(const ProxyOwner&) = delete;
  ~ProxyOwner();
  // One round trip, the first time only; a server that has gone is not an error here.
  void pin();
};

// One request to the server, answered with the reply's payload. Throws KeyError,
// std::out_of_range (list index), TimeoutError, ProcessError (anything else, including a server
// that has ended or cannot be reached, at once).
std::string proxy_call(const ProxyRef& ref, const std::string& method, const std::string& args);

template <class... A>
std::string pack(const A&... a) {
  std::string out;
  dump(out, std::tuple<A...>(a...));
  return out;
}
template <class T>
std::string encode(const T& v) {
  std::string out;
  dump(out, v);
  return out;
}

// A shared-memory queue handle held inside a value: such a value cannot be stored in a hosted
// dict, list, Value or Namespace, because each time a handle is serialized it adds one
// in-flight reference to the queue, which the one load that receives it takes over; a stored
// value is loaded any number of times (or never), so the count would go wrong and the queue be
// freed under its users (or never). Only the common shapes are seen through (std containers,
// pairs, tuples, optionals); a class with its own serialize that holds a queue is not.
template <class T>
struct holds_queue : std::false_type {};
template <class T>
struct holds_queue<::multiproc::Queue<T>> : std::true_type {};
template <class T>
struct holds_queue<::multiproc::JoinableQueue<T>> : std::true_type {};
template <class T>
struct holds_queue<::multiproc::SimpleQueue<T>> : std::true_type {};
template <class T>
struct holds_queue<::multiproc::LifoQueue<T>> : std::true_type {};
template <class T, class C>
struct holds_queue<::multiproc::PriorityQueue<T, C>> : std::true_type {};
template <class T>
struct holds_queue<const T> : holds_queue<T> {};
template <template <class...> class C, class... A>
struct holds_queue<C<A...>> : std::disjunction<holds_queue<A>...> {};
template <class T, size_t N>
struct holds_queue<std::array<T, N>> : holds_queue<T> {};

template <class T>
constexpr void refuse_stored_queue() {
  static_assert(!holds_queue<T>::value,
                "multiproc: a Queue (or a value holding one) cannot be stored in a hosted dict, "
                "list, Value or Namespace: each read would open it once more than it was stored. "
                "Make the queue by name (manager.Queue<T>(\"name\")) and store the name.");
}

// Timeouts travel as seconds; negative = wait forever.
inline double timeout_seconds(const Timeout& t) {
  if (!t) return -1.0;
  return t->count() < 0 ? 0.0 : t->count();
}

}  // namespace detail

// What every proxy has: its reference, and the handle protocol (it travels as its reference).
class BaseProxy {
 public:
  const std::string& address() const { return ref_.address; }
  uint64_t id() const { return ref_.id; }
  bool operator==(const BaseProxy& o) const {
    return ref_.address == o.ref_.address && ref_.id == o.ref_.id;
  }
  template <class Archive>
  void serialize(Archive& ar) {
    if constexpr (std::is_same_v<Archive, detail::OutputArchive>) {
      if (ref_.owner) ref_.owner->pin();  // it leaves this process: the object must outlive us
    }
    ar(ref_);
  }

 protected:
  BaseProxy() = default;
  explicit BaseProxy(detail::ProxyRef ref) : ref_(std::move(ref)) {}
  std::string call(const std::string& method, const std::string& args = {}) const {
    if (ref_.id == 0) detail::throw_empty_handle("manager proxy");
    return detail::proxy_call(ref_, method, args);
  }
  template <class R>
  R call_as(const std::string& method, const std::string& args = {}) const {
    return detail::load<R>(call(method, args));
  }
  detail::ProxyRef ref_;
  friend class Manager;
};

template <class K, class V>
class DictProxy : public BaseProxy {
  static_assert((detail::require_transferable<K>(), detail::require_transferable<V>(),
                 detail::refuse_stored_queue<K>(), detail::refuse_stored_queue<V>(), true));

 public:
  DictProxy() = default;
  void set(const K& k, const V& v) {
    call("set", detail::pack(detail::encode(k), detail::encode(v)));
  }
  // Throws KeyError when k is missing.
  V get(const K& k) const { return detail::load<V>(call_as<std::string>("get", key(k))); }
  V get(const K& k, const V& dflt) const {
    auto r = call_as<std::optional<std::string>>("get_opt", key(k));
    return r ? detail::load<V>(*r) : dflt;
  }
  bool contains(const K& k) const { return call_as<bool>("contains", key(k)); }
  // Removes k and returns its value; KeyError when missing.
  V pop(const K& k) { return detail::load<V>(call_as<std::string>("pop", key(k))); }
  void erase(const K& k) { call("pop", key(k)); }
  size_t size() const { return call_as<uint64_t>("size"); }
  void clear() { call("clear"); }
  // In insertion order, as Python's dict.
  std::vector<K> keys() const {
    std::vector<K> out;
    for (auto& [k, v] : call_as<std::vector<std::pair<std::string, std::string>>>("items"))
      out.push_back(detail::load<K>(k));
    return out;
  }
  std::vector<V> values() const {
    std::vector<V> out;
    for (auto& [k, v] : call_as<std::vector<std::pair<std::string, std::string>>>("items"))
      out.push_back(detail::load<V>(v));
    return out;
  }
  std::vector<std::pair<K, V>> items() const {
    std::vector<std::pair<K, V>> out;
    for (auto& [k, v] : call_as<std::vector<std::pair<std::string, std::string>>>("items"))
      out.emplace_back(detail::load<K>(k), detail::load<V>(v));
    return out;
  }

 private:
  using BaseProxy::BaseProxy;
  friend class Manager;
  static std::string key(const K& k) { return detail::pack(detail::encode(k)); }
};

template <class T>
class ListProxy : public BaseProxy {
  static_assert((detail::require_transferable<T>(), detail::refuse_stored_queue<T>(), true));

 public:
  ListProxy() = default;
  void append(const T& x) { call("append", detail::pack(detail::encode(x))); }
  // Negative indexes count from the end; out of range: std::out_of_range.
  T get(int64_t i) const { return detail::load<T>(call_as<std::string>("get", detail::pack(i))); }
  void set(int64_t i, const T& x) { call("set", detail::pack(i, detail::encode(x))); }
  size_t size() const { return call_as<uint64_t>("size"); }
  T pop() { return detail::load<T>(call_as<std::string>("pop")); }
  template <class R>
  void extend(const R& items) {
    std::vector<std::string> enc;
    for (const auto& x : items) enc.push_back(detail::encode(static_cast<const T&>(x)));
    call("extend", detail::pack(enc));
  }
  std::vector<T> copy() const {
    std::vector<T> out;
    for (auto& s : call_as<std::vector<std::string>>("copy")) out.push_back(detail::load<T>(s));
    return out;
  }

 private:
  using BaseProxy::BaseProxy;
  friend class Manager;
};

template <class T>
class ValueProxy : public BaseProxy {
  static_assert((detail::require_transferable<T>(), detail::refuse_stored_queue<T>(), true));

 public:
  ValueProxy() = default;
  T get() const { return detail::load<T>(call_as<std::string>("get")); }
  void set(const T& x) { call("set", detail::pack(detail::encode(x))); }

 private:
  using BaseProxy::BaseProxy;
  friend class Manager;
};

// Named values of any transferable type; get<T> checks the type that was set.
class NamespaceProxy : public BaseProxy {
 public:
  NamespaceProxy() = default;
  template <class T>
  void set(const std::string& name, const T& x) {
    detail::require_transferable<T>();
    detail::refuse_stored_queue<T>();
    call("set", detail::pack(name, std::string(typeid(T).name()), detail::encode(x)));
  }
  // KeyError when the name was never set; ProcessError when it holds another type.
  template <class T>
  T get(const std::string& name) const {
    auto [type, bytes] = call_as<std::pair<std::string, std::string>>("get", detail::pack(name));
    if (type != typeid(T).name())
      throw ProcessError("Namespace." + name + " holds another type than " +
                         detail::demangled_type_name<T>());
    return detail::load<T>(bytes);
  }
  bool contains(const std::string& name) const {
    return call_as<bool>("contains", detail::pack(name));
  }
  void erase(const std::string& name) { call("erase", detail::pack(name)); }

 private:
  using BaseProxy::BaseProxy;
  friend class Manager;
};

namespace detail {
// What AcquirerProxy and ConditionProxy share: the server's acquire and release, and
// BasicLockable / Lockable on top of them, for std::lock_guard and std::unique_lock.
class LockableProxy : public BaseProxy {
 public:
  bool acquire(bool block = true, Timeout timeout = std::nullopt) {
    return call_as<bool>("acquire", detail::pack(block, detail::timeout_seconds(timeout)));
  }
  // Throws ProcessError if the lock is not held.
  void release() { call("release"); }
  void lock() { acquire(); }
  void unlock() { release(); }
  bool try_lock() { return acquire(false); }

 protected:
  LockableProxy() = default;
  using BaseProxy::BaseProxy;
};
}  // namespace detail

// A lock or semaphore held by the server (Python's AcquirerProxy over threading.Lock, RLock,
// Semaphore, BoundedSemaphore): acquire(block, timeout), release(), lock(), unlock(),
// try_lock(). A Lock or RLock is released by the server if the connection that acquired it goes
// away (its process died); a semaphore, which any process may release, is not.
class AcquirerProxy : public detail::LockableProxy {
 public:
  AcquirerProxy() = default;

 private:
  using LockableProxy::LockableProxy;
  friend class Manager;
};

// threading.Condition hosted by the server, with its own re-entrant lock (owned per thread):
// acquire, release, lock, unlock and try_lock as AcquirerProxy's. wait() gives the lock up while
// it waits and has it back when it returns, notified or not.
class ConditionProxy : public detail::LockableProxy {
 public:
  ConditionProxy() = default;
  // Must hold the lock (ProcessError otherwise). Returns false on timeout.
  bool wait(Timeout timeout = std::nullopt) {
    return call_as<bool>("wait", detail::pack(detail::timeout_seconds(timeout)));
  }
  // Waits until pred() holds, at most `timeout` in all; returns pred()'s last value.
  template <class Pred>
  bool wait_for(Pred pred, Timeout timeout = std::nullopt) {
    auto deadline = detail::Deadline::after(timeout);
    while (!pred()) {
      Timeout left;
      if (!deadline.is_never()) {
        left = std::chrono::duration<double>(*deadline.at - detail::Deadline::Clock::now());
        if (left->count() <= 0) return pred();
      }
      wait(left);
    }
    return true;
  }
  // Wakes up to n waiters (all: notify_all). Must hold the lock.
  void notify(int64_t n = 1) { call("notify", detail::pack(n)); }
  void notify_all() { notify(INT64_MAX); }

 private:
  using LockableProxy::LockableProxy;
  friend class Manager;
};

// threading.Barrier hosted by the server. wait() returns this party's arrival index (0 first);
// a timeout, abort() or a reset() while parties wait breaks it: BrokenBarrierError.
class BarrierProxy : public BaseProxy {
 public:
  BarrierProxy() = default;
  int64_t wait(Timeout timeout = std::nullopt) {
    return call_as<int64_t>("wait", detail::pack(detail::timeout_seconds(timeout)));
  }
  void abort() { call("abort"); }
  void reset() { call("reset"); }
  int64_t parties() const { return call_as<int64_t>("parties"); }
  int64_t n_waiting() const { return call_as<int64_t>("n_waiting"); }
  bool broken() const { return call_as<bool>("broken"); }

 private:
  using BaseProxy::BaseProxy;
  friend class Manager;
};

class EventProxy : public BaseProxy {
 public:
  EventProxy() = default;
  void set() { call("set"); }
  void clear() { call("clear"); }
  bool is_set() const { return call_as<bool>("is_set"); }
  // Returns the flag at the end of the wait (false on timeout).
  bool wait(Timeout timeout = std::nullopt) {
    return call_as<bool>("wait", detail::pack(detail::timeout_seconds(timeout)));
  }

 private:
  using BaseProxy::BaseProxy;
  friend class Manager;
};

// --- user-defined hosted types (CPython's BaseManager.register) ---------------------------------
//
//   struct Counter { int n = 0; void add(int k) { n += k; } int get() const { return n; } };
//   using CounterProxy = mp::Proxy<Counter, &Counter::add, &Counter::get>;  // what is exposed
//   Counter make_counter(int start) { return Counter{start}; }               // the callable
//
//   mp::Registry reg;
//   reg.add<CounterProxy, &make_counter>("Counter");  // or add<CounterProxy>: Counter{}
//   mp::Manager m(reg);
//   CounterProxy c = m.make<CounterProxy>("Counter", 5);
//   c.call<&Counter::add>(2);  int n = c.call<&Counter::get>();  // typed; others do not compile
//
// The server runs the exposed member functions, one call at a time under its lock (a method that
// blocks holds up every other client: keep hosted methods short). Their arguments and results
// must be transferable. An exception a method throws reaches the caller as a ProcessError with
// its message. A proxy class may derive from Proxy<...> to give the calls names.
namespace detail {

template <class M>
struct member_fn;
template <class C, class R, class... A>
struct member_fn<R (C::*)(A...)> {
  using cls = C;
  using result = R;
  using args = std::tuple<std::decay_t<A>...>;
};
template <class C, class R, class... A>
struct member_fn<R (C::*)(A...) const> : member_fn<R (C::*)(A...)> {};
template <class C, class R, class... A>
struct member_fn<R (C::*)(A...) noexcept> : member_fn<R (C::*)(A...)> {};
template <class C, class R, class... A>
struct member_fn<R (C::*)(A...) const noexcept> : member_fn<R (C::*)(A...)> {};

template <class F>
struct free_fn;
template <class R, class... A>
struct free_fn<R (*)(A...)> {
  using result = R;
  using args = std::tuple<std::decay_t<A>...>;
};
template <class R, class... A>
struct free_fn<R (*)(A...) noexcept> : free_fn<R (*)(A...)> {};

// What the server does with one registered type. One static table per (proxy, factory); the
// server finds it through the function that returns it, whose address the Manager hands over.
struct HostedTypeOps {
  const char* signature;  // the proxy type: a client's proxy must be the registered one
  std::shared_ptr<void> (*create)(const std::string& args);
  std::string (*call)(void* object, uint32_t method, const std::string& args);
};
using HostedTypeOpsFn = const HostedTypeOps* (*)();

template <class T>
T construct_default() {
  return T{};
}

template <auto M, class T>
std::string invoke_member(T& object, const std::string& args) {
  using F = member_fn<decltype(M)>;
  auto a = load<typename F::args>(std::string_view(args));
  if constexpr (std::is_void_v<typename F::result>) {
    std::apply([&](auto&... x) { (object.*M)(x...); }, a);
    return {};
  } else {
    return encode(std::apply([&](auto&... x) { return (object.*M)(x...); }, a));
  }
}

template <class P, auto Factory>
const HostedTypeOps* hosted_type_ops() {
  using T = typename P::type;
  static const HostedTypeOps ops{
      typeid(P).name(),
      [](const std::string& args) -> std::shared_ptr<void> {
        auto a = load<typename free_fn<decltype(Factory)>::args>(std::string_view(args));
        using R = typename free_fn<decltype(Factory)>::result;
        if constexpr (std::is_same_v<R, std::unique_ptr<T>> ||
                      std::is_same_v<R, std::shared_ptr<T>>)
          return std::shared_ptr<T>(std::apply(Factory, std::move(a)));
        else
          return std::make_shared<T>(std::apply(Factory, std::move(a)));
      },
      [](void* object, uint32_t method, const std::string& args) {
        return P::dispatch(*static_cast<T*>(object), method, args);
      }};
  return &ops;
}

}  // namespace detail

// A typed proxy for a user class T hosted by the server; Methods are the member functions it
// exposes (CPython's `exposed`). call<&T::m>(args...) sends one request and returns m's result.
template <class T, auto... Methods>
class Proxy : public BaseProxy {
  static_assert(sizeof...(Methods) > 0, "multiproc: a Proxy exposes at least one method");
  static_assert((std::is_same_v<typename detail::member_fn<decltype(Methods)>::cls, T> && ...),
                "multiproc: a Proxy<T, ...> exposes member functions of T");

 public:
  using type = T;
  Proxy() = default;

  template <auto M, class... A>
  auto call(A&&... a) const {
    constexpr uint32_t index = index_of<M>();
    static_assert(index < sizeof...(Methods),
                  "multiproc: this method is not exposed by the Proxy (list it in Proxy<T, ...>)");
    using F = detail::member_fn<decltype(M)>;
    static_assert(std::is_constructible_v<typename F::args, A&&...>,
                  "multiproc: these arguments do not convert to the method's parameters");
    std::string out;
    detail::dump(out, std::tuple<uint32_t, std::string>(
                          index, detail::encode(typename F::args(std::forward<A>(a)...))));
    std::string r = BaseProxy::call("call", out);
    if constexpr (!std::is_void_v<typename F::result>)
      return detail::load<std::decay_t<typename F::result>>(r);
  }

  // The server's side of call(); not for users.
  static std::string dispatch(T& object, uint32_t method, const std::string& args) {
    return dispatch_at(object, method, args, std::make_index_sequence<sizeof...(Methods)>());
  }

  // What Manager::make returns through; public so that a derived proxy needs only
  // `using Proxy::Proxy;`.
  explicit Proxy(detail::ProxyRef ref) : BaseProxy(std::move(ref)) {}

 private:
  template <auto M>
  static constexpr uint32_t index_of() {
    uint32_t i = 0, found = sizeof...(Methods);
    (void)((same_method<M, Methods>() ? (found = i, true) : (++i, false)) || ...);
    return found;
  }
  // Compared as template arguments, not with ==: GCC's UBSan instruments a member-pointer ==,
  // which then is no constant expression.
  template <auto A, auto B>
  static constexpr bool same_method() {
    return std::is_same_v<std::integral_constant<decltype(A), A>,
                          std::integral_constant<decltype(B), B>>;
  }
  template <size_t... I>
  static std::string dispatch_at(T& object, uint32_t method, const std::string& args,
                                 std::index_sequence<I...>) {
    constexpr auto ms = std::make_tuple(Methods...);
    std::string out;
    bool found = ((method == I ? (out = detail::invoke_member<std::get<I>(ms)>(object, args), true)
                               : false) ||
                  ...);
    if (!found) throw ProcessError("no exposed method #" + std::to_string(method));
    return out;
  }
};

// The types a Manager's server can host, each under a typeid (CPython's BaseManager.register).
// A Registry is given to the Manager before its server starts, which holds under every start
// method: the server is told where each type's code is.
class Registry {
 public:
  // P is a Proxy<T, ...>; T is made by Factory (a free function returning T, unique_ptr<T> or
  // shared_ptr<T>), called with make<P>()'s arguments; by default T{}.
  template <class P, auto Factory = &detail::construct_default<typename P::type>>
  Registry& add(const std::string& typeid_) {
    detail::HostedTypeOpsFn fn = &detail::hosted_type_ops<P, Factory>;
    types_.emplace_back(typeid_, detail::encode_code_address(reinterpret_cast<const void*>(fn)));
    return *this;
  }
  const std::vector<std::pair<std::string, detail::CodeAddress>>& types() const { return types_; }

 private:
  std::vector<std::pair<std::string, detail::CodeAddress>> types_;
};

template <class T>
using QueueProxy = ::multiproc::Queue<T>;
template <class T>
using JoinableQueueProxy = ::multiproc::JoinableQueue<T>;

class Manager {
 public:
  // Starts the server with the default start method, or the context's; returns once it serves.
  Manager();
  explicit Manager(const Context& ctx);
  // A server that can also host the registry's types (make<P>()).
  explicit Manager(const Registry& registry);
  Manager(const Context& ctx, const Registry& registry);
  Manager(Manager&&) noexcept;
  Manager& operator=(Manager&&) noexcept;
  Manager(const Manager&) = delete;
  Manager& operator=(const Manager&) = delete;
  // shutdown().
  ~Manager();

  // Serves on a TCP address ("host:port"; port 0 picks one, see address()) with `authkey`,
  // from a server process this Manager owns (started with `ctx`'s method or the default one).
  // Other processes and programs reach it with connect(); objects made by name are found by
  // that name.
  static Manager serve(const std::string& address, const std::string& authkey,
                       std::optional<Context> ctx = std::nullopt,
                       const Registry& registry = Registry());
  // A handle on a manager served elsewhere ("host:port" or "unix:/path"): it makes and finds
  // objects but does not own the server (shutdown() and destruction leave it running). Throws
  // ProcessError if nothing serves there, AuthenticationError on a wrong key.
  static Manager connect(const std::string& address, const std::string& authkey);

  // A shared-memory queue hosted by the server (kept alive while the server runs). Shared memory
  // is of this machine: a queue from a manager on another host is not supported.
  template <class T>
  ::multiproc::Queue<T> Queue(size_t maxsize = 0) {
    return detail::load<::multiproc::Queue<T>>(create_queue(maxsize, false, {}));
  }
  template <class T>
  ::multiproc::JoinableQueue<T> JoinableQueue(size_t maxsize = 0) {
    return detail::load<::multiproc::JoinableQueue<T>>(create_queue(maxsize, true, {}));
  }
  template <class K, class V>
  DictProxy<K, V> dict() {
    return DictProxy<K, V>(create("dict", {}, {}));
  }
  template <class T>
  ListProxy<T> list() {
    return ListProxy<T>(create("list", {}, {}));
  }
  template <class T>
  ValueProxy<T> Value(const T& init = T{}) {
    detail::require_transferable<T>();
    return ValueProxy<T>(create("value", detail::encode(init), {}));
  }
  NamespaceProxy Namespace() { return NamespaceProxy(create("namespace", {}, {})); }
  AcquirerProxy Lock() { return AcquirerProxy(create("lock", {}, {})); }
  // Re-entrant per thread: each thread of each process has its own connection, which is the
  // owner the server sees.
  AcquirerProxy RLock() { return AcquirerProxy(create("rlock", {}, {})); }
  AcquirerProxy Semaphore(int64_t value = 1) {
    return AcquirerProxy(create("semaphore", detail::pack(value), {}));
  }
  // release() beyond the initial value is a ProcessError.
  AcquirerProxy BoundedSemaphore(int64_t value = 1) {
    return AcquirerProxy(create("bounded_semaphore", detail::pack(value), {}));
  }
  EventProxy Event() { return EventProxy(create("event", {}, {})); }
  ConditionProxy Condition() { return ConditionProxy(create("condition", {}, {})); }
  BarrierProxy Barrier(int64_t parties) {
    return BarrierProxy(create("barrier", detail::pack(parties), {}));
  }

  // A new object of the type registered as `typeid_`, made by its factory from args (which must
  // have the factory's parameter types). ProcessError if the server has no such typeid, or has
  // it with another proxy type.
  template <class P, class... A>
  P make(const std::string& typeid_, const A&... args) {
    return P(create_user(typeid_, typeid(P).name(), detail::pack(args...), {}));
  }
  // The one object of that name and typeid, made with args on first use.
  template <class P, class... A>
  P make_named(const std::string& typeid_, const std::string& name, const A&... args) {
    return P(create_user(typeid_, typeid(P).name(), detail::pack(args...), name));
  }

  // Objects by name: the one object of that name, made on first use (with maxsize or init) and
  // found by every later call from any process or program; a name already used for another
  // kind of object is a ProcessError. The element types are the caller's promise.
  template <class T>
  ::multiproc::Queue<T> Queue(const std::string& name, size_t maxsize = 0) {
    return detail::load<::multiproc::Queue<T>>(create_queue(maxsize, false, name));
  }
  template <class T>
  ::multiproc::JoinableQueue<T> JoinableQueue(const std::string& name, size_t maxsize = 0) {
    return detail::load<::multiproc::JoinableQueue<T>>(create_queue(maxsize, true, name));
  }
  template <class K, class V>
  DictProxy<K, V> dict(const std::string& name) {
    return DictProxy<K, V>(create("dict", {}, name));
  }
  template <class T>
  ListProxy<T> list(const std::string& name) {
    return ListProxy<T>(create("list", {}, name));
  }
  template <class T>
  ValueProxy<T> Value(const std::string& name, const T& init) {
    detail::require_transferable<T>();
    return ValueProxy<T>(create("value", detail::encode(init), name));
  }
  NamespaceProxy Namespace(const std::string& name) {
    return NamespaceProxy(create("namespace", {}, name));
  }
  AcquirerProxy Lock(const std::string& name) { return AcquirerProxy(create("lock", {}, name)); }
  EventProxy Event(const std::string& name) { return EventProxy(create("event", {}, name)); }

  // How many objects the server holds (CPython's _number_of_objects()): those made by name,
  // those whose proxies have left the process that made them, and unnamed ones still held there.
  size_t number_of_objects();

  // Where the server listens: "unix:/path" (a directory only this user can enter) or, for
  // serve(), "host:port".
  const std::string& address() const { return address_; }
  const std::string& authkey() const { return authkey_; }
  // The server's pid (-1 once shut down, or for a connect()ed manager).
  pid_t pid() const;
  // Stops the server this Manager owns and waits for it (at most a few seconds, then kills it).
  // Idempotent; does nothing for a connect()ed manager.
  void shutdown();

 private:
  struct Connected {};
  Manager(Connected, std::string address, std::string authkey);
  Manager(const Context& ctx, std::string listen_address, std::string authkey,
          const Registry& registry);
  detail::ProxyRef create_user(const std::string& typeid_, const std::string& signature,
                               const std::string& args, const std::string& name);
  detail::ProxyRef create(const std::string& kind, const std::string& init,
                          const std::string& name);
  std::string create_queue(size_t maxsize, bool joinable, const std::string& name);

  std::string address_, authkey_, dir_;
  std::unique_ptr<Process> server_;
  Connection control_;
};

}  // namespace multiproc
