// multiproc::redis::detail::QueueCore: a queue of byte strings kept in Redis lists, through
// hiredis' synchronous API. Every operation that reads and writes more than one key is a Lua
// script (atomic on the server: maxsize checks, the shutdown flag, the reaper); only the blocking
// waits are plain BLMOVE/BRPOP, which a script cannot do.
//
// Reliable mode: BLMOVE into a per-consumer processing list, plus a heartbeat key with a TTL per
// consumer and a reaper run by every getter. Chosen over a stream consumer group (XREADGROUP +
// XAUTOCLAIM) because the plain queue already is a list: both modes share one list, qsize() stays
// LLEN, maxsize stays one atomic LLEN check, FIFO order is kept and items of a dead consumer go
// back to the head; a stream would keep acknowledged entries until trimmed, need a second
// structure for maxsize and its XAUTOCLAIM idle time would count a slow but live consumer as dead
// with no way for it to say otherwise (here any call on the handle renews its heartbeat).
#include <sys/time.h>
#include <unistd.h>

#include <hiredis/hiredis.h>

#include <algorithm>
#include <cerrno>
#include <charconv>
#include <chrono>
#include <cstdio>
#include <random>
#include <string>
#include <string_view>
#include <thread>
#include <vector>

#include <multiproc/redis.hpp>

namespace multiproc::redis::detail {

namespace {

using Clock = std::chrono::steady_clock;
using multiproc::detail::Deadline;

// ---- scripts
// -------------------------------------------------------------------------------------

// KEYS: items, shutdown flag, unfinished. ARGV: maxsize, joinable, items... -> count put, -1 if
// shut down. Puts as many as there is room for; the caller waits for room for the rest.
constexpr const char* kPutScript = R"lua(
if redis.call('EXISTS', KEYS[2]) == 1 then return -1 end
local n = #ARGV - 2
local max = tonumber(ARGV[1])
if max > 0 then
  local room = max - redis.call('LLEN', KEYS[1])
  if room <= 0 then return 0 end
  if room < n then n = room end
end
local i = 3
while i <= n + 2 do
  local j = math.min(i + 999, n + 2)
  redis.call('LPUSH', KEYS[1], unpack(ARGV, i, j))
  i = j + 1
end
if ARGV[2] == '1' then redis.call('INCRBY', KEYS[3], n) end
return n
)lua";

// KEYS: items, shutdown flag, proc, hb, consumers. ARGV: max, reliable, known unacked, ttl ms,
// consumer id, reap, key prefix. -> {status, processing list length, items...}; status 1: shut
// down (and drained).
// Keys of other consumers are derived from the prefix: they share the {name} hash tag, so a
// cluster keeps them in one slot.
constexpr const char* kTakeScript = R"lua(
local reliable = ARGV[2] == '1'
if reliable then
  redis.call('SET', KEYS[4], '1', 'PX', ARGV[4])
  redis.call('SADD', KEYS[5], ARGV[5])
  -- Items the server moved here whose reply never reached us (lost connection) go back first.
  local known = tonumber(ARGV[3])
  while redis.call('LLEN', KEYS[3]) > known do
    redis.call('LMOVE', KEYS[3], KEYS[1], 'LEFT', 'RIGHT')
  end
end
if ARGV[6] == '1' then
  for _, id in ipairs(redis.call('SMEMBERS', KEYS[5])) do
    if redis.call('EXISTS', ARGV[7] .. 'hb:' .. id) == 0 then
      local p = ARGV[7] .. 'proc:' .. id
      while redis.call('LMOVE', p, KEYS[1], 'LEFT', 'RIGHT') do end
      redis.call('SREM', KEYS[5], id)
    end
  end
end
local flag = redis.call('GET', KEYS[2])
-- out[2]: what is left in our processing list (less than we know of when the reaper took our
-- items back, after we made no call for the heartbeat's time).
local out = {0, reliable and redis.call('LLEN', KEYS[3]) or 0}
if flag == '2' then out[1] = 1 return out end
local max = tonumber(ARGV[1])
if reliable then
  for i = 1, max do
    local v = redis.call('LMOVE', KEYS[1], KEYS[3], 'RIGHT', 'LEFT')
    if not v then break end
    out[#out + 1] = v
  end
else
  local vs = redis.call('RPOP', KEYS[1], max)
  if vs then for _, v in ipairs(vs) do out[#out + 1] = v end end
end
if #out == 2 and flag then out[1] = 1 end
return out
)lua";

// KEYS: shutdown flag, items, unfinished. ARGV: immediate. Immediate drops the items and counts
// them done, so join() returns (Python's Queue.shutdown(immediate=True)).
constexpr const char* kShutdownScript = R"lua(
if ARGV[1] == '1' then
  redis.call('SET', KEYS[1], '2')
  local n = redis.call('LLEN', KEYS[2])
  redis.call('DEL', KEYS[2])
  local u = tonumber(redis.call('GET', KEYS[3]) or '0')
  if u > 0 then redis.call('SET', KEYS[3], math.max(0, u - n)) end
elseif redis.call('GET', KEYS[1]) ~= '2' then
  redis.call('SET', KEYS[1], '1')
end
return 0
)lua";

// KEYS: unfinished, proc. ARGV: ack. -> unfinished left, -1 when task_done() was one too many.
constexpr const char* kTaskDoneScript = R"lua(
if ARGV[1] == '1' then redis.call('RPOP', KEYS[2]) end
local u = tonumber(redis.call('GET', KEYS[1]) or '0')
if u <= 0 then return -1 end
return redis.call('DECR', KEYS[1])
)lua";

// KEYS: proc, items, hb, consumers. ARGV: id. A consumer going away gives back what it did not ack.
constexpr const char* kReleaseScript = R"lua(
while redis.call('LMOVE', KEYS[1], KEYS[2], 'LEFT', 'RIGHT') do end
redis.call('DEL', KEYS[3])
redis.call('SREM', KEYS[4], ARGV[1])
return 0
)lua";

// KEYS: items, flag, unfinished, consumers. ARGV: prefix.
constexpr const char* kUnlinkScript = R"lua(
for _, id in ipairs(redis.call('SMEMBERS', KEYS[4])) do
  redis.call('DEL', ARGV[1] .. 'proc:' .. id, ARGV[1] .. 'hb:' .. id)
end
redis.call('DEL', KEYS[1], KEYS[2], KEYS[3], KEYS[4])
return 0
)lua";

enum Script { kPut, kTake, kShutdown, kTaskDone, kRelease, kUnlink, kScriptCount };
constexpr const char* kScripts[kScriptCount] = {kPutScript,      kTakeScript,    kShutdownScript,
                                                kTaskDoneScript, kReleaseScript, kUnlinkScript};

// ---- connection
// ----------------------------------------------------------------------------------

struct ReplyDeleter {
  void operator()(redisReply* r) const {
    if (r) freeReplyObject(r);
  }
};
using Reply = std::unique_ptr<redisReply, ReplyDeleter>;

timeval to_timeval(double seconds) {
  seconds = std::max(seconds, 0.001);
  timeval tv;
  tv.tv_sec = static_cast<time_t>(seconds);
  tv.tv_usec = static_cast<suseconds_t>((seconds - static_cast<double>(tv.tv_sec)) * 1e6);
  return tv;
}

std::string seconds(Clock::duration d) {
  char buf[32];
  std::snprintf(buf, sizeof buf, "%.1f", std::chrono::duration<double>(d).count());
  return buf;
}

bool starts_with(std::string_view s, std::string_view prefix) {
  return s.substr(0, prefix.size()) == prefix;
}

// Errors that a server says while it starts, loads its append-only file or runs a long script:
// wait and try again, as for a lost connection.
bool transient_error(std::string_view e) {
  return starts_with(e, "LOADING") || starts_with(e, "BUSY") || starts_with(e, "TRYAGAIN") ||
         starts_with(e, "MASTERDOWN");
}

bool auth_error(std::string_view e) {
  return starts_with(e, "NOAUTH") || starts_with(e, "WRONGPASS") || starts_with(e, "NOPERM") ||
         e.find("invalid password") != std::string_view::npos;
}

class Connection {
 public:
  Connection(Url url, std::string url_text, double unreachable_s)
      : url_(std::move(url)), url_text_(std::move(url_text)), unreachable_s_(unreachable_s) {}
  ~Connection() { drop(); }
  Connection(const Connection&) = delete;
  Connection& operator=(const Connection&) = delete;

  // Runs one command, reconnecting with backoff on a lost connection until the larger of the
  // deadline and unreachable_s from now (only one try when retry is false). block_s: how long the
  // server may hold the reply (a blocking command).
  Reply run(const std::vector<std::string_view>& argv, const Deadline& deadline, double block_s = 0,
            bool retry = true) {
    const auto start = Clock::now();
    auto give_up = start + std::chrono::duration_cast<Clock::duration>(
                               std::chrono::duration<double>(unreachable_s_));
    if (deadline.at && *deadline.at > give_up) give_up = *deadline.at;
    std::string last_error;
    auto backoff = std::chrono::milliseconds(5);
    int noscript = 0;
    for (;;) {
      if (ctx_ && pid_ != getpid()) drop();  // a forked child's copy: the parent's socket
      if (!ctx_) {
        const double left = std::chrono::duration<double>(give_up - Clock::now()).count();
        connect(std::clamp(left, 0.05, 2.0), last_error);
      }
      if (ctx_) {
        // Two setsockopt calls: only when a blocking wait needs another limit than the last.
        if (block_s != timeout_block_s_) {
          redisSetTimeout(ctx_, to_timeval(block_s + 10.0));
          timeout_block_s_ = block_s;
        }
        std::vector<const char*> ptrs;
        std::vector<size_t> lens;
        for (auto a : argv) {
          ptrs.push_back(a.data());
          lens.push_back(a.size());
        }
        Reply reply(static_cast<redisReply*>(
            redisCommandArgv(ctx_, static_cast<int>(argv.size()), ptrs.data(), lens.data())));
        if (!reply) {
          last_error = ctx_->errstr;
          drop();
        } else if (reply->type != REDIS_REPLY_ERROR) {
          return reply;
        } else {
          std::string e(reply->str, reply->len);
          if (starts_with(e, "NOSCRIPT") && noscript++ < 3) {
            load_scripts(last_error);  // the server restarted without its script cache
            continue;
          }
          if (auth_error(e)) throw AuthenticationError(auth_message(e));
          if (!transient_error(e))
            throw ProcessError("multiproc: redis: " + std::string(argv[0]) + " failed: " + e);
          last_error = e;
        }
      }
      const auto now = Clock::now();
      if (!retry || now >= give_up) {
        throw ConnectionError(
            "multiproc: redis: cannot reach the server at " + url_.host + ":" +
            std::to_string(url_.port) + " (" + last_error + "), tried for " + seconds(now - start) +
            " s; is it running? (a call gives up after the larger of its timeout and "
            "redis::Options::unreachable_timeout)");
      }
      std::this_thread::sleep_for(std::min<Clock::duration>(backoff, give_up - now));
      backoff = std::min(backoff * 2, std::chrono::milliseconds(500));
    }
  }

  const std::string& sha(Script s) const { return shas_[s]; }

 private:
  void drop() {
    // A forked child's copy still frees its own memory and its own descriptor copy; the parent's
    // connection is untouched (hiredis sends nothing on close).
    if (ctx_) redisFree(ctx_);
    ctx_ = nullptr;
  }

  std::string auth_message(const std::string& e) const {
    return "multiproc: redis: the server at " + url_.host + ":" + std::to_string(url_.port) +
           " refused the credentials" +
           (url_.user.empty() ? std::string() : " of user '" + url_.user + "'") +
           (url_.password.empty() ? " (the URL gives no password: redis://:password@host:port)"
                                  : " given in the URL") +
           ": " + e;
  }

  // Leaves ctx_ null (and last_error set) when the server cannot be reached or is not ready;
  // throws when it refuses us for good (credentials, a database that does not exist).
  void connect(double timeout_s, std::string& last_error) {
    redisContext* c = redisConnectWithTimeout(url_.host.c_str(), url_.port, to_timeval(timeout_s));
    if (!c) {
      last_error = "cannot allocate a connection";
      return;
    }
    if (c->err) {
      last_error = c->errstr;
      redisFree(c);
      return;
    }
    redisEnableKeepAlive(c);
    redisSetTimeout(c, to_timeval(10.0));
    timeout_block_s_ = 0;
    ctx_ = c;
    pid_ = getpid();
    std::vector<std::string_view> auth;
    if (!url_.password.empty() || !url_.user.empty()) {
      auth.push_back("AUTH");
      if (!url_.user.empty()) auth.push_back(url_.user);
      auth.push_back(url_.password);
    }
    std::string db = std::to_string(url_.db);
    const std::vector<std::vector<std::string_view>> setup = {auth, {"SELECT", db}};
    for (const auto& cmd : setup) {
      if (cmd.empty() || (cmd[0] == "SELECT" && url_.db == 0)) continue;
      if (!setup_command(cmd, last_error)) return;
    }
    load_scripts(last_error);
  }

  bool setup_command(const std::vector<std::string_view>& cmd, std::string& last_error) {
    std::vector<const char*> ptrs;
    std::vector<size_t> lens;
    for (auto a : cmd) {
      ptrs.push_back(a.data());
      lens.push_back(a.size());
    }
    Reply r(static_cast<redisReply*>(
        redisCommandArgv(ctx_, static_cast<int>(cmd.size()), ptrs.data(), lens.data())));
    if (!r) {
      last_error = ctx_->errstr;
      drop();
      return false;
    }
    if (r->type != REDIS_REPLY_ERROR) return true;
    std::string e(r->str, r->len);
    if (transient_error(e)) {
      last_error = e;
      drop();
      return false;
    }
    drop();
    if (auth_error(e)) throw AuthenticationError(auth_message(e));
    throw ProcessError("multiproc: redis: " + std::string(cmd[0]) + " failed on " + url_text_ +
                       ": " + e);
  }

  void load_scripts(std::string& last_error) {
    for (int s = 0; s < kScriptCount; ++s) {
      if (!ctx_) return;
      Reply r(static_cast<redisReply*>(redisCommand(ctx_, "SCRIPT LOAD %s", kScripts[s])));
      if (!r) {
        last_error = ctx_->errstr;
        drop();
        return;
      }
      if (r->type == REDIS_REPLY_STRING) {
        shas_[s].assign(r->str, r->len);
        continue;
      }
      std::string e = r->type == REDIS_REPLY_ERROR ? std::string(r->str, r->len) : "bad reply";
      drop();
      if (transient_error(e)) {
        last_error = e;
        return;
      }
      if (auth_error(e)) throw AuthenticationError(auth_message(e));
      throw ProcessError("multiproc: redis: SCRIPT LOAD failed on " + url_.host + ": " + e);
    }
  }

  Url url_;
  std::string url_text_;
  double unreachable_s_;
  redisContext* ctx_ = nullptr;
  double timeout_block_s_ = 0;  // the socket's timeout is this + 10 s
  pid_t pid_ = 0;
  std::string shas_[kScriptCount];
};

int hexval(char c) {
  if (c >= '0' && c <= '9') return c - '0';
  if (c >= 'a' && c <= 'f') return c - 'a' + 10;
  if (c >= 'A' && c <= 'F') return c - 'A' + 10;
  return -1;
}

std::string percent_decode(std::string_view s, const std::string& url) {
  std::string out;
  for (size_t i = 0; i < s.size(); ++i) {
    if (s[i] != '%') {
      out += s[i];
      continue;
    }
    if (i + 2 >= s.size() + 0 || hexval(s[i + 1]) < 0 || hexval(s[i + 2]) < 0)
      throw ProcessError("multiproc: redis URL '" + url + "': a bad %-escape in the credentials");
    out += static_cast<char>(hexval(s[i + 1]) * 16 + hexval(s[i + 2]));
    i += 2;
  }
  return out;
}

int parse_number(std::string_view s, int lo, int hi, const char* what, const std::string& url) {
  int v = 0;
  auto [end, ec] = std::from_chars(s.data(), s.data() + s.size(), v);
  if (s.empty() || ec != std::errc() || end != s.data() + s.size() || v < lo || v > hi) {
    throw ProcessError("multiproc: redis URL '" + url + "': " + what + " '" + std::string(s) +
                       "' is not a number from " + std::to_string(lo) + " to " +
                       std::to_string(hi));
  }
  return v;
}

std::string random_id() {
  char host[64] = {};
  gethostname(host, sizeof host - 1);
  std::random_device rd;
  char buf[32];
  std::snprintf(buf, sizeof buf, "%08x%08x", rd(), rd());
  return std::string(host) + "-" + std::to_string(getpid()) + "-" + buf;
}

long long integer(const Reply& r) {
  if (r->type != REDIS_REPLY_INTEGER) throw ProcessError("multiproc: redis: unexpected reply");
  return r->integer;
}

}  // namespace

Url parse_url(const std::string& url) {
  constexpr std::string_view kScheme = "redis://";
  std::string_view s(url);
  if (!starts_with(s, kScheme)) {
    throw ProcessError("multiproc: redis URL '" + url +
                       "': must start with redis:// (redis://[user:password@]host[:port][/db])");
  }
  s.remove_prefix(kScheme.size());
  if (s.find_first_of("?#") != std::string_view::npos)
    throw ProcessError("multiproc: redis URL '" + url + "': query and fragment are not supported");
  Url u;
  const auto slash = s.find('/');
  std::string_view authority = s.substr(0, slash);
  if (slash != std::string_view::npos) {
    std::string_view db = s.substr(slash + 1);
    if (!db.empty()) u.db = parse_number(db, 0, 1 << 20, "database", url);
  }
  const auto at = authority.rfind('@');
  if (at != std::string_view::npos) {
    std::string_view cred = authority.substr(0, at);
    authority.remove_prefix(at + 1);
    const auto colon = cred.find(':');
    if (colon == std::string_view::npos) {
      // redis://password@host is how some clients write a password alone.
      u.password = percent_decode(cred, url);
    } else {
      u.user = percent_decode(cred.substr(0, colon), url);
      u.password = percent_decode(cred.substr(colon + 1), url);
    }
  }
  std::string_view host = authority, port;
  if (starts_with(authority, "[")) {  // [::1]:6379
    const auto close = authority.find(']');
    if (close == std::string_view::npos)
      throw ProcessError("multiproc: redis URL '" + url + "': unclosed '[' in the host");
    host = authority.substr(1, close - 1);
    std::string_view rest = authority.substr(close + 1);
    if (!rest.empty()) {
      if (rest[0] != ':')
        throw ProcessError("multiproc: redis URL '" + url + "': junk after the host");
      port = rest.substr(1);
      if (port.empty()) throw ProcessError("multiproc: redis URL '" + url + "': empty port");
    }
  } else if (const auto colon = authority.rfind(':'); colon != std::string_view::npos) {
    host = authority.substr(0, colon);
    port = authority.substr(colon + 1);
    if (port.empty()) throw ProcessError("multiproc: redis URL '" + url + "': empty port");
  }
  if (host.empty()) throw ProcessError("multiproc: redis URL '" + url + "': no host");
  u.host = std::string(host);
  if (!port.empty()) u.port = parse_number(port, 1, 65535, "port", url);
  return u;
}

struct QueueCore::Impl {
  Impl(std::string url_text, std::string queue_name, size_t max, Options opts, bool join)
      : url(std::move(url_text)),
        name(std::move(queue_name)),
        maxsize(max),
        options(opts),
        joinable(join),
        conn(parse_url(url), url, opts.unreachable_timeout.count()),
        prefix("mp:{" + name + "}:"),
        k_items(prefix + "items"),
        k_flag(prefix + "shutdown"),
        k_unfinished(prefix + "unfinished"),
        k_consumers(prefix + "consumers") {
    if (name.empty()) throw ProcessError("multiproc: redis::Queue: the name is empty");
  }

  // A process that did not make this handle (a forked child with a copy) is another consumer.
  void own_consumer() {
    if (consumer_pid == getpid()) return;
    consumer_pid = getpid();
    consumer = random_id();
    k_proc = prefix + "proc:" + consumer;
    k_hb = prefix + "hb:" + consumer;
    unacked = 0;
  }

  Reply eval(Script s, std::vector<std::string_view> keys, std::vector<std::string_view> args,
             const Deadline& deadline, bool retry = true) {
    std::vector<std::string_view> argv;
    argv.reserve(3 + keys.size() + args.size());
    std::string nkeys = std::to_string(keys.size());
    argv.push_back("EVALSHA");
    argv.push_back(conn.sha(s));
    argv.push_back(nkeys);
    argv.insert(argv.end(), keys.begin(), keys.end());
    argv.insert(argv.end(), args.begin(), args.end());
    // The sha is empty until a connection has loaded the scripts.
    for (;;) {
      const std::string sha = conn.sha(s);
      argv[1] = sha;
      if (!sha.empty()) return conn.run(argv, deadline, 0, retry);
      conn.run({"PING"}, deadline, 0, retry);  // connects, and loads the scripts
    }
  }

  std::string url, name;
  size_t maxsize;
  Options options;
  bool joinable;
  Connection conn;
  std::string prefix, k_items, k_flag, k_unfinished, k_consumers, k_proc, k_hb, consumer;
  pid_t consumer_pid = 0;
  size_t unacked = 0;
  bool closed = false;
  Clock::time_point last_reap{};
};

QueueCore::QueueCore(std::string url, std::string name, size_t maxsize, Options options,
                     bool joinable)
    : impl_(std::make_unique<Impl>(std::move(url), std::move(name), maxsize, options, joinable)) {
  if (!multiproc::detail::loading_handles()) {
    // Fail here, not at the first put, on bad credentials or an unreachable server.
    impl_->conn.run({"PING"}, Deadline::never());
  }
}

QueueCore::~QueueCore() {
  auto& m = *impl_;
  if (m.consumer.empty() || m.consumer_pid != getpid()) return;
  try {
    m.eval(kRelease, {m.k_proc, m.k_items, m.k_hb, m.k_consumers}, {m.consumer}, Deadline::now(),
           false);
  } catch (...) {
    // The server is gone: the reaper of a live consumer returns the items once the heartbeat ends.
  }
}

size_t QueueCore::put(const std::vector<std::string>& items, const Deadline& deadline) {
  auto& m = *impl_;
  if (m.closed) throw QueueClosed("multiproc: redis::Queue '" + m.name + "': put() after close()");
  const std::string max = std::to_string(m.maxsize);
  size_t done = 0;
  auto backoff = std::chrono::microseconds(500);
  while (done < items.size()) {
    const size_t chunk = std::min<size_t>(items.size() - done, 10000);
    std::vector<std::string_view> args{max, m.joinable ? "1" : "0"};
    for (size_t i = done; i < done + chunk; ++i) args.push_back(items[i]);
    const long long n =
        integer(m.eval(kPut, {m.k_items, m.k_flag, m.k_unfinished}, args, deadline));
    if (n < 0) throw QueueClosed("multiproc: redis::Queue '" + m.name + "' is shut down");
    done += static_cast<size_t>(n);
    if (n > 0) {
      backoff = std::chrono::microseconds(500);
      continue;
    }
    // Full: getters do not signal room, so wait a little and look again (up to 20 ms).
    if (deadline.expired()) break;
    auto pause = std::chrono::duration_cast<Clock::duration>(backoff);
    if (deadline.at) pause = std::min(pause, *deadline.at - Clock::now());
    std::this_thread::sleep_for(pause);
    backoff = std::min(backoff * 2, std::chrono::microseconds(20000));
  }
  return done;
}

std::vector<std::string> QueueCore::get(size_t max_items, const Deadline& deadline) {
  auto& m = *impl_;
  const bool reliable = m.options.reliable;
  if (reliable) m.own_consumer();
  const double ttl = std::max(m.options.heartbeat_ttl.count(), 0.01);
  const std::string ttl_ms = std::to_string(static_cast<long long>(ttl * 1000));
  const std::string max = std::to_string(max_items);
  // A blocked getter looks at the shutdown flag, renews its heartbeat and reaps this often.
  const double slice = std::min(0.2, ttl / 4);
  std::vector<std::string> out;
  auto take = [&](const std::string& count) {
    const auto now = Clock::now();
    const bool reap = now - m.last_reap >= std::chrono::milliseconds(500);
    if (reap) m.last_reap = now;
    const std::string known = std::to_string(m.unacked);
    Reply r =
        m.eval(kTake, {m.k_items, m.k_flag, reliable ? m.k_proc : m.k_items, m.k_hb, m.k_consumers},
               {count, reliable ? "1" : "0", known, ttl_ms, m.consumer, reap ? "1" : "0", m.prefix},
               deadline);
    if (r->type != REDIS_REPLY_ARRAY || r->elements < 2)
      throw ProcessError("multiproc: redis: unexpected reply to a get");
    for (size_t i = 2; i < r->elements; ++i)
      out.emplace_back(r->element[i]->str, r->element[i]->len);
    if (reliable) m.unacked = static_cast<size_t>(r->element[1]->integer) + (r->elements - 2);
    return r->element[0]->integer;
  };
  for (;;) {
    const long long status = take(max);
    if (!out.empty()) return out;
    if (status == 1) throw QueueClosed("multiproc: redis::Queue '" + m.name + "' is shut down");
    if (deadline.expired()) return out;
    double block = slice;
    if (deadline.at)
      block = std::min(block, std::chrono::duration<double>(*deadline.at - Clock::now()).count());
    block = std::max(block, 0.01);  // 0 would block forever
    char secs[32];
    std::snprintf(secs, sizeof secs, "%.3f", block);
    Reply r = reliable ? m.conn.run({"BLMOVE", m.k_items, m.k_proc, "RIGHT", "LEFT", secs},
                                    deadline, block)
                       : m.conn.run({"BRPOP", m.k_items, secs}, deadline, block);
    if (r->type == REDIS_REPLY_STRING) {
      out.emplace_back(r->str, r->len);
      ++m.unacked;
    } else if (r->type == REDIS_REPLY_ARRAY && r->elements == 2) {
      out.emplace_back(r->element[1]->str, r->element[1]->len);
    }
    if (!out.empty()) {
      if (max_items > 1) take(std::to_string(max_items - 1));
      return out;
    }
  }
}

size_t QueueCore::qsize() {
  auto& m = *impl_;
  return static_cast<size_t>(integer(m.conn.run({"LLEN", m.k_items}, Deadline::never())));
}

size_t QueueCore::maxsize() const {
  return impl_->maxsize;
}
void QueueCore::close() {
  impl_->closed = true;
}
bool QueueCore::closed() const {
  return impl_->closed;
}

void QueueCore::shutdown(bool immediate) {
  auto& m = *impl_;
  m.eval(kShutdown, {m.k_flag, m.k_items, m.k_unfinished}, {immediate ? "1" : "0"},
         Deadline::never());
}

bool QueueCore::is_shutdown() {
  auto& m = *impl_;
  return integer(m.conn.run({"EXISTS", m.k_flag}, Deadline::never())) == 1;
}

void QueueCore::ack(size_t n) {
  auto& m = *impl_;
  if (!m.options.reliable)
    throw ProcessError("multiproc: redis::Queue::ack() is for a queue made with reliable = true");
  m.own_consumer();
  if (n > m.unacked) {
    throw ProcessError("multiproc: redis::Queue '" + m.name + "': ack(" + std::to_string(n) +
                       ") with only " + std::to_string(m.unacked) + " items taken and not acked");
  }
  if (n == 0) return;
  m.conn.run({"RPOP", m.k_proc, std::to_string(n)}, Deadline::never());
  m.unacked -= n;
}

size_t QueueCore::unacked() const {
  return impl_->unacked;
}

void QueueCore::heartbeat() {
  auto& m = *impl_;
  if (!m.options.reliable) return;
  m.own_consumer();
  const double ttl = std::max(m.options.heartbeat_ttl.count(), 0.01);
  m.conn.run({"SET", m.k_hb, "1", "PX", std::to_string(static_cast<long long>(ttl * 1000))},
             Deadline::never());
  m.conn.run({"SADD", m.k_consumers, m.consumer}, Deadline::never());
}

void QueueCore::task_done() {
  auto& m = *impl_;
  bool ack = false;
  if (m.options.reliable) {
    m.own_consumer();
    ack = m.unacked > 0;
  }
  const long long left =
      integer(m.eval(kTaskDone, {m.k_unfinished, ack ? m.k_proc : m.k_unfinished},
                     {ack ? "1" : "0"}, Deadline::never()));
  if (ack) --m.unacked;
  if (left < 0) throw ProcessError("multiproc: task_done() called too many times");
}

bool QueueCore::join(const Deadline& deadline) {
  auto& m = *impl_;
  auto backoff = std::chrono::microseconds(500);
  for (;;) {
    Reply r = m.conn.run({"GET", m.k_unfinished}, deadline);
    long long left = 0;
    if (r->type == REDIS_REPLY_STRING) std::from_chars(r->str, r->str + r->len, left);
    if (left <= 0) return true;
    if (deadline.expired()) return false;
    auto pause = std::chrono::duration_cast<Clock::duration>(backoff);
    if (deadline.at) pause = std::min(pause, *deadline.at - Clock::now());
    std::this_thread::sleep_for(pause);
    backoff = std::min(backoff * 2, std::chrono::microseconds(20000));
  }
}

void QueueCore::unlink() {
  auto& m = *impl_;
  m.eval(kUnlink, {m.k_items, m.k_flag, m.k_unfinished, m.k_consumers}, {m.prefix},
         Deadline::never());
}

const std::string& QueueCore::url() const {
  return impl_->url;
}
const std::string& QueueCore::name() const {
  return impl_->name;
}
const Options& QueueCore::options() const {
  return impl_->options;
}

}  // namespace multiproc::redis::detail
