// multiproc::redis::Pool's untyped side: the signed messages, the client's result thread and
// reaper, and the worker loop (also run by `./app --multiproc-worker URL`, through init()'s hook).
//
// Keys, for a pool named N: "mp:pool:{N}:tasks" (clients push on the left, workers BLMOVE from
// the right into their "proc:<worker>" list), "hb:<worker>" (a key with a TTL the worker renews),
// "workers" (the set of worker ids), "ttl" (the heartbeat TTL in ms the pools ask for) and
// "results:<client>" (a list per client).
//
// Messages are a 32-byte HMAC-SHA256 under the auth key, then the body (serialization.hpp).
// Checking a task's code: the invoker address, rebuilt from (module, offset), must be one of the
// invokers this program registered at start-up (TaskEntry); the user function's address must lie
// in an executable segment of a loaded module. A task whose message is signed by a holder of the
// key and that passes both is run; anything else is refused with a log line.
#include <elf.h>
#include <link.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <openssl/core_names.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <openssl/sha.h>

#include <atomic>
#include <cstring>
#include <fstream>
#include <iterator>
#include <mutex>
#include <set>
#include <thread>
#include <unordered_map>

#include <multiproc/logging.hpp>
#include <multiproc/process.hpp>
#include <multiproc/redis.hpp>

#include "connection.hpp"

namespace multiproc::redis {
namespace detail {

namespace {

constexpr uint32_t kTaskMagic = 0x6d705254;    // "mpRT"
constexpr uint32_t kResultMagic = 0x6d705252;  // "mpRR"
enum ResultKind : uint32_t { kResult = 0, kLost = 1, kRefused = 2 };

struct TaskMsg {
  uint32_t magic = kTaskMagic;
  std::string build;
  std::string client;
  uint64_t task = 0;
  uint32_t attempt = 0;
  std::string code;
  std::string args;
  template <class Archive>
  void serialize(Archive& ar) {
    ar(magic, build, client, task, attempt, code, args);
  }
};

struct ResultMsg {
  uint32_t magic = kResultMagic;
  std::string client;
  uint64_t task = 0;
  uint32_t kind = kResult;
  std::string worker;
  std::string payload;
  template <class Archive>
  void serialize(Archive& ar) {
    ar(magic, client, task, kind, worker, payload);
  }
};

#if OPENSSL_VERSION_NUMBER >= 0x30000000L
// OpenSSL 3's one-shot HMAC() fetches the algorithm and sets the key up on every call (about half
// of its 2 µs); a task's round trip makes four of them (client seal, worker open, worker seal,
// client open). Each thread keeps one context keyed and copies it.
class MacCache {
 public:
  ~MacCache() {
    if (ctx_) EVP_MAC_CTX_free(ctx_);
    if (mac_) EVP_MAC_free(mac_);
  }
  EVP_MAC_CTX* keyed(const std::string& key) {
    if (ctx_ && key == key_) return ctx_;
    if (!mac_) mac_ = EVP_MAC_fetch(nullptr, "HMAC", nullptr);
    if (!mac_) return nullptr;
    if (ctx_) EVP_MAC_CTX_free(ctx_);
    ctx_ = EVP_MAC_CTX_new(mac_);
    char digest[] = "SHA256";
    const OSSL_PARAM params[] = {OSSL_PARAM_construct_utf8_string("digest", digest, 0),
                                 OSSL_PARAM_construct_end()};
    if (!ctx_ || !EVP_MAC_init(ctx_, reinterpret_cast<const unsigned char*>(key.data()), key.size(),
                               params)) {
      if (ctx_) EVP_MAC_CTX_free(ctx_);
      ctx_ = nullptr;
      return nullptr;
    }
    key_ = key;
    return ctx_;
  }

 private:
  EVP_MAC* mac_ = nullptr;
  EVP_MAC_CTX* ctx_ = nullptr;
  std::string key_;
};
#endif

std::string hmac(const std::string& key, std::string_view body) {
  unsigned char out[EVP_MAX_MD_SIZE];
#if OPENSSL_VERSION_NUMBER >= 0x30000000L
  thread_local MacCache cache;
  if (EVP_MAC_CTX* keyed = cache.keyed(key)) {
    EVP_MAC_CTX* c = EVP_MAC_CTX_dup(keyed);
    size_t len = 0;
    const bool ok =
        c && EVP_MAC_update(c, reinterpret_cast<const unsigned char*>(body.data()), body.size()) &&
        EVP_MAC_final(c, out, &len, sizeof out);
    if (c) EVP_MAC_CTX_free(c);
    if (!ok) throw ProcessError("multiproc: redis: OpenSSL HMAC-SHA256 failed");
    return std::string(reinterpret_cast<char*>(out), len);
  }
#endif
  unsigned int len = 0;
  if (!HMAC(EVP_sha256(), key.data(), static_cast<int>(key.size()),
            reinterpret_cast<const unsigned char*>(body.data()), body.size(), out, &len))
    throw ProcessError("multiproc: redis: OpenSSL HMAC-SHA256 failed");
  return std::string(reinterpret_cast<char*>(out), len);
}

template <class Msg>
std::string seal(const std::string& key, const Msg& m) {
  std::string body;
  multiproc::detail::dump(body, m);
  return hmac(key, body) + body;
}

// Empty (with *why set) when the signature is wrong or the body does not decode.
template <class Msg>
std::optional<Msg> open(const std::string& key, std::string_view bytes, uint32_t magic,
                        std::string* why) {
  if (bytes.size() < 32) {
    *why = "too short to be signed";
    return std::nullopt;
  }
  const std::string_view body = bytes.substr(32);
  const std::string mac = hmac(key, body);
  if (CRYPTO_memcmp(mac.data(), bytes.data(), 32) != 0) {
    *why = "bad signature (not signed with this pool's auth key)";
    return std::nullopt;
  }
  try {
    Msg m = multiproc::detail::load<Msg>(body);
    if (m.magic != magic) {
      *why = "not a message of this kind";
      return std::nullopt;
    }
    return m;
  } catch (const std::exception& e) {
    *why = std::string("malformed: ") + e.what();
    return std::nullopt;
  }
}

std::mutex& entries_mutex() {
  static std::mutex mu;
  return mu;
}
std::set<const void*>& entries() {
  static std::set<const void*> s;
  return s;
}

// The GNU build-id note of the main program; a SHA-256 of the executable where it has none.
std::string compute_build_id() {
  std::string id;
  dl_iterate_phdr(
      [](dl_phdr_info* info, size_t, void* data) -> int {
        auto* out = static_cast<std::string*>(data);
        for (int i = 0; i < info->dlpi_phnum; ++i) {
          const auto& ph = info->dlpi_phdr[i];
          if (ph.p_type != PT_NOTE) continue;
          const char* p = reinterpret_cast<const char*>(info->dlpi_addr + ph.p_vaddr);
          const char* end = p + ph.p_memsz;
          while (p + sizeof(ElfW(Nhdr)) <= end) {
            const auto* nh = reinterpret_cast<const ElfW(Nhdr)*>(p);
            const char* name = p + sizeof(ElfW(Nhdr));
            const char* desc = name + ((nh->n_namesz + 3) & ~3U);
            if (nh->n_type == NT_GNU_BUILD_ID && nh->n_namesz == 4 &&
                std::memcmp(name, "GNU", 4) == 0) {
              static const char* hex = "0123456789abcdef";
              for (unsigned j = 0; j < nh->n_descsz; ++j) {
                const auto b = static_cast<unsigned char>(desc[j]);
                *out += hex[b >> 4];
                *out += hex[b & 15];
              }
              return 1;
            }
            p = desc + ((nh->n_descsz + 3) & ~3U);
          }
        }
        return 1;  // only the first object: the main program
      },
      &id);
  if (!id.empty()) return id;
  std::ifstream f("/proc/self/exe", std::ios::binary);
  std::string bytes((std::istreambuf_iterator<char>(f)), std::istreambuf_iterator<char>());
  unsigned char md[SHA256_DIGEST_LENGTH];
  SHA256(reinterpret_cast<const unsigned char*>(bytes.data()), bytes.size(), md);
  static const char* hex = "0123456789abcdef";
  for (unsigned char b : md) {
    id += hex[b >> 4];
    id += hex[b & 15];
  }
  return "sha256:" + id;
}

// MULTIPROC_REDIS_BUILD_ID replaces the computed id (to pin one across rebuilds that are known
// to be the same, and for tests).
const std::string& build_id() {
  static const std::string id = [] {
    const char* v = std::getenv("MULTIPROC_REDIS_BUILD_ID");
    return v && *v ? std::string(v) : compute_build_id();
  }();
  return id;
}

bool in_executable_segment(const void* addr) {
  struct Q {
    uintptr_t a;
    bool found;
  } q{reinterpret_cast<uintptr_t>(addr), false};
  dl_iterate_phdr(
      [](dl_phdr_info* info, size_t, void* data) -> int {
        auto* q = static_cast<Q*>(data);
        for (int i = 0; i < info->dlpi_phnum; ++i) {
          const auto& ph = info->dlpi_phdr[i];
          if (ph.p_type != PT_LOAD || !(ph.p_flags & PF_X)) continue;
          const uintptr_t lo = info->dlpi_addr + ph.p_vaddr;
          if (q->a >= lo && q->a < lo + ph.p_memsz) {
            q->found = true;
            return 1;
          }
        }
        return 0;
      },
      &q);
  return q.found;
}

std::string prefix_of(const std::string& name) {
  return "mp:pool:{" + name + "}:";
}

Logger& log() {
  return get_logger();
}

// Everything goes to stderr as well as the logger: a refused task must be seen even where the
// program never called log_to_stderr().
void say(const std::string& what) {
  log().warning(what);
  std::fprintf(stderr, "%s\n", what.c_str());
}

}  // namespace

std::string sign_task(const std::string& key, const std::string& client, uint64_t task,
                      const std::string& code, const std::string& args) {
  TaskMsg t;
  t.build = build_id();
  t.client = client;
  t.task = task;
  t.code = code;
  t.args = args;
  return seal(key, t);
}

bool register_task_entry(const void* invoker) {
  std::lock_guard lk(entries_mutex());
  entries().insert(invoker);
  return true;
}

// ---- the worker ---------------------------------------------------------------------------------

namespace {

std::atomic<bool> g_worker_stop{false};

void on_sigterm(int) {
  g_worker_stop.store(true);
}

// Runs one task message; returns the result message to push (empty: nothing to answer).
std::string handle_task(const std::string& key, const std::string& worker, const std::string& raw,
                        std::string* client_out) {
  std::string why;
  auto t = open<TaskMsg>(key, raw, kTaskMagic, &why);
  if (!t) {
    say("multiproc: redis worker " + worker + ": dropped a task message: " + why);
    return {};
  }
  *client_out = t->client;
  ResultMsg r;
  r.client = t->client;
  r.task = t->task;
  r.worker = worker;
  auto refuse = [&](const std::string& reason) {
    say("multiproc: redis worker " + worker + ": refused task " + std::to_string(t->task) +
        " of client " + t->client + ": " + reason);
    r.kind = kRefused;
    r.payload = reason;
    return seal(key, r);
  };
  if (t->build != build_id()) {
    return refuse("build mismatch: the task comes from program build " + t->build +
                  ", this worker runs build " + build_id() +
                  " (workers must run the same build of the program as the pool)");
  }
  multiproc::detail::Invoker invoker = nullptr;
  const void* fn = nullptr;
  try {
    auto code = multiproc::detail::load<multiproc::detail::TaskCode>(std::string_view(t->code));
    const void* inv = multiproc::detail::decode_code_address(code.invoker);
    {
      std::lock_guard lk(entries_mutex());
      if (!entries().count(inv))
        return refuse("the task's invoker is not a task entry point of this program");
    }
    invoker = reinterpret_cast<multiproc::detail::Invoker>(const_cast<void*>(inv));
    if (code.has_fn) {
      fn = multiproc::detail::decode_code_address(code.fn);
      if (!in_executable_segment(fn))
        return refuse("the task's function is not in an executable segment of this program");
    }
  } catch (const std::exception& e) {
    return refuse(std::string("the task's code does not resolve here: ") + e.what());
  }
  try {
    invoker(fn, t->args.data(), t->args.data() + t->args.size(), &r.payload);
  } catch (...) {
    r.payload.clear();
    r.payload.push_back(2);
    multiproc::detail::dump(r.payload, multiproc::detail::current_exception_type());
    multiproc::detail::dump(r.payload, multiproc::detail::current_exception_message());
  }
  return seal(key, r);
}

// KEYS: results, proc, tasks. ARGV: result (empty: none), take, the done task's first 32 bytes
// (its signature). Answers the task and takes it out of proc; when take is 1, returns the next
// task, moved into proc from the queue: a busy worker makes one round trip per task instead of two
// (answer, then BLMOVE). Safe to run twice (a reply lost with the connection is retried): the
// task is found by its signature, not popped blindly, and a task still held in proc (moved by a
// try whose reply was lost) is returned again before a new one is taken. An answer sent twice is
// harmless (the client takes the first).
constexpr const char* kFinishScript = R"lua(
if ARGV[1] ~= '' then redis.call('RPUSH', KEYS[1], ARGV[1]) end
for _, v in ipairs(redis.call('LRANGE', KEYS[2], 0, -1)) do
  if string.sub(v, 1, 32) == ARGV[3] then
    redis.call('LREM', KEYS[2], 1, v)
    break
  end
end
if ARGV[2] ~= '1' then return false end
local held = redis.call('LINDEX', KEYS[2], -1)
if held then return held end
return redis.call('LMOVE', KEYS[3], KEYS[2], 'RIGHT', 'LEFT')
)lua";

// KEYS: results, taken. ARGV: max, header, received -> {header, results...}.
// `taken` is the one place where results wait between leaving `results` and the client: a header
// (a number, shorter than any signed message) then the results moved there, by this script (up
// to max at a time) or by the client's blocking move (BLMOVE results taken LEFT RIGHT) that
// appends one. The client says what it holds: the header it last saw and how many results behind
// it it received. Those are dropped, a new header is put, results are taken, and the whole list
// is the answer: what a lost reply carried (a batch, a blocking move) is sent again. A call run
// twice (the reply of the first was lost) finds the header moved on and answers the list as it
// is, taking nothing away. A list without a header was lost with the server's data and made
// again by a blocking move: all of it goes out. The key expires an hour after the last call: a
// client that is gone leaves nothing for ever.
constexpr const char* kTakeResultsScript = R"lua(
local head = redis.call('LINDEX', KEYS[2], 0)
local received = tonumber(ARGV[3])
if head and #head >= 32 then
  redis.call('LPUSH', KEYS[2], ARGV[2])
  head = ARGV[2]
  received = 0
end
if head and head ~= ARGV[2] then
  redis.call('PEXPIRE', KEYS[2], 3600000)
  return redis.call('LRANGE', KEYS[2], 0, -1)
end
redis.call('LTRIM', KEYS[2], received + 1, -1)
redis.call('LPUSH', KEYS[2], tostring(tonumber(ARGV[2]) + 1))
local vs = redis.call('LPOP', KEYS[1], ARGV[1])
if vs then redis.call('RPUSH', KEYS[2], unpack(vs)) end
redis.call('PEXPIRE', KEYS[2], 3600000)
return redis.call('LRANGE', KEYS[2], 0, -1)
)lua";

}  // namespace

}  // namespace detail

namespace detail {
// The worker loop under a given key.
void serve(const std::string& url, const std::string& name, const std::string& key);
}  // namespace detail

void run_worker(const std::string& url, const std::string& name) {
  detail::serve(url, name, process_authkey());
}

namespace detail {

void serve(const std::string& url, const std::string& name, const std::string& key) {
  struct sigaction sa {};
  sa.sa_handler = on_sigterm;
  sigaction(SIGTERM, &sa, nullptr);
  const std::string prefix = prefix_of(name);
  const std::string id = random_id();
  const std::string k_tasks = prefix + "tasks", k_proc = prefix + "proc:" + id,
                    k_hb = prefix + "hb:" + id, k_workers = prefix + "workers";
  Connection conn(parse_url(url), url, 10.0);
  // The heartbeat has a connection and a thread of its own: a long task keeps its worker alive.
  std::atomic<bool> stop_beat{false};
  std::mutex beat_mu;
  std::condition_variable beat_cv;
  auto beat_once = [&](Connection& c) {
    long long ttl = 10000;
    Reply r = c.run({"GET", prefix + "ttl"}, Deadline::never());
    // NOLINTNEXTLINE(cert-err34-c): garbage reads as 0, which the max() clamps
    if (r->type == REDIS_REPLY_STRING) ttl = std::max(100LL, std::atoll(r->str));
    c.run({"SET", k_hb, "1", "PX", std::to_string(ttl)}, Deadline::never());
    // Again each time: a worker taken for dead (and reaped) while only slow comes back.
    c.run({"SADD", k_workers, id}, Deadline::never());
    return ttl;
  };
  beat_once(conn);
  std::thread beat([&] {
    Connection c(parse_url(url), url, 10.0);
    while (!stop_beat.load()) {
      long long ttl = 10000;
      try {
        ttl = beat_once(c);
      } catch (const std::exception& e) {
        say(std::string("multiproc: redis worker: heartbeat failed: ") + e.what());
      }
      std::unique_lock lk(beat_mu);
      beat_cv.wait_for(lk, std::chrono::milliseconds(std::max(20LL, ttl / 4)),
                       [&] { return stop_beat.load(); });
    }
  });
  // The task in our processing list that the last answer's script took (empty: none).
  std::string next;
  // Between tasks the worker holds nothing in its list but what a lost reply left there: a BLMOVE
  // whose answer went with the connection moved a task the worker never got. A reply is lost only
  // with its connection, so the list is looked at after a reconnect (the answer script also
  // returns a task still held before taking a new one).
  uint64_t connects = conn.connects();
  while (!g_worker_stop.load()) {
    std::string task;
    if (!next.empty()) {
      task.swap(next);
    } else {
      Reply r;
      try {
        r = conn.run({"BLMOVE", k_tasks, k_proc, "RIGHT", "LEFT", "0.2"}, Deadline::never(), 0.2);
        if (r->type != REDIS_REPLY_STRING && conn.connects() != connects) {
          connects = conn.connects();
          r = conn.run({"LINDEX", k_proc, "-1"}, Deadline::never());
        }
      } catch (const std::exception& e) {
        say(std::string("multiproc: redis worker: ") + e.what());
        break;
      }
      if (r->type != REDIS_REPLY_STRING) continue;
      task.assign(r->str, r->len);
    }
    std::string client;
    const std::string result = handle_task(key, id, task, &client);
    // A worker told to stop takes no next task; one it took anyway goes back below.
    const bool take = !g_worker_stop.load();
    const std::string_view signature = std::string_view(task).substr(0, 32);
    Reply r;
    try {
      r = conn.run({"EVAL", kFinishScript, "3", prefix + "results:" + client, k_proc, k_tasks,
                    result, take ? "1" : "0", signature},
                   Deadline::never());
    } catch (const std::exception& e) {
      // Unreachable: the task stays in our list, for the reaper once our heartbeat lapses.
      say(std::string("multiproc: redis worker: ") + e.what());
      break;
    }
    if (r->type == REDIS_REPLY_STRING) next.assign(r->str, r->len);
  }
  {
    std::lock_guard lk(beat_mu);
    stop_beat.store(true);
  }
  beat_cv.notify_all();
  beat.join();
  try {
    // What is still ours goes back to the queue: nothing is lost by a worker that stops.
    while (conn.run({"LMOVE", k_proc, k_tasks, "LEFT", "RIGHT"}, Deadline::now(), 0, false)->type ==
           REDIS_REPLY_STRING) {
    }
    conn.run({"DEL", k_hb}, Deadline::now(), 0, false);
    conn.run({"SREM", k_workers, id}, Deadline::now(), 0, false);
  } catch (...) {
    // Unreachable server: the reaper hands our tasks out again once the heartbeat lapses.
  }
}

namespace {

// The pool's key travels as an argument, as Python's Pool gives its workers the authkey.
void local_worker(std::string url, std::string name, std::string key) {
  serve(url, name, key);
}

// `./app --multiproc-worker URL [--processes N] [--pool NAME]`.
int worker_main(int argc, char** argv) {
  std::string url, name = "default";
  unsigned processes = 1;
  for (int i = 1; i < argc; ++i) {
    const std::string a = argv[i];
    const bool has_value = i + 1 < argc;
    if (a == "--multiproc-worker" && has_value) {
      url = argv[++i];
    } else if (a == "--processes" && has_value) {
      // NOLINTNEXTLINE(cert-err34-c): garbage reads as 0, which the max() clamps
      processes = static_cast<unsigned>(std::max(1, std::atoi(argv[++i])));
    } else if (a == "--pool" && has_value) {
      name = argv[++i];
    }
  }
  if (url.empty()) {
    std::fprintf(stderr,
                 "usage: %s --multiproc-worker redis://[user:pass@]host[:port][/db] "
                 "[--processes N] [--pool NAME]\n",
                 argc > 0 ? argv[0] : "app");
    return 2;
  }
  try {
    if (processes == 1) {
      run_worker(url, name);
      return 0;
    }
    std::vector<Process> workers;
    for (unsigned i = 0; i < processes; ++i) {
      workers.emplace_back(local_worker, url, name, process_authkey());
      workers.back().start();
    }
    struct sigaction sa {};
    sa.sa_handler = on_sigterm;
    sigaction(SIGTERM, &sa, nullptr);
    while (!g_worker_stop.load()) {
      bool any = false;
      for (auto& w : workers) any = any || !w.join(std::chrono::milliseconds(200));
      if (!any) break;
    }
    for (auto& w : workers) w.terminate();
    for (auto& w : workers) w.join();
    return 0;
  } catch (const std::exception& e) {
    std::fprintf(stderr, "multiproc: redis worker: %s\n", e.what());
    return 1;
  }
}

[[maybe_unused]] const bool g_hook_set = (multiproc::detail::set_worker_entry(&worker_main), true);

}  // namespace

// ---- the client ---------------------------------------------------------------------------------

struct PoolClient::Impl {
  Impl(std::string u, PoolOptions o)
      : url(std::move(u)),
        options(std::move(o)),
        key(options.authkey ? *options.authkey : process_authkey()),
        prefix(prefix_of(options.name)),
        client(random_id()),
        k_tasks(prefix + "tasks"),
        k_results(prefix + "results:" + client),
        k_taken(prefix + "taken:" + client),
        k_workers(prefix + "workers"),
        send(parse_url(url), url, options.unreachable_timeout.count()),
        recv(parse_url(url), url, options.unreachable_timeout.count()) {}

  std::string url;
  PoolOptions options;
  // Results are read by moving them into k_taken, where they stay until the client says it
  // received them: a read whose reply was lost with the connection is answered again.
  std::string key, prefix, client, k_tasks, k_results, k_taken, k_workers;
  std::mutex send_mu;  // send: the sender thread's, and workers()'s
  Connection send;
  Connection recv;  // the result thread's
  std::mutex mu;
  std::condition_variable idle_cv;
  uint64_t next_task = 1;
  struct Pending {
    std::shared_ptr<ChunkSink> sink;
    uint32_t chunk;
  };
  std::unordered_map<uint64_t, Pending> pending;  // submitted (sent or not) and not answered
  // Tasks submitted and not yet handed to the sender thread, in submission order.
  struct Outgoing {
    uint64_t task;
    std::shared_ptr<const std::string> code;
    std::string args;
  };
  std::vector<Outgoing> outbox;
  std::condition_variable send_cv;  // outbox filled, or stopping (the sender's only)
  std::condition_variable stop_cv;  // stopping (the result thread's backoff)
  bool closed = false, stopping = false;
  std::mutex local_mu;  // local, replaced from the result thread
  std::vector<Process> local;
  Context ctx = get_context();
  std::thread results, sender;

  // The sender thread: takes whatever has accumulated in the outbox, signs it and pushes it with
  // one multi-argument LPUSH (batches of up to 1000). Idle, it sleeps until a submission wakes it;
  // busy, submissions pile up behind the round trip in flight and go together in the next one.
  void send_loop() {
    std::vector<Outgoing> batch;
    std::vector<std::string> msgs;
    for (;;) {
      {
        std::unique_lock lk(mu);
        send_cv.wait(lk, [&] { return !outbox.empty() || stopping; });
        if (stopping) return;  // terminate(): fail_all() answers what was not sent
        batch.swap(outbox);
      }
      msgs.clear();
      msgs.reserve(batch.size());
      TaskMsg t;
      t.build = build_id();
      t.client = client;
      for (auto& o : batch) {
        t.task = o.task;
        t.code = *o.code;
        t.args = std::move(o.args);
        msgs.push_back(seal(key, t));
      }
      size_t sent = 0;
      std::exception_ptr error;
      try {
        sent = push(msgs);
      } catch (...) {
        error = std::current_exception();
      }
      if (sent < batch.size()) fail_unsent(batch, sent, error);
      batch.clear();
    }
  }

  // Pushes msgs in order; returns how many went (all, unless the pool stops meanwhile). A lost
  // connection is retried with backoff (through the connection's reconnect) for
  // unreachable_timeout, then the rest fail with ConnectionError. One try per round, and waits
  // that terminate() cuts short: the pool never waits on a server that is down.
  size_t push(const std::vector<std::string>& msgs) {
    const auto give_up =
        Clock::now() + std::chrono::duration_cast<Clock::duration>(options.unreachable_timeout);
    auto backoff = std::chrono::milliseconds(5);
    std::vector<std::string_view> argv;
    size_t done = 0;
    while (done < msgs.size()) {
      const size_t n = std::min<size_t>(msgs.size() - done, 1000);
      argv.assign({"LPUSH", k_tasks});
      for (size_t i = done; i < done + n; ++i) argv.push_back(msgs[i]);
      try {
        std::lock_guard lk(send_mu);
        send.run(argv, Deadline::never(), 0, false);
        done += n;
        backoff = std::chrono::milliseconds(5);
        continue;
      } catch (const ConnectionError&) {
        if (Clock::now() >= give_up) throw;
      }
      std::unique_lock lk(mu);
      if (send_cv.wait_for(lk, backoff, [&] { return stopping; })) return done;
      backoff = std::min(backoff * 2, std::chrono::milliseconds(500));
    }
    return done;
  }

  // The tasks of batch from `sent` on were not sent: their results fail with a clear error (none
  // when the pool is stopping: terminate() fails them).
  void fail_unsent(const std::vector<Outgoing>& batch, size_t sent, std::exception_ptr error) {
    if (!error) return;
    std::string why;
    try {
      std::rethrow_exception(error);
    } catch (const std::exception& e) {
      why = e.what();
    }
    const std::string msg = "redis::Pool: the task could not be sent to the server: " + why;
    std::exception_ptr e;
    try {
      std::rethrow_exception(error);
    } catch (const ConnectionError&) {
      e = std::make_exception_ptr(ConnectionError(msg));
    } catch (const AuthenticationError&) {
      e = std::make_exception_ptr(AuthenticationError(msg));
    } catch (...) {
      e = std::make_exception_ptr(ProcessError(msg));
    }
    std::vector<Pending> failed;
    {
      std::lock_guard lk(mu);
      for (size_t i = sent; i < batch.size(); ++i) {
        auto it = pending.find(batch[i].task);
        if (it == pending.end()) continue;
        failed.push_back(std::move(it->second));
        pending.erase(it);
      }
    }
    say("multiproc: redis::Pool: " + std::to_string(batch.size() - sent) +
        " task(s) not sent: " + why);
    for (auto& p : failed) p.sink->chunk_failed(p.chunk, e);
    idle_cv.notify_all();
  }

  // A local worker that died (killed inside a task) is replaced, as the core Pool does.
  void replace_dead_workers() {
    std::lock_guard lk(local_mu);
    for (auto& w : local) {
      if (w.is_alive()) continue;
      {
        std::lock_guard lk2(mu);
        if (stopping || closed) return;
      }
      log().info("redis::Pool: local worker " + std::to_string(w.pid()) + " exited; replacing it");
      w.join();
      Process fresh(ctx, local_worker, url, options.name, key);
      fresh.daemon(true);
      fresh.start();
      w = std::move(fresh);
    }
  }

  void give_up(const std::string& why) {
    {
      std::lock_guard lk(mu);
      closed = true;
    }
    fail_all(std::make_exception_ptr(BrokenPool(why)));
  }

  void result_loop() {
    auto last_reap = std::chrono::steady_clock::now();
    auto last_take = last_reap;
    // What the client holds of k_taken (kTakeResultsScript): the header it last saw, and how many
    // results behind it it received since.
    std::string header = "0";
    size_t received = 0;
    // The next read is a call of kTakeResultsScript, not the blocking move: the first one (it
    // puts the header the moves append behind), one after a call that failed or a reconnect (a
    // lost reply's results wait in k_taken; a move appended behind them would be counted as
    // theirs), and one a reap round asks for when many results were received or a minute passed
    // (k_taken trimmed to what was not received, its expiry renewed).
    bool take_call = true;
    uint64_t connects = recv.connects();
    // Since when the server has not answered (the epoch: it answers).
    Clock::time_point down_since{};
    auto backoff = std::chrono::milliseconds(5);
    while (true) {
      size_t waiting = 0;
      {
        std::lock_guard lk(mu);
        if (stopping) return;
        waiting = pending.size();
      }
      if (recv.connects() != connects) {
        connects = recv.connects();
        take_call = true;
      }
      Reply r;
      bool batch = false;
      try {
        // One try per call, and the backoff below waits on stop_cv: terminate() never waits for
        // a server that is down (a retrying call would hold it for unreachable_timeout).
        // Results that have piled up come in one round trip; only an empty list is waited on.
        // With one task or none in flight no batch can be there: straight to the wait (a round
        // trip less on the way of an apply().get()).
        if (waiting > 1 || take_call) {
          r = recv.run({"EVAL", kTakeResultsScript, "2", k_results, k_taken, "512", header,
                        std::to_string(received)},
                       Deadline::never(), 0, false);
          if (r->type != REDIS_REPLY_ARRAY || r->elements == 0 ||
              r->element[0]->type != REDIS_REPLY_STRING)
            throw ProcessError("multiproc: redis: unexpected answer to the results script");
          header.assign(r->element[0]->str, r->element[0]->len);
          received = r->elements - 1;
          take_call = false;
          last_take = Clock::now();
          batch = received > 0;
        }
        if (!batch) {
          // A blocking move, not a pop: a result whose reply is lost stays in k_taken.
          r = recv.run({"BLMOVE", k_results, k_taken, "LEFT", "RIGHT", "0.1"}, Deadline::never(),
                       0.1, false);
          if (r->type == REDIS_REPLY_STRING) ++received;
        }
        down_since = {};
        backoff = std::chrono::milliseconds(5);
      } catch (const ConnectionError& e) {
        take_call = true;
        const auto now = Clock::now();
        if (down_since == Clock::time_point{}) down_since = now;
        if (now - down_since < options.unreachable_timeout) {
          std::unique_lock lk(mu);
          stop_cv.wait_for(lk, backoff, [&] { return stopping; });
          backoff = std::min(backoff * 2, std::chrono::milliseconds(500));
          continue;
        }
        // Unreachable past unreachable_timeout: nothing would answer later submissions either.
        give_up(std::string("redis::Pool: ") + e.what() + " (results: down for " +
                seconds(now - down_since) + " s)");
        return;
      } catch (const std::exception& e) {
        give_up(std::string("redis::Pool: ") + e.what());
        return;
      }
      // A result read twice (sent again after a lost reply) finds its task answered: ignored.
      if (batch) {
        for (size_t i = 1; i < r->elements; ++i)
          dispatch(std::string(r->element[i]->str, r->element[i]->len));
      } else if (r->type == REDIS_REPLY_STRING) {
        dispatch(std::string(r->str, r->len));
      }
      const auto now = std::chrono::steady_clock::now();
      if (now - last_reap > std::chrono::milliseconds(200)) {
        last_reap = now;
        // Rarely: a round trip more on the way of a result, and one that a result can take
        // instead of the blocking move (the list stays short either way: a busy client calls the
        // script on every read).
        if (received >= 64 || now - last_take > std::chrono::minutes(1)) take_call = true;
        try {
          replace_dead_workers();
          reap();
        } catch (const std::exception& e) {
          say(std::string("multiproc: redis::Pool: reaping failed: ") + e.what());
        }
      }
    }
  }

  void dispatch(const std::string& raw) {
    std::string why;
    auto m = open<ResultMsg>(key, raw, kResultMagic, &why);
    if (!m) {
      say("multiproc: redis::Pool: dropped a result message: " + why);
      return;
    }
    Pending p;
    {
      std::lock_guard lk(mu);
      auto it = pending.find(m->task);
      if (it == pending.end()) return;  // answered twice (a task run again): the first one counts
      p = std::move(it->second);
      pending.erase(it);
    }
    if (m->kind == kResult) {
      p.sink->chunk_done(p.chunk, m->payload.data(), m->payload.size());
    } else if (m->kind == kLost) {
      p.sink->chunk_failed(p.chunk, std::make_exception_ptr(WorkerLost(0, 0, m->payload)));
    } else {
      p.sink->chunk_failed(
          p.chunk, std::make_exception_ptr(ProcessError("redis::Pool: worker " + m->worker +
                                                        " refused the task: " + m->payload)));
    }
    idle_cv.notify_all();
  }

  // Workers whose heartbeat lapsed: their tasks go back to the head of the queue, or, past
  // max_retries, are answered WorkerLost. RENAME takes a dead worker's list atomically, so two
  // reapers never hand one task out twice.
  void reap() {
    // The probes are tried once (terminate() must not wait for a server that is down); what
    // changes the server, once begun, retries.
    Reply members = recv.run({"SMEMBERS", k_workers}, Deadline::never(), 0, false);
    for (size_t i = 0; i < members->elements; ++i) {
      const std::string id(members->element[i]->str, members->element[i]->len);
      if (integer(recv.run({"EXISTS", prefix + "hb:" + id}, Deadline::never(), 0, false)) == 1)
        continue;
      // Named by worker and client: a RENAME whose reply was lost (the server went away), or a
      // round cut short, leaves the list here, and the next try finds it instead of "no such key".
      const std::string taken = prefix + "reaping:" + id + ":" + client;
      if (integer(recv.run({"EXISTS", taken}, Deadline::never(), 0, false)) == 0) {
        try {
          recv.run({"RENAME", prefix + "proc:" + id, taken}, Deadline::never());
        } catch (const ProcessError&) {
          if (integer(recv.run({"EXISTS", taken}, Deadline::never())) == 0) {
            recv.run({"SREM", k_workers, id}, Deadline::never());  // nothing left in flight
            continue;
          }
        }
      }
      Reply items = recv.run({"LRANGE", taken, "0", "-1"}, Deadline::never());
      for (size_t j = 0; j < items->elements; ++j) {
        const std::string raw(items->element[j]->str, items->element[j]->len);
        std::string why;
        auto t = open<TaskMsg>(key, raw, kTaskMagic, &why);
        if (!t) {
          say("multiproc: redis::Pool: dropped a task of lost worker " + id + ": " + why);
          continue;
        }
        if (t->attempt + 1 > options.max_retries) {
          ResultMsg r;
          r.client = t->client;
          r.task = t->task;
          r.kind = kLost;
          r.worker = id;
          r.payload = "redis::Pool: the worker " + id + " running the task was lost (no " +
                      "heartbeat) " + std::to_string(t->attempt + 1) +
                      " times; max_retries = " + std::to_string(options.max_retries);
          recv.run({"LPUSH", prefix + "results:" + t->client, seal(key, r)}, Deadline::never());
        } else {
          ++t->attempt;
          say("multiproc: redis::Pool: worker " + id + " lost; task " + std::to_string(t->task) +
              " runs again (retry " + std::to_string(t->attempt) + ")");
          recv.run({"RPUSH", k_tasks, seal(key, *t)}, Deadline::never());
        }
      }
      recv.run({"DEL", taken}, Deadline::never());
      recv.run({"SREM", k_workers, id}, Deadline::never());
    }
  }

  void fail_all(std::exception_ptr e) {
    std::unordered_map<uint64_t, Pending> left;
    {
      std::lock_guard lk(mu);
      left.swap(pending);
    }
    for (auto& [id, p] : left) p.sink->chunk_failed(p.chunk, e);
    idle_cv.notify_all();
  }

  void stop_threads() {
    {
      std::lock_guard lk(mu);
      stopping = true;
    }
    send_cv.notify_all();
    stop_cv.notify_all();
    if (sender.joinable()) sender.join();
    if (results.joinable()) results.join();
  }
};

PoolClient::PoolClient(std::string url, PoolOptions options)
    : impl_(std::make_unique<Impl>(std::move(url), std::move(options))) {
  auto& m = *impl_;
  const auto ttl_ms =
      static_cast<long long>(std::max(0.1, m.options.worker_timeout.count()) * 1000);
  m.send.run({"SET", m.prefix + "ttl", std::to_string(ttl_ms)}, Deadline::never());
  if (m.options.context) m.ctx = *m.options.context;
  for (unsigned i = 0; i < m.options.processes; ++i) {
    m.local.emplace_back(m.ctx, local_worker, m.url, m.options.name, m.key);
    m.local.back().daemon(true);
    m.local.back().start();
  }
  m.results = std::thread([&m] { m.result_loop(); });
  m.sender = std::thread([&m] { m.send_loop(); });
}

PoolClient::~PoolClient() {
  try {
    terminate();
  } catch (...) {
  }
}

void PoolClient::submit(const std::string& code, std::vector<std::string> chunks,
                        uint32_t first_chunk, std::shared_ptr<ChunkSink> sink) {
  auto& m = *impl_;
  auto shared_code = std::make_shared<const std::string>(code);
  {
    std::lock_guard lk(m.mu);
    if (m.closed) throw ProcessError("redis::Pool: the pool is closed (close() or terminate())");
    for (size_t i = 0; i < chunks.size(); ++i) {
      const uint64_t task = m.next_task++;
      m.pending.emplace(task, Impl::Pending{sink, static_cast<uint32_t>(first_chunk + i)});
      m.outbox.push_back({task, shared_code, std::move(chunks[i])});
    }
  }
  m.send_cv.notify_one();
}

unsigned PoolClient::workers() {
  auto& m = *impl_;
  std::lock_guard lk(m.send_mu);
  const long long n = integer(m.send.run({"SCARD", m.k_workers}, Deadline::never()));
  return static_cast<unsigned>(std::max<long long>({n, 1, m.options.processes}));
}

void PoolClient::close() {
  std::lock_guard lk(impl_->mu);
  impl_->closed = true;
}

void PoolClient::join() {
  auto& m = *impl_;
  {
    std::unique_lock lk(m.mu);
    if (!m.closed) throw ProcessError("redis::Pool::join(): call close() or terminate() first");
    m.idle_cv.wait(lk, [&] { return m.pending.empty() || m.stopping; });
  }
  std::lock_guard lk(m.local_mu);
  for (auto& w : m.local) w.terminate();  // SIGTERM: a worker finishes its task, then leaves
  for (auto& w : m.local) w.join();
  m.local.clear();
}

void PoolClient::terminate() {
  auto& m = *impl_;
  {
    std::lock_guard lk(m.mu);
    m.closed = true;
  }
  m.stop_threads();
  {
    std::lock_guard lk(m.local_mu);
    for (auto& w : m.local) w.kill();
    for (auto& w : m.local) w.join();
    m.local.clear();
  }
  m.fail_all(std::make_exception_ptr(BrokenPool("redis::Pool: terminated")));
}

unsigned PoolClient::processes() const {
  return impl_->options.processes;
}

std::vector<pid_t> PoolClient::worker_pids() const {
  std::lock_guard lk(impl_->local_mu);
  std::vector<pid_t> out;
  for (auto& w : impl_->local) out.push_back(w.pid());
  return out;
}

}  // namespace detail
}  // namespace multiproc::redis
