// Internal to multiproc::redis: the scripts and the reconnecting hiredis connection shared by
// queue.cpp and pool.cpp (not installed).
#pragma once

#include <sys/time.h>
#include <unistd.h>

#include <hiredis/hiredis.h>
#include <openssl/evp.h>

#include <algorithm>
#include <charconv>
#include <chrono>
#include <cstdio>
#include <initializer_list>
#include <memory>
#include <random>
#include <span>
#include <string>
#include <string_view>
#include <thread>
#include <vector>

#include <multiproc/redis.hpp>

namespace multiproc::redis::detail {

using Clock = std::chrono::steady_clock;
using multiproc::detail::Deadline;

// ---- scripts
// -------------------------------------------------------------------------------------

// KEYS: items, shutdown flag, unfinished. ARGV: maxsize, joinable, items... -> count put, -1 if
// shut down. Puts as many as there is room for; the caller waits for room for the rest.
inline constexpr const char* kPutScript = R"lua(
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

// KEYS: items, shutdown flag, proc, hb, consumers, drain. ARGV: max, reliable, known unacked, ttl
// ms, consumer id, reap, key prefix, beat. -> {status, processing list length, items...}; status
// 1: shut down (and drained), 2: shut down, items follow, 0: not shut down.
// Once shut down, what is left lives in the drain list (items is then the tombstone string that
// makes a plain LPUSH fail: kShutdownScript).
// Keys of other consumers are derived from the prefix: they share the {name} hash tag, so a
// cluster keeps them in one slot.
inline constexpr const char* kTakeScript = R"lua(
local flag = redis.call('GET', KEYS[2])
local q = flag and KEYS[6] or KEYS[1]
local reliable = ARGV[2] == '1'
if reliable then
  if ARGV[8] == '1' then
    redis.call('SET', KEYS[4], '1', 'PX', ARGV[4])
    redis.call('SADD', KEYS[5], ARGV[5])
  end
  -- Items the server moved here whose reply never reached us (lost connection) go back first.
  local known = tonumber(ARGV[3])
  while redis.call('LLEN', KEYS[3]) > known do
    redis.call('LMOVE', KEYS[3], q, 'LEFT', 'RIGHT')
  end
end
if ARGV[6] == '1' then
  for _, id in ipairs(redis.call('SMEMBERS', KEYS[5])) do
    if redis.call('EXISTS', ARGV[7] .. 'hb:' .. id) == 0 then
      local p = ARGV[7] .. 'proc:' .. id
      while redis.call('LMOVE', p, q, 'LEFT', 'RIGHT') do end
      redis.call('SREM', KEYS[5], id)
    end
  end
end
-- out[2]: what is left in our processing list (less than we know of when the reaper took our
-- items back, after we made no call for the heartbeat's time).
local out = {0, reliable and redis.call('LLEN', KEYS[3]) or 0}
if flag == '2' then out[1] = 1 return out end
local max = tonumber(ARGV[1])
if reliable then
  for i = 1, max do
    local v = redis.call('LMOVE', q, KEYS[3], 'RIGHT', 'LEFT')
    if not v then break end
    out[#out + 1] = v
  end
else
  local vs = redis.call('RPOP', q, max)
  if vs then for _, v in ipairs(vs) do out[#out + 1] = v end end
end
if flag then out[1] = #out == 2 and 1 or 2 end
return out
)lua";

// KEYS: shutdown flag, items, unfinished, drain. ARGV: immediate. Immediate drops the items and
// counts them done, so join() returns (Python's Queue.shutdown(immediate=True)).
// The items key becomes a string, the tombstone: a put is a plain LPUSH on an unbounded queue, and
// LPUSH on a string fails (WRONGTYPE), atomically with the push, so no put lands after a shutdown
// whatever the interleaving. What was left moves to the drain list, for the getters to drain.
inline constexpr const char* kShutdownScript = R"lua(
local flag = redis.call('GET', KEYS[1])
if ARGV[1] == '1' then
  local n = redis.call('LLEN', flag and KEYS[4] or KEYS[2])
  redis.call('DEL', KEYS[2], KEYS[4])
  redis.call('SET', KEYS[2], 'shut down')
  redis.call('SET', KEYS[1], '2')
  local u = tonumber(redis.call('GET', KEYS[3]) or '0')
  if u > 0 then redis.call('SET', KEYS[3], math.max(0, u - n)) end
elseif not flag then
  if redis.call('EXISTS', KEYS[2]) == 1 then redis.call('RENAME', KEYS[2], KEYS[4]) end
  redis.call('SET', KEYS[2], 'shut down')
  redis.call('SET', KEYS[1], '1')
end
return 0
)lua";

// KEYS: unfinished, proc, the handle's record of its last call. ARGV: ack, the call's number
// (per handle), the record's expiry ms. -> unfinished left, -1 when task_done() was one too many.
// A call sent again after its reply was lost (the same number) applies nothing again (no second
// count, no second ack) and gets the first run's answer. A handle makes one call at a time, so the
// last one's record is all a retry needs.
inline constexpr const char* kTaskDoneScript = R"lua(
local last = redis.call('GET', KEYS[3])
if last then
  local sep = string.find(last, ':', 1, true)
  if sep and string.sub(last, 1, sep - 1) == ARGV[2] then
    return tonumber(string.sub(last, sep + 1))
  end
end
if ARGV[1] == '1' then redis.call('RPOP', KEYS[2]) end
local u = tonumber(redis.call('GET', KEYS[1]) or '0')
local left = -1
if u > 0 then left = redis.call('DECR', KEYS[1]) end
redis.call('SET', KEYS[3], ARGV[2] .. ':' .. left, 'PX', ARGV[3])
return left
)lua";

// KEYS: proc, items, hb, consumers, flag, drain, task_done()'s record. ARGV: id. A consumer going
// away gives back what it did not ack (to the drain list once shut down).
inline constexpr const char* kReleaseScript = R"lua(
local q = redis.call('EXISTS', KEYS[5]) == 1 and KEYS[6] or KEYS[2]
while redis.call('LMOVE', KEYS[1], q, 'LEFT', 'RIGHT') do end
redis.call('DEL', KEYS[3], KEYS[7])
redis.call('SREM', KEYS[4], ARGV[1])
return 0
)lua";

// KEYS: items, flag, unfinished, consumers, drain. ARGV: prefix.
inline constexpr const char* kUnlinkScript = R"lua(
for _, id in ipairs(redis.call('SMEMBERS', KEYS[4])) do
  redis.call('DEL', ARGV[1] .. 'proc:' .. id, ARGV[1] .. 'hb:' .. id, ARGV[1] .. 'done:' .. id)
end
redis.call('DEL', KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5])
return 0
)lua";

// KEYS: proc. ARGV: how many stay unacked. Pops the oldest items beyond that: an ack that may
// already have run once (its reply lost) runs again without acking more.
inline constexpr const char* kAckScript = R"lua(
local extra = redis.call('LLEN', KEYS[1]) - tonumber(ARGV[1])
if extra > 0 then redis.call('RPOP', KEYS[1], extra) end
return 0
)lua";

// A Lua script as the connection sends it: EVALSHA with its SHA1, computed here as the server
// computes it, so that a call carries 40 bytes rather than the text and the server compiles the
// text once, not per call. A server that does not know the script (restarted, SCRIPT FLUSH)
// answers NOSCRIPT: Connection::run() then sends that call as EVAL with the text, which runs it
// and caches it for the next EVALSHA in one command (a SCRIPT LOAD then EVALSHA would leave a
// window for another flush).
class LuaScript {
 public:
  explicit LuaScript(std::string text) : text_(std::move(text)) {
    unsigned char md[EVP_MAX_MD_SIZE];
    unsigned int len = 0;
    if (!EVP_Digest(text_.data(), text_.size(), md, &len, EVP_sha1(), nullptr))
      throw ProcessError("multiproc: redis: OpenSSL SHA1 failed");
    static constexpr char kHex[] = "0123456789abcdef";
    for (unsigned i = 0; i < len; ++i) {
      sha_ += kHex[md[i] >> 4];
      sha_ += kHex[md[i] & 15];
    }
  }
  const std::string& text() const { return text_; }
  const std::string& sha() const { return sha_; }

 private:
  std::string text_, sha_;
};

enum Script { kPut, kTake, kShutdown, kTaskDone, kRelease, kUnlink, kAck, kScriptCount };

// The queue's scripts, made on first use (a handle may be used from another file's static
// initializer).
inline const LuaScript& script(Script s) {
  static const LuaScript all[kScriptCount] = {
      LuaScript(kPutScript),      LuaScript(kTakeScript),    LuaScript(kShutdownScript),
      LuaScript(kTaskDoneScript), LuaScript(kReleaseScript), LuaScript(kUnlinkScript),
      LuaScript(kAckScript)};
  return all[s];
}

// ---- redaction
// ---------------------------------------------------------------------------------------
// What an error or a log line may show of a URL or a command: never a password. Every message
// that quotes a URL or a command goes through these two.

// The URL with its password masked: redis://user:***@host:port/db, redis://***@host (a password
// alone). Made for URLs that do not parse too: the credentials are everything from the scheme's
// "//" to the last '@' (a host, port or database has no '@'), so a password with an unescaped
// '/', '?' or '#' is masked whole.
inline std::string redact_url(std::string_view url) {
  const auto at = url.rfind('@');
  if (at == std::string_view::npos) return std::string(url);
  const auto slashes = url.substr(0, at).find("//");
  const size_t begin = slashes == std::string_view::npos ? 0 : slashes + 2;
  const std::string_view cred = url.substr(begin, at - begin);
  const auto colon = cred.find(':');
  std::string out(url.substr(0, begin));
  if (colon != std::string_view::npos) out.append(cred.substr(0, colon + 1));
  out.append("***");
  out.append(url.substr(at));
  return out;
}

// A command as a message shows it: its name, and its arguments only for the commands whose
// arguments are never secret (AUTH's and HELLO's are credentials; a script's are the user's data).
inline std::string command_text(std::span<const std::string_view> argv) {
  if (argv.empty()) return {};
  std::string out(argv[0]);
  std::string upper;
  for (char c : argv[0]) upper += static_cast<char>(c >= 'a' && c <= 'z' ? c - 'a' + 'A' : c);
  if (upper == "SELECT") {
    for (size_t i = 1; i < argv.size(); ++i) {
      out += ' ';
      out.append(argv[i]);
    }
  }
  return out;
}

// ---- connection
// ----------------------------------------------------------------------------------

struct ReplyDeleter {
  void operator()(redisReply* r) const {
    if (r) freeReplyObject(r);
  }
};
using Reply = std::unique_ptr<redisReply, ReplyDeleter>;

// A command's strings, viewed: a braced list (alive to the end of the call's full expression) or
// a vector the caller keeps.
class Views {
 public:
  Views(std::initializer_list<std::string_view> l) : s_(l.begin(), l.size()) {}
  Views(std::span<const std::string_view> s) : s_(s) {}
  Views(const std::vector<std::string_view>& v) : s_(v) {}
  auto begin() const { return s_.begin(); }
  auto end() const { return s_.end(); }
  size_t size() const { return s_.size(); }

 private:
  std::span<const std::string_view> s_;
};

inline timeval to_timeval(double seconds) {
  seconds = std::max(seconds, 0.001);
  timeval tv;
  tv.tv_sec = static_cast<time_t>(seconds);
  tv.tv_usec = static_cast<suseconds_t>((seconds - static_cast<double>(tv.tv_sec)) * 1e6);
  return tv;
}

inline std::string seconds(Clock::duration d) {
  char buf[32];
  std::snprintf(buf, sizeof buf, "%.1f", std::chrono::duration<double>(d).count());
  return buf;
}

inline bool starts_with(std::string_view s, std::string_view prefix) {
  return s.substr(0, prefix.size()) == prefix;
}

// Errors that a server says while it starts, loads its append-only file or runs a long script:
// wait and try again, as for a lost connection.
inline bool transient_error(std::string_view e) {
  return starts_with(e, "LOADING") || starts_with(e, "BUSY") || starts_with(e, "TRYAGAIN") ||
         starts_with(e, "MASTERDOWN");
}

// A command on a key of another type: for a queue, its items key after a shutdown (the tombstone,
// kShutdownScript). Thrown apart so that the queue can tell it from other errors.
class WrongTypeError : public ProcessError {
 public:
  using ProcessError::ProcessError;
};

inline bool auth_error(std::string_view e) {
  return starts_with(e, "NOAUTH") || starts_with(e, "WRONGPASS") || starts_with(e, "NOPERM") ||
         e.find("invalid password") != std::string_view::npos;
}

class Connection {
 public:
  Connection(Url url, std::string_view url_text, double unreachable_s)
      : url_(std::move(url)), shown_url_(redact_url(url_text)), unreachable_s_(unreachable_s) {}
  ~Connection() { drop(); }
  Connection(const Connection&) = delete;
  Connection& operator=(const Connection&) = delete;

  // Runs one command, reconnecting with backoff on a lost connection until the larger of the
  // deadline and unreachable_s from now (only one try when retry is false). block_s: how long the
  // server may hold the reply (a blocking command).
  Reply run(std::initializer_list<std::string_view> argv, const Deadline& deadline,
            double block_s = 0, bool retry = true) {
    return run(std::span<const std::string_view>(argv.begin(), argv.size()), deadline, block_s,
               retry);
  }
  // `before`, when given, is sent with argv in one write (a pipeline: no round trip more) and its
  // reply dropped: argv is a script that looks at what `before` did, and answers for both.
  // `script`: argv is its EVALSHA, sent again as EVAL with the text when the server answers
  // NOSCRIPT.
  Reply run(std::span<const std::string_view> argv, const Deadline& deadline, double block_s = 0,
            bool retry = true, std::span<const std::string_view> before = {},
            const LuaScript* script = nullptr) {
    const auto start = Clock::now();
    auto give_up = start + std::chrono::duration_cast<Clock::duration>(
                               std::chrono::duration<double>(unreachable_s_));
    if (deadline.at && *deadline.at > give_up) give_up = *deadline.at;
    std::string last_error;
    auto backoff = std::chrono::milliseconds(5);
    std::vector<std::string_view> with_text;  // argv as EVAL, after a NOSCRIPT
    for (;;) {
      if (ctx_ && pid_ != getpid()) drop();  // a forked child's copy: the parent's socket
      if (!ctx_) {
        const double left = std::chrono::duration<double>(give_up - Clock::now()).count();
        connect(std::clamp(left, 0.05, 2.0), last_error);
      }
      if (ctx_) {
        // Two setsockopt calls: only when a blocking wait needs a longer limit than the last
        // (the limit only grows, by the longest wait, 0.2 s: a handle that alternates puts and
        // blocking gets would otherwise pay them twice per get).
        if (block_s > timeout_block_s_) {
          redisSetTimeout(ctx_, to_timeval(block_s + 10.0));
          timeout_block_s_ = block_s;
        }
        Reply reply = command(argv, before);
        if (!reply) {
          last_error = ctx_->errstr;
          drop();
        } else if (reply->type != REDIS_REPLY_ERROR) {
          return reply;
        } else {
          std::string e(reply->str, reply->len);
          if (script && starts_with(e, "NOSCRIPT")) {
            // The server lost its scripts (a restart, SCRIPT FLUSH): the call goes again with
            // the text. `before` ran: its reply came ahead of this one, on a connection that is
            // fine; only the script call goes again.
            with_text.assign(argv.begin(), argv.end());
            with_text[0] = "EVAL";
            with_text[1] = script->text();
            argv = with_text;
            script = nullptr;
            before = {};
            continue;
          }
          if (auth_error(e)) throw AuthenticationError(auth_message(argv, e));
          if (starts_with(e, "WRONGTYPE"))
            throw WrongTypeError("multiproc: redis: " + command_text(argv) +
                                 " failed: " + scrub(e));
          if (!transient_error(e))
            throw ProcessError("multiproc: redis: " + command_text(argv) + " failed: " + scrub(e));
          last_error = scrub(e);
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

  // Runs a script by its SHA1 (EVALSHA), by its text where the server lacks it. The other
  // arguments are run()'s.
  Reply eval(const LuaScript& script, Views keys, Views args, const Deadline& deadline,
             double block_s = 0, bool retry = true, std::span<const std::string_view> before = {}) {
    char buf[24];
    const std::string_view nkeys(
        buf, static_cast<size_t>(std::to_chars(buf, buf + sizeof buf, keys.size()).ptr - buf));
    eval_argv_.assign({"EVALSHA", script.sha(), nkeys});
    eval_argv_.insert(eval_argv_.end(), keys.begin(), keys.end());
    eval_argv_.insert(eval_argv_.end(), args.begin(), args.end());
    return run(eval_argv_, deadline, block_s, retry, before, &script);
  }

  // Sends one command and reads its reply (null when the connection failed: ctx_->errstr says
  // why). The command is encoded here, into a buffer kept from call to call, rather than by
  // redisCommandArgv, whose printf-style encoder was most of a put's client-side instructions.
  Reply command(std::span<const std::string_view> argv,
                std::span<const std::string_view> before = {}) {
    cmd_.clear();
    if (!before.empty()) encode(before);
    encode(argv);
    void* r = nullptr;
    bool ok = redisAppendFormattedCommand(ctx_, cmd_.data(), cmd_.size()) == REDIS_OK;
    if (ok && !before.empty()) {
      void* first = nullptr;
      ok = redisGetReply(ctx_, &first) == REDIS_OK;
      if (first) freeReplyObject(first);
    }
    if (!ok || redisGetReply(ctx_, &r) != REDIS_OK) {
      if (r) freeReplyObject(r);
      r = nullptr;
    }
    if (cmd_.capacity() > (size_t{1} << 20)) std::string().swap(cmd_);  // a large put_many's
    return Reply(static_cast<redisReply*>(r));
  }

  // Connections made so far. A caller that sees it change knows that a reply may have been lost
  // (the server applied a command whose answer never came): what such a command moved must be
  // looked for on the server.
  uint64_t connects() const { return connects_; }

 private:
  void drop() {
    // A forked child's copy still frees its own memory and its own descriptor copy; the parent's
    // connection is untouched (hiredis sends nothing on close).
    if (ctx_) redisFree(ctx_);
    ctx_ = nullptr;
  }

  // A server's error text, with the password masked should the server have quoted it back (no
  // Redis does today: this is for whatever sits in between, a proxy, a future version).
  std::string scrub(std::string e) const {
    if (url_.password.empty()) return e;
    for (size_t at = e.find(url_.password); at != std::string::npos;
         at = e.find(url_.password, at + 3))
      e.replace(at, url_.password.size(), "***");
    return e;
  }

  std::string auth_message(std::span<const std::string_view> cmd, const std::string& e) const {
    return "multiproc: redis: " + command_text(cmd) + " failed: the server at " + url_.host + ":" +
           std::to_string(url_.port) + " refused the credentials" +
           (url_.user.empty() ? std::string() : " of user '" + url_.user + "'") +
           (url_.password.empty() ? " (the URL gives no password: redis://:password@host:port)"
                                  : " given in the URL") +
           ": " + scrub(e);
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
    ++connects_;
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
      last_error = scrub(e);
      drop();
      return false;
    }
    drop();
    if (auth_error(e)) throw AuthenticationError(auth_message(cmd, e));
    throw ProcessError("multiproc: redis: " + command_text(cmd) + " failed on " + shown_url_ +
                       ": " + scrub(e));
  }

  void encode(std::span<const std::string_view> argv) {
    append_header('*', argv.size());
    for (auto a : argv) {
      append_header('$', a.size());
      cmd_.append(a);
      cmd_.append("\r\n");
    }
  }

  void append_header(char kind, size_t n) {
    char buf[24];
    buf[0] = kind;
    auto end = std::to_chars(buf + 1, buf + sizeof buf - 2, n).ptr;
    *end++ = '\r';
    *end++ = '\n';
    cmd_.append(buf, static_cast<size_t>(end - buf));
  }

  Url url_;
  std::string shown_url_;  // the URL as messages show it: redact_url()
  std::string cmd_;
  double unreachable_s_;
  redisContext* ctx_ = nullptr;
  double timeout_block_s_ = 0;  // the socket's timeout is this + 10 s
  pid_t pid_ = 0;
  uint64_t connects_ = 0;
  std::vector<std::string_view> eval_argv_;  // eval()'s, kept from call to call
};

inline std::string random_id() {
  char host[64] = {};
  gethostname(host, sizeof host - 1);
  std::random_device rd;
  char buf[32];
  std::snprintf(buf, sizeof buf, "%08x%08x", rd(), rd());
  return std::string(host) + "-" + std::to_string(getpid()) + "-" + buf;
}

inline long long integer(const Reply& r) {
  if (r->type != REDIS_REPLY_INTEGER) throw ProcessError("multiproc: redis: unexpected reply");
  return r->integer;
}

}  // namespace multiproc::redis::detail
