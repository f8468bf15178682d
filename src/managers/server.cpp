// The manager's server: accepts connections, authenticates each in its own thread, then answers
// its requests in order (CPython's managers.Server). One mutex guards every hosted object; a
// blocking call (Lock.acquire, Event.wait) waits on one condition variable, so a slow or stuck
// client holds only its own thread.
#include "managers/server.hpp"

#include <poll.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/signalfd.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>
#include <chrono>
#include <cmath>
#include <condition_variable>
#include <list>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <set>
#include <thread>
#include <unordered_map>
#include <vector>

#include <multiproc/detail/queue_core.hpp>
#include <multiproc/managers.hpp>
#include <multiproc/serialization.hpp>

namespace multiproc::detail {
namespace {

struct Object {
  std::string kind;
  // dict: insertion order kept in `order`, found through `index`.
  std::list<std::pair<std::string, std::string>> order;
  std::unordered_map<std::string, std::list<std::pair<std::string, std::string>>::iterator> index;
  std::vector<std::string> items;                                 // list
  std::string value;                                              // value
  std::map<std::string, std::pair<std::string, std::string>> ns;  // namespace: type, bytes
  bool flag = false;                                              // lock: held; event: set
  uint64_t owner = 0;  // lock, rlock: the client (one per thread of a process) holding it
  int64_t count = 0;   // rlock: depth; semaphore: value
  int64_t bound = 0;   // bounded_semaphore: the initial value, never to be exceeded
  // condition: tickets of the waiters, and those notified but not yet awake.
  uint64_t next_ticket = 0;
  std::set<uint64_t> waiting, woken;
  // barrier: parties in `bound`, arrivals of this round in `count`; a round ends when the
  // generation moves on; a reset while parties wait breaks that round for them.
  uint64_t generation = 0;
  uint64_t broken_generation = UINT64_MAX;
  bool broken = false;
  std::shared_ptr<QueueCore> queue;
  // a registered user type: the object and what the server can do with it
  std::shared_ptr<void> user;
  const HostedTypeOps* ops = nullptr;
  // Set once a proxy to it has left the process that made it: never freed by a release.
  bool pinned = false;
};

struct Server {
  std::mutex mu;
  std::condition_variable changed;
  // Shared so that a thread waiting in a call keeps its object while a release erases it.
  std::map<uint64_t, std::shared_ptr<Object>> objects;
  std::map<std::string, uint64_t> names;  // objects made by name
  uint64_t next_id = 1;
  uint64_t next_client = 1;
  std::string authkey;
  std::map<std::string, const HostedTypeOps*> types;  // registered user types, by typeid
};

struct Failure {
  ReplyKind kind;
  std::string message;
};

[[noreturn]] void fail(ReplyKind k, std::string msg) {
  throw Failure{k, std::move(msg)};
}

template <class... A>
std::tuple<A...> args_as(const std::string& args) {
  return load<std::tuple<A...>>(std::string_view(args));
}

std::optional<std::chrono::steady_clock::time_point> deadline_of(double seconds) {
  if (std::isnan(seconds)) seconds = 0;  // from a broken client: do not wait
  if (seconds < 0) return std::nullopt;
  return std::chrono::steady_clock::now() +
         std::chrono::duration_cast<std::chrono::steady_clock::duration>(
             std::chrono::duration<double>(std::min(seconds, 1e9)));
}

template <class Pred>
bool wait_until(Server& s, std::unique_lock<std::mutex>& lk, double seconds, Pred pred) {
  auto dl = deadline_of(seconds);
  if (!dl) {
    s.changed.wait(lk, pred);
    return true;
  }
  return s.changed.wait_until(lk, *dl, pred);
}

size_t list_index(const Object& o, int64_t i) {
  int64_t n = static_cast<int64_t>(o.items.size());
  if (i < 0) i += n;
  if (i < 0 || i >= n) fail(ReplyKind::index_error, "list index out of range");
  return static_cast<size_t>(i);
}

// Runs one request; returns the reply payload or throws Failure. `held` lists the locks this
// client holds, for release when it disconnects.
std::string handle(Server& s, uint64_t client, std::multiset<uint64_t>& held, uint64_t id,
                   const std::string& method, const std::string& args) {
  std::unique_lock lk(s.mu);
  if (id == 0) {
    if (method == "ping") return {};
    if (method == "number_of_objects") return encode(static_cast<uint64_t>(s.objects.size()));
    if (method == "create" || method == "create_queue") {
      std::string kind, init, name;
      uint64_t maxsize = 0;
      bool joinable = false;
      if (method == "create") {
        std::tie(kind, init, name) = args_as<std::string, std::string, std::string>(args);
        if (kind != "dict" && kind != "list" && kind != "value" && kind != "namespace" &&
            kind != "lock" && kind != "rlock" && kind != "semaphore" &&
            kind != "bounded_semaphore" && kind != "event" && kind != "condition" &&
            kind != "barrier")
          fail(ReplyKind::error, "unknown type '" + kind + "'");
      } else {
        std::tie(maxsize, joinable, name) = args_as<uint64_t, bool, std::string>(args);
        kind = joinable ? "joinable_queue" : "queue";
      }
      uint64_t nid = 0;
      if (auto n = name.empty() ? s.names.end() : s.names.find(name); n != s.names.end()) {
        nid = n->second;
        if (s.objects[nid]->kind != kind)
          fail(ReplyKind::error,
               "the name '" + name + "' is a " + s.objects[nid]->kind + ", not a " + kind);
      } else {
        auto made = std::make_shared<Object>();
        Object& o = *made;
        o.kind = kind;
        o.value = init;
        if (kind == "semaphore" || kind == "bounded_semaphore") {
          auto [v] = args_as<int64_t>(init);
          if (v < 0) fail(ReplyKind::error, "a semaphore's initial value must be >= 0");
          o.count = o.bound = v;
        }
        if (kind == "barrier") {
          auto [parties] = args_as<int64_t>(init);
          if (parties < 1) fail(ReplyKind::error, "a barrier needs at least one party");
          o.bound = parties;
        }
        if (method == "create_queue") {
          o.queue = QueueCore::create(maxsize, joinable);
          if (name.empty()) {
            // Not filed: an unnamed queue lives as long as its handles, the reply's included.
            o.queue->add_flight_ref();
            return encode(o.queue->name());
          }
        }
        // Filed once whole, so that a refusal above leaves nothing behind.
        nid = s.next_id++;
        s.objects[nid] = std::move(made);
        if (!name.empty()) {
          s.names[name] = nid;
          s.objects[nid]->pinned = true;  // found by name by anyone, at any time
        }
      }
      Object& o = *s.objects[nid];
      if (!o.queue) return encode(nid);
      // The reply is a serialized queue handle: it carries a reference for the receiver.
      o.queue->add_flight_ref();
      return encode(o.queue->name());
    }
    if (method == "create_user") {
      auto [type, signature, init, name] =
          args_as<std::string, std::string, std::string, std::string>(args);
      auto t = s.types.find(type);
      if (t == s.types.end())
        fail(ReplyKind::error, "no type is registered as '" + type + "' with this manager");
      if (signature != t->second->signature)
        fail(ReplyKind::error, "'" + type + "' is registered with another proxy type");
      const std::string kind = "user:" + type;
      if (auto n = name.empty() ? s.names.end() : s.names.find(name); n != s.names.end()) {
        if (s.objects[n->second]->kind != kind)
          fail(ReplyKind::error,
               "the name '" + name + "' is a " + s.objects[n->second]->kind + ", not a " + kind);
        return encode(n->second);
      }
      // Made before it is filed, so a factory that throws leaves nothing behind.
      std::shared_ptr<void> object = t->second->create(init);
      const uint64_t nid = s.next_id++;
      auto made = std::make_shared<Object>();
      s.objects[nid] = made;
      Object& o = *made;
      o.kind = kind;
      o.user = std::move(object);
      o.ops = t->second;
      o.pinned = !name.empty();
      if (!name.empty()) s.names[name] = nid;
      return encode(nid);
    }
    fail(ReplyKind::error, "unknown server method '" + method + "'");
  }
  auto it = s.objects.find(id);
  if (it == s.objects.end())
    fail(ReplyKind::error, "no object with id " + std::to_string(id) +
                               " (freed when the last proxy of the process that made it went)");
  if (method == "#pin") {
    it->second->pinned = true;
    return {};
  }
  if (method == "#release") {
    if (!it->second->pinned) {
      // A thread that waits in this object's call keeps it (shared); nothing else names it.
      s.objects.erase(it);
      s.changed.notify_all();
    }
    return {};
  }
  const std::shared_ptr<Object> keep = it->second;
  Object& o = *keep;
  const std::string& k = o.kind;
  if (k == "dict") {
    if (method == "set") {
      auto [key, val] = args_as<std::string, std::string>(args);
      auto f = o.index.find(key);
      if (f != o.index.end()) {
        f->second->second = std::move(val);
      } else {
        o.order.emplace_back(key, std::move(val));
        o.index.emplace(std::move(key), std::prev(o.order.end()));
      }
      return {};
    }
    if (method == "get" || method == "get_opt" || method == "contains" || method == "pop") {
      auto [key] = args_as<std::string>(args);
      auto f = o.index.find(key);
      if (method == "contains") return encode(f != o.index.end());
      if (method == "get_opt")
        return encode(f == o.index.end() ? std::optional<std::string>()
                                         : std::optional<std::string>(f->second->second));
      if (f == o.index.end()) fail(ReplyKind::key_error, "the dict has no such key");
      std::string v = f->second->second;
      if (method == "pop") {
        o.order.erase(f->second);
        o.index.erase(f);
      }
      return encode(v);
    }
    if (method == "size") return encode(static_cast<uint64_t>(o.order.size()));
    if (method == "clear") {
      o.order.clear();
      o.index.clear();
      return {};
    }
    if (method == "items") {
      std::vector<std::pair<std::string, std::string>> v(o.order.begin(), o.order.end());
      return encode(v);
    }
  } else if (k == "list") {
    if (method == "append") {
      auto [x] = args_as<std::string>(args);
      o.items.push_back(std::move(x));
      return {};
    }
    if (method == "get") {
      auto [i] = args_as<int64_t>(args);
      return encode(o.items[list_index(o, i)]);
    }
    if (method == "set") {
      auto [i, x] = args_as<int64_t, std::string>(args);
      o.items[list_index(o, i)] = std::move(x);
      return {};
    }
    if (method == "size") return encode(static_cast<uint64_t>(o.items.size()));
    if (method == "pop") {
      if (o.items.empty()) fail(ReplyKind::index_error, "pop from empty list");
      std::string v = std::move(o.items.back());
      o.items.pop_back();
      return encode(v);
    }
    if (method == "extend") {
      auto [xs] = args_as<std::vector<std::string>>(args);
      for (auto& x : xs) o.items.push_back(std::move(x));
      return {};
    }
    if (method == "copy") return encode(o.items);
  } else if (k == "value") {
    if (method == "get") return encode(o.value);
    if (method == "set") {
      auto [x] = args_as<std::string>(args);
      o.value = std::move(x);
      return {};
    }
  } else if (k == "namespace") {
    if (method == "set") {
      auto [name, type, bytes] = args_as<std::string, std::string, std::string>(args);
      o.ns[name] = {std::move(type), std::move(bytes)};
      return {};
    }
    auto [name] = args_as<std::string>(args);
    auto f = o.ns.find(name);
    if (method == "contains") return encode(f != o.ns.end());
    if (f == o.ns.end())
      fail(ReplyKind::key_error, "the Namespace has no attribute '" + name + "'");
    if (method == "get") return encode(f->second);
    if (method == "erase") {
      o.ns.erase(f);
      return {};
    }
  } else if (k == "lock") {
    if (method == "acquire") {
      auto [block, seconds] = args_as<bool, double>(args);
      bool got = !o.flag;
      if (!got && block) got = wait_until(s, lk, seconds, [&] { return !o.flag; });
      if (got) {
        o.flag = true;
        o.owner = client;
        held.insert(id);
      }
      return encode(got);
    }
    if (method == "release") {
      if (!o.flag) fail(ReplyKind::error, "release of an unlocked lock");
      o.flag = false;
      if (auto h = held.find(id); h != held.end()) held.erase(h);
      s.changed.notify_all();
      return {};
    }
  } else if (k == "rlock" || k == "condition") {
    if (k == "condition" && method == "wait") {
      auto [seconds] = args_as<double>(args);
      if (!o.flag || o.owner != client) fail(ReplyKind::error, "cannot wait on un-acquired lock");
      const int64_t depth = o.count;
      const uint64_t ticket = o.next_ticket++;
      o.waiting.insert(ticket);
      o.flag = false;
      o.count = 0;
      s.changed.notify_all();
      bool notified = wait_until(s, lk, seconds, [&] { return o.woken.count(ticket) != 0; });
      o.woken.erase(ticket);
      o.waiting.erase(ticket);
      // The lock comes back whatever happened, as threading.Condition's does.
      s.changed.wait(lk, [&] { return !o.flag; });
      o.flag = true;
      o.owner = client;
      o.count = depth;
      return encode(notified);
    }
    if (k == "condition" && method == "notify") {
      auto [n] = args_as<int64_t>(args);
      if (!o.flag || o.owner != client) fail(ReplyKind::error, "cannot notify on un-acquired lock");
      for (; n > 0 && !o.waiting.empty(); --n) {
        o.woken.insert(*o.waiting.begin());
        o.waiting.erase(o.waiting.begin());
      }
      s.changed.notify_all();
      return {};
    }
    if (method == "acquire") {
      auto [block, seconds] = args_as<bool, double>(args);
      bool got = !o.flag || o.owner == client;
      if (!got && block) got = wait_until(s, lk, seconds, [&] { return !o.flag; });
      if (got) {
        o.count = o.flag ? o.count + 1 : 1;
        o.flag = true;
        o.owner = client;
        held.insert(id);
      }
      return encode(got);
    }
    if (method == "release") {
      if (!o.flag || o.owner != client) fail(ReplyKind::error, "cannot release un-acquired lock");
      if (--o.count == 0) {
        o.flag = false;
        s.changed.notify_all();
      }
      if (auto h = held.find(id); h != held.end()) held.erase(h);
      return {};
    }
  } else if (k == "semaphore" || k == "bounded_semaphore") {
    // Not owned (any process may release), so not released for a client that goes away.
    if (method == "acquire") {
      auto [block, seconds] = args_as<bool, double>(args);
      bool got = o.count > 0;
      if (!got && block) got = wait_until(s, lk, seconds, [&] { return o.count > 0; });
      if (got) --o.count;
      return encode(got);
    }
    if (method == "release") {
      if (k == "bounded_semaphore" && o.count >= o.bound)
        fail(ReplyKind::error, "Semaphore released too many times");
      ++o.count;
      s.changed.notify_all();
      return {};
    }
    if (method == "get_value") return encode(o.count);
  } else if (k == "barrier") {
    if (method == "wait") {
      auto [seconds] = args_as<double>(args);
      if (o.broken) fail(ReplyKind::broken_barrier, "the barrier is broken");
      const int64_t index = o.count++;
      const uint64_t gen = o.generation;
      if (o.count == o.bound) {
        o.count = 0;
        ++o.generation;
        s.changed.notify_all();
        return encode(index);
      }
      bool done = wait_until(s, lk, seconds, [&] { return o.generation != gen || o.broken; });
      if (o.generation != gen) {
        if (o.broken_generation == gen) fail(ReplyKind::broken_barrier, "the barrier was reset");
        return encode(index);
      }
      if (!done) {  // this party's timeout breaks the barrier for everyone, as Python's does
        o.broken = true;
        s.changed.notify_all();
      }
      if (o.count > 0) --o.count;
      fail(ReplyKind::broken_barrier, "the barrier is broken");
    }
    if (method == "abort") {
      o.broken = true;
      s.changed.notify_all();
      return {};
    }
    if (method == "reset") {
      if (o.count > 0) o.broken_generation = o.generation;
      ++o.generation;
      o.count = 0;
      o.broken = false;
      s.changed.notify_all();
      return {};
    }
    if (method == "parties") return encode(o.bound);
    if (method == "n_waiting") return encode(o.broken ? int64_t{0} : o.count);
    if (method == "broken") return encode(o.broken);
  } else if (o.ops) {
    if (method == "call") {
      auto [index, margs] = args_as<uint32_t, std::string>(args);
      return o.ops->call(o.user.get(), index, margs);
    }
  } else if (k == "event") {
    if (method == "set") {
      o.flag = true;
      s.changed.notify_all();
      return {};
    }
    if (method == "clear") {
      o.flag = false;
      return {};
    }
    if (method == "is_set") return encode(o.flag);
    if (method == "wait") {
      auto [seconds] = args_as<double>(args);
      return encode(wait_until(s, lk, seconds, [&] { return o.flag; }));
    }
  }
  fail(ReplyKind::error, "a " + k + " has no method '" + method + "'");
}

void serve_client(Server* s, Connection c) {
  uint64_t client;
  {
    std::lock_guard lk(s->mu);
    client = s->next_client++;
  }
  std::multiset<uint64_t> held;
  try {
    // Authenticate before reading anything else; a client that stalls is dropped.
    timeval tv{20, 0};
    ::setsockopt(c.fileno(), SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
    deliver_challenge(c, s->authkey);
    answer_challenge(c, s->authkey);
    tv = timeval{0, 0};
    ::setsockopt(c.fileno(), SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
    c.max_message_size(kMaxRequestBytes);
    for (;;) {
      std::string frame = c.recv_bytes();
      // A request that does not decode is not a client speaking the protocol: hang up.
      auto [id, method, args] = load<std::tuple<uint64_t, std::string, std::string>>(frame);
      ReplyKind kind = ReplyKind::ok;
      std::string payload;
      try {
        payload = handle(*s, client, held, id, method, args);
      } catch (const Failure& f) {
        kind = f.kind;
        payload = f.message;
      } catch (const ProcessError& e) {  // arguments that do not decode as the method's
        kind = ReplyKind::error;
        payload = std::string("malformed request: ") + e.what();
      } catch (const std::exception& e) {
        kind = ReplyKind::error;
        payload = e.what();
      } catch (...) {  // a hosted user type's method threw something else
        kind = ReplyKind::error;
        payload = "a hosted method threw an exception that is not a std::exception";
      }
      std::string reply;
      dump(reply, std::tuple<uint8_t, std::string>(static_cast<uint8_t>(kind), payload));
      c.send_bytes(reply);
    }
  } catch (...) {
    // EOF, a hostile or broken client, a wrong key: this client only.
  }
  c.close();
  if (!held.empty()) {
    // A client that went away does not keep its locks.
    std::lock_guard lk(s->mu);
    for (uint64_t id : held) {
      auto it = s->objects.find(id);
      if (it != s->objects.end() && it->second->flag && it->second->owner == client) {
        it->second->flag = false;
        it->second->count = 0;
      }
    }
    s->changed.notify_all();
  }
}

}  // namespace

void manager_server_main(std::string address, std::string private_dir, std::string authkey,
                         std::string control_address, bool pdeathsig,
                         std::vector<std::pair<std::string, CodeAddress>> registry) {
  // SIGTERM (and the parent-death signal) become a clean stop through the poll loop below.
  sigset_t term;
  sigemptyset(&term);
  sigaddset(&term, SIGTERM);
  pthread_sigmask(SIG_BLOCK, &term, nullptr);
  int sig_fd = ::signalfd(-1, &term, SFD_CLOEXEC);
  if (pdeathsig) {
    pid_t parent = ::getppid();
    ::prctl(PR_SET_PDEATHSIG, SIGTERM);
    if (::getppid() != parent) return;  // the parent died before the signal was armed
  }
  Connection control = Client(control_address, authkey);
  auto* server = new Server;  // leaked on purpose: client threads may still run at _exit
  server->authkey = authkey;
  for (auto& [type, code] : registry) {
    auto fn = reinterpret_cast<HostedTypeOpsFn>(const_cast<void*>(decode_code_address(code)));
    server->types[type] = fn();
  }
  std::optional<Listener> listener;
  try {
    listener.emplace(address);
  } catch (const std::exception& e) {
    control.send_bytes(std::string("error: ") + e.what());
    return;
  }
  control.send_bytes("ok " + listener->address());
  for (;;) {
    pollfd fds[3] = {
        {listener->fileno(), POLLIN, 0}, {control.fileno(), POLLIN, 0}, {sig_fd, POLLIN, 0}};
    int r = ::poll(fds, sig_fd >= 0 ? 3 : 2, -1);
    if (r < 0 && errno == EINTR) continue;
    if (r < 0) break;
    if (fds[1].revents || (sig_fd >= 0 && fds[2].revents)) break;  // stop, or EOF: end
    if (fds[0].revents) {
      try {
        std::thread(serve_client, server, listener->accept()).detach();
      } catch (const std::exception&) {
        // EMFILE and the like: this client is refused, the others go on.
        std::this_thread::sleep_for(std::chrono::milliseconds(10));
      }
    }
  }
  listener.reset();  // unlinks a Unix socket
  if (!private_dir.empty()) ::rmdir(private_dir.c_str());
  // Returning ends the process (_exit, without running the detached threads' destructors).
}

}  // namespace multiproc::detail
