// Manager (the owner of the server process) and the client side of every proxy call.
#include <multiproc/managers.hpp>

#include <sys/syscall.h>
#include <unistd.h>
#include <atomic>
#include <cerrno>
#include <chrono>
#include <map>
#include <optional>
#include <stdexcept>

#include <multiproc/detail/fork_generation.hpp>

#include "connection/io.hpp"
#include "managers/dispatch.hpp"
#include "managers/frames.hpp"
#include "managers/server.hpp"

namespace multiproc {

namespace detail {
namespace {

// One connection per server, per thread, per process (CPython's BaseProxy._tls): a blocking
// call (Lock.acquire) in one thread never holds up another's, and no two threads interleave
// frames on one socket. A forked child starts with none of its parent's.
struct ClientCache {
  // fork_generation() when conns were made: a forked child drops the connections it inherited.
  uint32_t generation = 0;
  std::map<std::string, Connection> conns;  // by address + key
};
thread_local ClientCache t_cache;
// Still readable once t_cache is destroyed (a proxy released by a static destructor at exit).
thread_local bool t_cache_gone = false;
struct CacheGuard {
  ~CacheGuard() { t_cache_gone = true; }
};

[[noreturn]] void server_gone(const ProxyRef& ref, const std::string& why) {
  throw ProcessError("the manager's server at " + ref.address +
                     " cannot be reached (it has been shut down or has died): " + why);
}

Connection open_connection(const ProxyRef& ref) {
  try {
    return Client(ref.address, ref.authkey);
  } catch (const AuthenticationError&) {
    throw;
  } catch (const ProcessError& e) {
    server_gone(ref, e.what());
  }
}

Connection& connection_for(const ProxyRef& ref) {
  (void)t_cache.generation;
  thread_local CacheGuard guard;  // constructed after t_cache, so destroyed before it
  const uint32_t generation = fork_generation();
  if (t_cache.generation != generation) {
    t_cache.conns.clear();
    t_cache.generation = generation;
  }
  std::string key = ref.address;
  key.push_back('\0');
  key += ref.authkey;
  auto it = t_cache.conns.find(key);
  if (it != t_cache.conns.end() && !it->second.closed()) return it->second;
  return t_cache.conns[key] = open_connection(ref);
}

// A Manager that shuts down closes its own thread's connection to its server: kept, it would hold
// a descriptor for as long as the thread lives. Other threads' connections close at their next
// call (which fails) or when they end.
void forget_connections(const std::string& address) {
  if (t_cache.generation != fork_generation()) return;
  for (auto it = t_cache.conns.begin(); it != t_cache.conns.end();) {
    if (it->first.compare(0, address.size() + 1, address + '\0') == 0)
      it = t_cache.conns.erase(it);
    else
      ++it;
  }
}

}  // namespace

std::string proxy_call(const ProxyRef& ref, const std::string& method, const std::string& args) {
  std::string request;
  dump(request, std::tuple<uint64_t, std::string, std::string>(ref.id, method, args));
  // Too late in this thread for its cached connections (a proxy released by a static
  // destructor at exit): a connection for this call alone.
  std::optional<Connection> own;
  if (t_cache_gone) own.emplace(open_connection(ref));
  Connection& c = own ? *own : connection_for(ref);
  std::string frame;
  try {
    c.send_bytes(request);
    // This thread alone reads c, one reply per request: nothing can follow the reply.
    FrameReader reply(c.fileno());
    frame = reply.next(kMaxRequestBytes);
    if (reply.has_more()) throw ProcessError("the server sent more than one reply");
  } catch (const ProcessError& e) {
    c.close();  // out of step or dead: the next call reconnects (and fails at once if gone)
    server_gone(ref, e.what());
  }
  return reply_payload(frame, method);
}

std::string reply_payload(const std::string& reply, const std::string& method) {
  auto [kind, payload] = load<std::tuple<uint8_t, std::string>>(reply);
  switch (static_cast<ReplyKind>(kind)) {
    case ReplyKind::ok:
      return payload;
    case ReplyKind::key_error:
      throw KeyError(payload);
    case ReplyKind::index_error:
      throw std::out_of_range(payload);
    case ReplyKind::timeout:
      throw TimeoutError(payload);
    case ReplyKind::broken_barrier:
      throw BrokenBarrierError(payload);
    default:
      throw ProcessError("manager: " + method + ": " + payload);
  }
}

ProxyOwner::ProxyOwner(std::string a, std::string k, uint64_t i)
    : address(std::move(a)), authkey(std::move(k)), id(i), pid(::getpid()) {}

ProxyOwner::~ProxyOwner() {
  if (pinned.load(std::memory_order_relaxed) || ::getpid() != pid) return;
  try {
    proxy_call(ProxyRef{address, authkey, id, nullptr}, "#release", {});
  } catch (...) {
    // The server has gone (and the object with it), or is unreachable: nothing to free.
  }
}

void ProxyOwner::pin() {
  if (pinned.load(std::memory_order_relaxed) || ::getpid() != pid) return;
  try {
    proxy_call(ProxyRef{address, authkey, id, nullptr}, "#pin", {});
    pinned.store(true, std::memory_order_relaxed);
  } catch (...) {
  }
}

}  // namespace detail

Manager::Manager() : Manager(get_context()) {}

Manager::Manager(const Context& ctx) : Manager(ctx, std::string(), process_authkey(), Registry()) {}

Manager::Manager(const Registry& registry)
    : Manager(get_context(), std::string(), process_authkey(), registry) {}

Manager::Manager(const Context& ctx, const Registry& registry)
    : Manager(ctx, std::string(), process_authkey(), registry) {}

Manager Manager::serve(const std::string& address, const std::string& authkey,
                       std::optional<Context> ctx, const Registry& registry) {
  if (address.empty()) throw ProcessError("Manager::serve: an address is needed");
  return Manager(ctx ? *ctx : get_context(), address, authkey, registry);
}

Manager Manager::connect(const std::string& address, const std::string& authkey) {
  Manager m(Connected{}, address, authkey);
  // Fail here, not at the first proxy call, when nothing serves there or the key is wrong.
  detail::proxy_call(detail::ProxyRef{address, authkey, 0, nullptr}, "ping", {});
  return m;
}

Manager::Manager(Connected, std::string address, std::string authkey)
    : address_(std::move(address)), authkey_(std::move(authkey)) {}

Manager::Manager(const Context& ctx, std::string listen_address, std::string authkey,
                 const Registry& registry)
    : authkey_(std::move(authkey)) {
  if (authkey_.empty()) throw AuthenticationError("a manager needs a non-empty auth key");
  if (listen_address.empty()) {
    dir_ = detail::make_private_dir("multiproc-manager");
    listen_address = "unix:" + dir_ + "/server";
  }
  // The server connects back here; until then this listener is this Manager's alone (its
  // directory is private and the server must pass the handshake).
  std::string control_dir = detail::make_private_dir("multiproc-manager-control");
  Connection control;
  try {
    Listener control_listener("unix:" + control_dir + "/control", authkey_);
    // The parent-death signal follows the thread that forked: arm it only when that thread is
    // the main one (whose end is the program's).
    const bool main_thread = ::syscall(SYS_gettid) == ::getpid();
    server_ =
        std::make_unique<Process>(ctx, detail::manager_server_main, listen_address, dir_, authkey_,
                                  control_listener.address(), main_thread, registry.types());
    server_->name("SyncManager");
    server_->daemon(true);
    server_->start();
    // Wait for the server to connect back, or to die trying.
    const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(60);
    for (;;) {
      auto ready = wait(std::vector<int>{control_listener.fileno(), server_->sentinel()},
                        std::chrono::milliseconds(100));
      if (!ready.empty() && ready[0] == control_listener.fileno()) break;
      if (!ready.empty() || std::chrono::steady_clock::now() > deadline)
        throw ProcessError("the manager's server ended (or hung) before it started serving");
    }
    control = control_listener.accept(std::chrono::seconds(20));
    control_listener.close();
    std::string answer;
    try {
      answer = control.recv_bytes(std::chrono::seconds(60));
    } catch (const ProcessError& e) {
      throw ProcessError(std::string("the manager's server did not start: ") + e.what());
    }
    if (answer.rfind("ok ", 0) != 0)
      throw ProcessError("the manager's server did not start: " + answer);
    address_ = answer.substr(3);
  } catch (...) {
    if (server_ && server_->pid() > 0) {
      server_->kill();
      server_->join();
    }
    server_.reset();
    ::rmdir(control_dir.c_str());
    if (!dir_.empty()) ::rmdir(dir_.c_str());
    throw;
  }
  ::rmdir(control_dir.c_str());
  control_ = control;
}

Manager::Manager(Manager&& o) noexcept {
  *this = std::move(o);
}

Manager& Manager::operator=(Manager&& o) noexcept {
  if (this != &o) {
    shutdown();
    address_ = std::move(o.address_);
    authkey_ = std::move(o.authkey_);
    dir_ = std::move(o.dir_);
    server_ = std::move(o.server_);
    control_ = std::move(o.control_);
    o.dir_.clear();
  }
  return *this;
}

Manager::~Manager() {
  try {
    shutdown();
  } catch (...) {
  }
}

pid_t Manager::pid() const {
  return server_ ? server_->pid() : -1;
}

void Manager::shutdown() {
  if (!server_) return;
  try {
    control_.send_bytes("stop");
  } catch (const ProcessError&) {
    // already gone
  }
  control_.close();
  if (!server_->join(std::chrono::seconds(5))) {
    server_->kill();
    server_->join();
  }
  server_.reset();
  detail::forget_connections(address_);
  // The server removes its socket; after a crash it could not.
  if (!dir_.empty()) {
    ::unlink(address_.substr(5).c_str());
    ::rmdir(dir_.c_str());
  }
}

detail::ProxyRef Manager::create(const std::string& kind, const std::string& init,
                                 const std::string& name) {
  detail::ProxyRef server{address_, authkey_, 0, nullptr};
  detail::ProxyRef ref = server;
  ref.id =
      detail::load<uint64_t>(detail::proxy_call(server, "create", detail::pack(kind, init, name)));
  if (name.empty()) ref.owner = std::make_shared<detail::ProxyOwner>(address_, authkey_, ref.id);
  return ref;
}

size_t Manager::number_of_objects() {
  return detail::load<uint64_t>(detail::proxy_call(detail::ProxyRef{address_, authkey_, 0, nullptr},
                                                   "number_of_objects", {}));
}

detail::ProxyRef Manager::create_user(const std::string& typeid_, const std::string& signature,
                                      const std::string& args, const std::string& name) {
  detail::ProxyRef server{address_, authkey_, 0, nullptr};
  detail::ProxyRef ref = server;
  ref.id = detail::load<uint64_t>(
      detail::proxy_call(server, "create_user", detail::pack(typeid_, signature, args, name)));
  if (name.empty()) ref.owner = std::make_shared<detail::ProxyOwner>(address_, authkey_, ref.id);
  return ref;
}

std::string Manager::create_queue(size_t maxsize, bool joinable, const std::string& name) {
  detail::ProxyRef server{address_, authkey_, 0, nullptr};
  // The payload is the queue's name; returned encoded, as a queue handle travels.
  std::string queue = detail::load<std::string>(detail::proxy_call(
      server, "create_queue", detail::pack(static_cast<uint64_t>(maxsize), joinable, name)));
  return detail::encode(queue);
}

}  // namespace multiproc
