// multiproc::redis::Pool's untyped side: the signed messages, the client's result thread and
// reaper, and the worker loop (also run by `./app --multiproc-worker URL`, through init()'s hook).
//
// Keys, for a pool named N: "mp:pool:{N}:tasks" (clients push on the left, workers BLMOVE from
// the right into their "proc:<worker>" list), "hb:<worker>" (a key with a TTL the worker renews),
// "workers" (the set of worker ids), "ttl" (the heartbeat TTL in ms the pools ask for; it expires
// client_timeout after the last client's renewal), "reaping:<worker>" (a dead worker's tasks while
// reapers hand them out) and, per client, "results:<client>", "taken:<client>" and
// "client:<client>" (its liveness key). A client's keys expire client_timeout after its last
// renewal and are deleted when it ends; a worker drops, unrun, a task whose client's liveness key
// is gone (kTakeLua).
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
#include <bit>
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

// For tests of a client killed in the middle of a reap: MULTIPROC_REDIS_TEST_REAP_PAUSE=PATH makes
// the reaper, once it holds a dead worker's tasks, create PATH and stop there until killed.
// Read at each call (only a reap that found tasks makes one): a forked child sets it for itself.
void reap_pause_hook() {
  const char* path = std::getenv("MULTIPROC_REDIS_TEST_REAP_PAUSE");
  if (!path || !*path) return;
  std::fclose(std::fopen(path, "w"));
  for (;;) pause();
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

// A client's result list lives as long as the client's liveness key ("client:<client>", which the
// client renews and deletes when it ends): whoever creates the list (pushes onto an empty one)
// gives it the key's remaining time, which the client's renewals then extend; a push onto a list
// that exists costs nothing more. A result for a client whose key is gone (it ended, or was killed
// or cut off for client_timeout) is dropped: nobody would read it.
constexpr const char* kPushResultLua = R"lua(
local function push_result(cmd, results, alive, msg)
  if redis.call(cmd, results, msg) ~= 1 then return end
  local t = redis.call('PTTL', alive)
  if t > 0 then
    redis.call('PEXPIRE', results, t)
  else
    redis.call('DEL', results)
  end
end
)lua";

// How a worker takes its next task (take(proc, tasks, prefix, little)): the task it still holds in
// proc (moved there by a call whose reply was lost), else the next one of the queue, moved into
// proc. A task whose client is gone (its liveness key "client:<client>" deleted by terminate() or
// the destructor, or lapsed client_timeout after its last renewal) is dropped there, not run, as
// Python's Pool.terminate() leaves the tasks not yet started: the check is made in the script
// that hands the task over, so no task of a client is handed over once its key is gone, at no round
// trip more. The client is read from the message as TaskMsg lays it out (cereal's binary form): a
// 32-byte signature, magic (4 bytes), then build and client, each a 64-bit length in the worker's
// byte order (`little`) and its bytes. A message of another shape is the worker's to judge (it
// drops what is not signed). At most 1000 tasks are dropped per call (the server is held for no
// long time): then the answer is none, and the worker asks again.
constexpr const char* kTakeLua = R"lua(
local function client_of(msg, little)
  local function length_at(i)
    if #msg < i + 7 then return nil end
    local n = 0
    for k = 0, 7 do n = n * 256 + string.byte(msg, little and i + 7 - k or i + k) end
    return n
  end
  local b = length_at(37)
  if not b or b > #msg then return nil end
  local c = length_at(45 + b)
  if not c or 52 + b + c > #msg then return nil end
  return string.sub(msg, 53 + b, 52 + b + c)
end
local function take(proc, tasks, prefix, little)
  for _ = 1, 1000 do
    local v = redis.call('LINDEX', proc, -1) or redis.call('LMOVE', tasks, proc, 'RIGHT', 'LEFT')
    if not v then return false end
    local client = client_of(v, little)
    if not client or redis.call('EXISTS', prefix .. 'client:' .. client) == 1 then return v end
    redis.call('RPOP', proc)
  end
  return false
end
)lua";

// KEYS: results, proc, tasks, the client's liveness key. ARGV: result (empty: none), take, the
// done task's first 32 bytes (its signature), the pool's key prefix, the worker's byte order ('l':
// little-endian). Answers the task and takes it out of proc; when take is 1, returns the next task
// (kTakeLua): a busy worker makes one round trip per task instead of two (answer, then take).
// Safe to run twice (a reply lost with the connection is retried): the task is found by its
// signature, not popped blindly, and a task still held in proc (moved by a try whose reply was
// lost) is returned again before a new one is taken. An answer sent twice is harmless (the client
// takes the first).
const LuaScript& finish_script() {
  static const LuaScript s(std::string(kPushResultLua) + kTakeLua + R"lua(
if ARGV[1] ~= '' then push_result('RPUSH', KEYS[1], KEYS[4], ARGV[1]) end
for _, v in ipairs(redis.call('LRANGE', KEYS[2], 0, -1)) do
  if string.sub(v, 1, 32) == ARGV[3] then
    redis.call('LREM', KEYS[2], 1, v)
    break
  end
end
if ARGV[2] ~= '1' then return false end
return take(KEYS[2], KEYS[3], ARGV[4], ARGV[5] == 'l')
)lua");
  return s;
}

// KEYS: proc, tasks. ARGV: the pool's key prefix, the worker's byte order. Sent in one write behind
// the idle worker's blocking move (tasks -> proc): what the move took is checked as any task taken
// (kTakeLua) before the worker sees it, and a task left in proc by a lost reply is found again.
const LuaScript& held_script() {
  static const LuaScript s(std::string(kTakeLua) + R"lua(
return take(KEYS[1], KEYS[2], ARGV[1], ARGV[2] == 'l')
)lua");
  return s;
}

// The byte order of the lengths in a task message, for kTakeLua.
constexpr const char* kByteOrder = std::endian::native == std::endian::little ? "l" : "b";

// KEYS: the client's liveness key, results, taken, the pool's heartbeat TTL key. ARGV: expiry ms,
// heartbeat TTL ms. The client's periodic renewal; the TTL key (shared by the pool's clients) is
// set where missing and otherwise only lengthened, so it goes after the last client.
const LuaScript& renew_script() {
  static const LuaScript s(R"lua(
redis.call('SET', KEYS[1], '1', 'PX', ARGV[1])
redis.call('PEXPIRE', KEYS[2], ARGV[1])
redis.call('PEXPIRE', KEYS[3], ARGV[1])
local t = redis.call('PTTL', KEYS[4])
if t == -2 then
  redis.call('SET', KEYS[4], ARGV[2], 'PX', ARGV[1])
elseif t >= 0 and t < tonumber(ARGV[1]) then
  redis.call('PEXPIRE', KEYS[4], ARGV[1])
end
)lua");
  return s;
}

// KEYS: proc, reaping (both of one dead worker). Moves the worker's tasks behind those a reaper
// may have left in "reaping:<worker>" (killed in the middle of its round): appended, never
// overwritten, and run twice (a lost reply) it moves nothing more. -> tasks waiting there.
const LuaScript& reap_take_script() {
  static const LuaScript s(R"lua(
while redis.call('LMOVE', KEYS[1], KEYS[2], 'RIGHT', 'LEFT') do end
return redis.call('LLEN', KEYS[2])
)lua");
  return s;
}

// KEYS: reaping, tasks, results, the client's liveness key (for a WorkerLost answer). ARGV: the
// task the reaper read last in reaping, what becomes of it ('task': run again, 'result': answered,
// 'drop'), the new message. Only if that task is still the last one (no other reaper took it
// meanwhile) is it replaced: each task is handed out by one reaper once, and one that a killed
// reaper held stays in reaping for the next. -> 1 if it was this call's.
const LuaScript& reap_one_script() {
  static const LuaScript s(std::string(kPushResultLua) + R"lua(
if redis.call('LINDEX', KEYS[1], -1) ~= ARGV[1] then return 0 end
redis.call('RPOP', KEYS[1])
if ARGV[2] == 'task' then
  redis.call('RPUSH', KEYS[2], ARGV[3])
elseif ARGV[2] == 'result' then
  push_result('LPUSH', KEYS[3], KEYS[4], ARGV[3])
end
return 1
)lua");
  return s;
}

// KEYS: results, taken. ARGV: max, header, received, expiry ms -> {header, results...}.
// `taken` is the one place where results wait between leaving `results` and the client: a header
// (a number, shorter than any signed message) then the results moved there, by this script (up
// to max at a time) or by the client's blocking move (BLMOVE results taken LEFT RIGHT) that
// appends one. The client says what it holds: the header it last saw and how many results behind
// it it received. Those are dropped, a new header is put, results are taken, and the whole list
// is the answer: what a lost reply carried (a batch, a blocking move) is sent again. A call run
// twice (the reply of the first was lost) finds the header moved on and answers the list as it
// is, taking nothing away. A list without a header was lost with the server's data and made
// again by a blocking move: all of it goes out. ARGV[4]: the client's key expiry (ms), renewed
// here and by the client's renewal: a client that is gone leaves nothing for ever.
const LuaScript& take_results_script() {
  static const LuaScript s(R"lua(
local head = redis.call('LINDEX', KEYS[2], 0)
local received = tonumber(ARGV[3])
if head and #head >= 32 then
  redis.call('LPUSH', KEYS[2], ARGV[2])
  head = ARGV[2]
  received = 0
end
if head and head ~= ARGV[2] then
  redis.call('PEXPIRE', KEYS[2], ARGV[4])
  return redis.call('LRANGE', KEYS[2], 0, -1)
end
redis.call('LTRIM', KEYS[2], received + 1, -1)
redis.call('LPUSH', KEYS[2], tostring(tonumber(ARGV[2]) + 1))
local vs = redis.call('LPOP', KEYS[1], ARGV[1])
if vs then redis.call('RPUSH', KEYS[2], unpack(vs)) end
redis.call('PEXPIRE', KEYS[2], ARGV[4])
return redis.call('LRANGE', KEYS[2], 0, -1)
)lua");
  return s;
}

}  // namespace

}  // namespace detail

namespace detail {
// The worker loop under a given key and worker id; throws ConnectionError when the server stays
// unreachable for unreachable_s.
void serve(const std::string& url, const std::string& name, const std::string& key,
           const std::string& id, double unreachable_s);
}  // namespace detail

void run_worker(const std::string& url, const std::string& name,
                std::chrono::duration<double> unreachable_timeout) {
  detail::serve(url, name, process_authkey(), detail::random_id(), unreachable_timeout.count());
}

namespace detail {

void serve(const std::string& url, const std::string& name, const std::string& key,
           const std::string& id, double unreachable_s) {
  struct sigaction sa {};
  sa.sa_handler = on_sigterm;
  sigaction(SIGTERM, &sa, nullptr);
  const std::string prefix = prefix_of(name);
  const std::string k_tasks = prefix + "tasks", k_proc = prefix + "proc:" + id,
                    k_hb = prefix + "hb:" + id, k_workers = prefix + "workers";
  Connection conn(parse_url(url), url, unreachable_s);
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
  // A worker that cannot reach the server says so and ends with an error (exit status 1).
  auto give_up = [&](const std::string& what) {
    const std::string why = "multiproc: redis worker " + id + ": giving up (unreachable_timeout " +
                            seconds(std::chrono::duration_cast<Clock::duration>(
                                std::chrono::duration<double>(unreachable_s))) +
                            " s): " + what;
    say(why);
    throw ConnectionError(why);
  };
  try {
    beat_once(conn);
  } catch (const ConnectionError& e) {
    give_up(e.what());
  }
  std::thread beat([&] {
    Connection c(parse_url(url), url, unreachable_s);
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
  std::string gave_up;  // why the loop ended, when the server stayed unreachable
  while (!g_worker_stop.load()) {
    std::string task;
    if (!next.empty()) {
      task.swap(next);
    } else {
      Reply r;
      try {
        // Idle: the blocking move, and behind it in the same write the script that checks what it
        // moved (held_script(): a task of a client gone is dropped, one that a lost reply left in
        // our list is returned).
        const std::string_view move[] = {"BLMOVE", k_tasks, k_proc, "RIGHT", "LEFT", "0.2"};
        r = conn.eval(held_script(), {k_proc, k_tasks}, {prefix, kByteOrder}, Deadline::never(),
                      0.2, true, move);
      } catch (const std::exception& e) {
        gave_up = e.what();
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
      r = conn.eval(finish_script(),
                    {prefix + "results:" + client, k_proc, k_tasks, prefix + "client:" + client},
                    {result, take ? "1" : "0", signature, prefix, kByteOrder}, Deadline::never());
    } catch (const std::exception& e) {
      // Unreachable: the task stays in our list, for the reaper once our heartbeat lapses.
      gave_up = e.what();
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
  if (!gave_up.empty()) give_up(gave_up);
}

namespace {

// The pool's key travels as an argument, as Python's Pool gives its workers the authkey.
void local_worker(std::string url, std::string name, std::string key, std::string id,
                  double unreachable_s) {
  serve(url, name, key, id, unreachable_s);
}

// `./app --multiproc-worker URL [--processes N] [--pool NAME] [--unreachable-timeout S]`. Exit
// status 0 when stopped by SIGTERM, 1 when a worker gave up (the server unreachable for S seconds,
// 10 by default) or failed, 2 for a bad command line.
int worker_main(int argc, char** argv) {
  std::string url, name = "default";
  unsigned processes = 1;
  double unreachable_s = 10.0;
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
    } else if (a == "--unreachable-timeout" && has_value) {
      // NOLINTNEXTLINE(cert-err34-c): garbage reads as 0, which the max() clamps
      unreachable_s = std::max(0.05, std::atof(argv[++i]));
    }
  }
  if (url.empty()) {
    std::fprintf(stderr,
                 "usage: %s --multiproc-worker redis://[user:pass@]host[:port][/db] "
                 "[--processes N] [--pool NAME] [--unreachable-timeout SECONDS]\n",
                 argc > 0 ? argv[0] : "app");
    return 2;
  }
  try {
    if (processes == 1) {
      run_worker(url, name, std::chrono::duration<double>(unreachable_s));
      return 0;
    }
    std::vector<Process> workers;
    for (unsigned i = 0; i < processes; ++i) {
      workers.emplace_back(local_worker, url, name, process_authkey(), random_id(), unreachable_s);
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
    // Every worker ended on its own (none was told to stop): each gave up or failed.
    const bool failed = !g_worker_stop.load();
    for (auto& w : workers) w.terminate();
    for (auto& w : workers) w.join();
    return failed ? 1 : 0;
  } catch (const ConnectionError&) {
    return 1;  // the worker has said why
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
        k_alive(prefix + "client:" + client),
        keep_ms(std::to_string(
            static_cast<long long>(std::max(0.05, options.client_timeout.count()) * 1000))),
        send(parse_url(url), url, options.unreachable_timeout.count()),
        recv(parse_url(url), url, options.unreachable_timeout.count()) {}

  std::string url;
  PoolOptions options;
  // Results are read by moving them into k_taken, where they stay until the client says it
  // received them: a read whose reply was lost with the connection is answered again.
  std::string key, prefix, client, k_tasks, k_results, k_taken, k_workers;
  // The client's liveness key: while it exists, the client's lists get its expiry (a client killed
  // or cut off leaves nothing behind for longer than client_timeout).
  std::string k_alive;
  std::string keep_ms;  // client_timeout in ms
  std::mutex send_mu;   // send: the sender thread's, and workers()'s
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
  std::exception_ptr broken;               // why the result thread gave up (give_up())
  std::vector<std::weak_ptr<Feed>> feeds;  // the imaps' (add_feed())
  std::mutex local_mu;                     // local and local_ids, replaced from the result thread
  std::vector<Process> local;
  // The local workers' ids (given by the pool, so that it can clean up after the ones it kills).
  std::vector<std::string> local_ids;
  unsigned local_started = 0;
  // The result thread's last call failed to reach the server: terminate() then leaves the server
  // alone (its keys expire).
  std::atomic<bool> server_down{false};
  Context ctx = get_context();
  std::thread results, sender;

  // The sender thread: takes whatever has accumulated in the outbox, signs it and pushes it with
  // one multi-argument LPUSH (batches of up to 1000). Idle, it sleeps until a submission wakes it;
  // busy, submissions pile up behind the round trip in flight and go together in the next one.
  //
  // It also renews the client's keys, four times per client_timeout: the sender, not the result
  // thread, because the result thread runs the user's callbacks, which may take long.
  void send_loop() {
    std::vector<Outgoing> batch;
    std::vector<std::string> msgs;
    const auto renew_every = std::chrono::duration_cast<Clock::duration>(
        std::max(std::chrono::duration<double>(0.01), options.client_timeout / 4));
    auto next_renewal = Clock::now() + renew_every;
    for (;;) {
      {
        std::unique_lock lk(mu);
        send_cv.wait_until(lk, next_renewal, [&] { return !outbox.empty() || stopping; });
        if (stopping) return;  // terminate(): fail_all() answers what was not sent
        batch.swap(outbox);
      }
      if (Clock::now() >= next_renewal) {
        renew(false);
        next_renewal = Clock::now() + renew_every;
      }
      if (batch.empty()) continue;
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

  // The client's keys get client_timeout again (one try: a server that is down is retried at the
  // next renewal; the constructor's call retries).
  void renew(bool retry) {
    try {
      std::lock_guard lk(send_mu);
      send.eval(renew_script(), {k_alive, k_results, k_taken, prefix + "ttl"},
                {keep_ms, worker_ttl_ms()}, Deadline::never(), 0, retry);
    } catch (const std::exception&) {
      if (retry) throw;
    }
  }
  std::string worker_ttl_ms() const {
    return std::to_string(
        static_cast<long long>(std::max(0.1, options.worker_timeout.count()) * 1000));
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
      const size_t i = static_cast<size_t>(&w - local.data());
      w = start_local(local_ids[i]);
    }
  }

  // A local worker under a new id (in `id`); local_mu held, or before the threads start.
  Process start_local(std::string& id) {
    id = client + "-w" + std::to_string(local_started++);
    Process p(ctx, local_worker, url, options.name, key, id, options.unreachable_timeout.count());
    p.daemon(true);
    p.start();
    return p;
  }

  void give_up(const std::string& why) {
    auto e = std::make_exception_ptr(BrokenPool(why));
    {
      std::lock_guard lk(mu);
      closed = true;
      broken = e;
    }
    fail_all(e);
  }

  void result_loop() {
    auto last_reap = std::chrono::steady_clock::now();
    auto last_take = last_reap;
    // What the client holds of k_taken (take_results_script()): the header it last saw, and how
    // many results behind it it received since.
    std::string header = "0";
    size_t received = 0;
    // The next read is a call of take_results_script(), not the blocking move: the first one (it
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
          r = recv.eval(take_results_script(), {k_results, k_taken},
                        {"512", header, std::to_string(received), keep_ms}, Deadline::never(), 0,
                        false);
          if (r->type != REDIS_REPLY_ARRAY || r->elements == 0 ||
              r->element[0]->type != REDIS_REPLY_STRING)
            throw ProcessError("multiproc: redis: unexpected answer to the results script");
          header.assign(r->element[0]->str, r->element[0]->len);
          received = r->elements - 1;
          take_call = false;
          // A connection made for this call (the first one, or after a failure) is the one it
          // recovers from: not one more call.
          connects = recv.connects();
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
        server_down.store(false, std::memory_order_relaxed);
      } catch (const ConnectionError& e) {
        server_down.store(true, std::memory_order_relaxed);
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
  // max_retries, are answered WorkerLost.
  void reap() {
    // The probes are tried once (terminate() must not wait for a server that is down); what
    // changes the server, once begun, retries.
    Reply members = recv.run({"SMEMBERS", k_workers}, Deadline::never(), 0, false);
    for (size_t i = 0; i < members->elements; ++i) {
      const std::string id(members->element[i]->str, members->element[i]->len);
      if (integer(recv.run({"EXISTS", prefix + "hb:" + id}, Deadline::never(), 0, false)) == 1)
        continue;
      reap_worker(id, {}, true);
    }
  }

  // Hands out again the tasks of the worker `id` (dead, or killed by this pool), except those of
  // client `skip` (this pool's own, when it ends). The worker's list is first moved into
  // "reaping:<id>", named by the worker alone: a reaper killed in the middle of its round leaves
  // the rest there, where the next reaper of the pool (any client's) finds it. Each task is then
  // replaced, the last first, only if it is still there (reap_one_script()): reapers at work
  // together never hand one task out twice.
  void reap_worker(const std::string& id, const std::string& skip, bool retry) {
    const std::string reaping = prefix + "reaping:" + id;
    if (integer(recv.eval(reap_take_script(), {prefix + "proc:" + id, reaping}, {},
                          Deadline::never(), 0, retry)) > 0)
      reap_pause_hook();
    for (;;) {
      Reply last = recv.run({"LINDEX", reaping, "-1"}, Deadline::never(), 0, retry);
      if (last->type != REDIS_REPLY_STRING) break;
      const std::string raw(last->str, last->len);
      std::string what = "drop", msg, for_client = client, why;
      auto t = open<TaskMsg>(key, raw, kTaskMagic, &why);
      if (!t) {
        say("multiproc: redis::Pool: dropped a task of lost worker " + id + ": " + why);
      } else if (!skip.empty() && t->client == skip) {
        // This pool's own task, and the pool is ending: nobody waits for it.
      } else if (t->attempt + 1 > options.max_retries) {
        ResultMsg r;
        r.client = for_client = t->client;
        r.task = t->task;
        r.kind = kLost;
        r.worker = id;
        r.payload = "redis::Pool: the worker " + id + " running the task was lost (no " +
                    "heartbeat) " + std::to_string(t->attempt + 1) +
                    " times; max_retries = " + std::to_string(options.max_retries);
        what = "result";
        msg = seal(key, r);
      } else {
        ++t->attempt;
        what = "task";
        msg = seal(key, *t);
      }
      const long long mine = integer(recv.eval(
          reap_one_script(),
          {reaping, k_tasks, prefix + "results:" + for_client, prefix + "client:" + for_client},
          {raw, what, msg}, Deadline::never(), 0, retry));
      if (mine == 1 && what == "task")
        say("multiproc: redis::Pool: worker " + id + " lost; task " + std::to_string(t->task) +
            " runs again (retry " + std::to_string(t->attempt) + ")");
    }
    recv.run({"SREM", k_workers, id}, Deadline::never(), 0, retry);
  }

  // The client's own keys go with it (its result lists and liveness key; the shared heartbeat TTL
  // key expires after the last client). One try each: a server that is down is not waited for,
  // and the keys expire anyway.
  void forget() {
    if (server_down.load(std::memory_order_relaxed)) return;
    try {
      recv.run({"DEL", k_results, k_taken, k_alive}, Deadline::never(), 0, false);
    } catch (const std::exception&) {
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
  const std::string ttl_ms = m.worker_ttl_ms();
  m.send.run({"SET", m.prefix + "ttl", ttl_ms, "PX", m.keep_ms}, Deadline::never());
  m.renew(true);
  if (m.options.context) m.ctx = *m.options.context;
  m.local_ids.resize(m.options.processes);
  for (unsigned i = 0; i < m.options.processes; ++i)
    m.local.push_back(m.start_local(m.local_ids[i]));
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
                        uint32_t first_chunk, std::shared_ptr<ChunkSink> sink, bool feed) {
  auto& m = *impl_;
  auto shared_code = std::make_shared<const std::string>(code);
  {
    std::lock_guard lk(m.mu);
    // An imap's feed goes on after close(), not once nothing would answer it.
    if (feed && m.broken) std::rethrow_exception(m.broken);
    if (feed && m.stopping) throw BrokenPool("redis::Pool: terminated");
    if (m.closed && !feed)
      throw ProcessError("redis::Pool: the pool is closed (close() or terminate())");
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

void PoolClient::add_feed(std::weak_ptr<Feed> feed) {
  auto& m = *impl_;
  std::lock_guard lk(m.mu);
  if (m.closed) throw ProcessError("redis::Pool: the pool is closed (close() or terminate())");
  std::erase_if(m.feeds, [](const std::weak_ptr<Feed>& f) { return f.expired(); });
  m.feeds.push_back(std::move(feed));
}

void PoolClient::feed_ended() {
  auto& m = *impl_;
  { std::lock_guard lk(m.mu); }  // a join() between its check and its wait sees the change
  m.idle_cv.notify_all();
}

void PoolClient::close() {
  auto& m = *impl_;
  std::vector<std::shared_ptr<Feed>> feeding;
  {
    std::lock_guard lk(m.mu);
    m.closed = true;
    for (auto& f : m.feeds)
      if (auto p = f.lock()) feeding.push_back(std::move(p));
  }
  // Outside mu: a feed reads its input and submits (mu) from here.
  for (auto& f : feeding) f->pool_closed();
}

void PoolClient::join() {
  auto& m = *impl_;
  {
    std::unique_lock lk(m.mu);
    if (!m.closed) throw ProcessError("redis::Pool::join(): call close() or terminate() first");
    // An imap still reading its input submits more: its calls are waited for too.
    auto feeding = [&] {
      return std::any_of(m.feeds.begin(), m.feeds.end(), [](const std::weak_ptr<Feed>& f) {
        auto p = f.lock();
        return p && p->feeding();
      });
    };
    m.idle_cv.wait(lk, [&] { return (m.pending.empty() && !feeding()) || m.stopping; });
  }
  {
    std::lock_guard lk(m.local_mu);
    for (auto& w : m.local) w.terminate();  // SIGTERM: a worker finishes its task, then leaves
    for (auto& w : m.local) w.join();
    m.local.clear();
    m.local_ids.clear();
  }
  // Nothing is pending and nothing can be submitted: the pool's keys can go.
  m.stop_threads();
  m.forget();
}

void PoolClient::terminate() {
  auto& m = *impl_;
  {
    std::lock_guard lk(m.mu);
    m.closed = true;
  }
  m.stop_threads();
  // The liveness key goes first (the sender, which renews it, has stopped): from here no worker
  // is handed a task of this pool (kTakeLua), those queued are dropped, not run.
  m.forget();
  {
    std::lock_guard lk(m.local_mu);
    for (auto& w : m.local) w.kill();
    for (auto& w : m.local) w.join();
    // What the killed workers held: other clients' tasks go back to the queue, this pool's are
    // dropped; then the workers' keys.
    for (const auto& id : m.local_ids) {
      if (m.server_down.load(std::memory_order_relaxed)) break;
      try {
        m.reap_worker(id, m.client, false);
        m.recv.run({"DEL", m.prefix + "hb:" + id}, Deadline::never(), 0, false);
      } catch (const std::exception&) {
        break;  // the heartbeats lapse, and other clients' reapers do the rest
      }
    }
    m.local.clear();
    m.local_ids.clear();
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
