// multiproc::redis::detail::QueueCore: a queue of byte strings kept in Redis lists, through
// hiredis' synchronous API. The common paths are single plain commands, the engine's cheapest:
// a put on an unbounded queue is one LPUSH (all items of a put_many in one), a get one BRPOP
// (RPOP with a count for get_many). Shutdown needs no check on those paths: it turns the items
// key into a string (the tombstone, kShutdownScript in connection.hpp), so that a later LPUSH
// fails with WRONGTYPE, atomically, and what was left moves to a drain list that the getters,
// told by the same error, then empty through a script. Operations that read and write more than
// one key stay Lua scripts (atomic on the server): a bounded queue's maxsize check, a
// JoinableQueue's count, the reliable mode's moves, heartbeat and reaper.
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
#include <span>
#include <string>
#include <string_view>
#include <thread>
#include <vector>

#include <multiproc/redis.hpp>

#include "connection.hpp"

namespace multiproc::redis::detail {

namespace {

int hexval(char c) {
  if (c >= '0' && c <= '9') return c - '0';
  if (c >= 'a' && c <= 'f') return c - 'a' + 10;
  if (c >= 'A' && c <= 'F') return c - 'A' + 10;
  return -1;
}

// A URL that does not parse, quoted with its password masked (redact_url()).
ProcessError url_error(const std::string& url, const std::string& what) {
  return ProcessError("multiproc: redis URL '" + redact_url(url) + "': " + what);
}

std::string percent_decode(std::string_view s, const std::string& url) {
  std::string out;
  for (size_t i = 0; i < s.size(); ++i) {
    if (s[i] != '%') {
      out += s[i];
      continue;
    }
    if (i + 2 >= s.size() + 0 || hexval(s[i + 1]) < 0 || hexval(s[i + 2]) < 0)
      throw url_error(url, "a bad %-escape in the credentials");
    out += static_cast<char>(hexval(s[i + 1]) * 16 + hexval(s[i + 2]));
    i += 2;
  }
  return out;
}

int parse_number(std::string_view s, int lo, int hi, const char* what, const std::string& url) {
  int v = 0;
  auto [end, ec] = std::from_chars(s.data(), s.data() + s.size(), v);
  if (s.empty() || ec != std::errc() || end != s.data() + s.size() || v < lo || v > hi) {
    throw url_error(url, std::string(what) + " '" + std::string(s) + "' is not a number from " +
                             std::to_string(lo) + " to " + std::to_string(hi));
  }
  return v;
}

// A get renews the heartbeat only when the last renewal is a tenth of the ttl old (sparing the
// server a SET and a SADD per get), so the key lives 1.1 ttl: a consumer is still alive for ttl
// after its last call, as promised, and a dead one is found within 1.1 ttl.
std::string heartbeat_ms(double ttl) {
  return std::to_string(static_cast<long long>(ttl * 1100));
}

}  // namespace

Url parse_url(const std::string& url) {
  constexpr std::string_view kScheme = "redis://";
  std::string_view s(url);
  if (starts_with(s, "rediss://")) {
    throw url_error(url,
                    "rediss:// (TLS) is not available: the hiredis this was built with "
                    "(Debian's 0.14) has no TLS; use redis:// on a trusted network or through "
                    "a tunnel (stunnel, ssh -L, WireGuard)");
  }
  if (!starts_with(s, kScheme)) {
    throw url_error(url, "must start with redis:// (redis://[user:password@]host[:port][/db])");
  }
  s.remove_prefix(kScheme.size());
  if (s.find_first_of("?#") != std::string_view::npos)
    throw url_error(url, "query and fragment are not supported");
  Url u;
  const auto slash = s.find('/');
  // An '@' past the first '/': the credentials hold a '/' (as the rest would otherwise be read as
  // the database, its text would be quoted in the error below).
  if (slash != std::string_view::npos && s.find('@', slash) != std::string_view::npos)
    throw url_error(url, "an '@' after a '/': a '/' in the credentials must be written %2F");
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
    if (close == std::string_view::npos) throw url_error(url, "unclosed '[' in the host");
    host = authority.substr(1, close - 1);
    std::string_view rest = authority.substr(close + 1);
    if (!rest.empty()) {
      if (rest[0] != ':') throw url_error(url, "junk after the host");
      port = rest.substr(1);
      if (port.empty()) throw url_error(url, "empty port");
    }
  } else if (const auto colon = authority.rfind(':'); colon != std::string_view::npos) {
    host = authority.substr(0, colon);
    port = authority.substr(colon + 1);
    if (port.empty()) throw url_error(url, "empty port");
  }
  if (host.empty()) throw url_error(url, "no host");
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
        k_drain(prefix + "drain"),
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
    k_done = prefix + "done:" + consumer;
    unacked = 0;
    last_beat = {};
  }

  [[noreturn]] void throw_shut_down() const {
    throw QueueClosed("multiproc: redis::Queue '" + name + "' is shut down");
  }

  Reply eval(Script s, Views keys, Views args, const Deadline& deadline, bool retry = true) {
    return conn.eval(script(s), keys, args, deadline, 0, retry);
  }

  std::string url, name;
  size_t maxsize;
  Options options;
  bool joinable;
  Connection conn;
  std::string prefix, k_items, k_flag, k_drain, k_unfinished, k_consumers, k_proc, k_hb, consumer;
  // task_done()'s record of its last call (kTaskDoneScript), and the number of that call.
  std::string k_done;
  uint64_t done_calls = 0;
  pid_t consumer_pid = 0;
  size_t unacked = 0;
  bool closed = false;
  // The last take script saw the queue shut down: while it drains, gets go to the script at once
  // (the plain commands would only fail on the tombstone first). Cleared by a take that finds the
  // queue live again (unlinked and used anew).
  bool shut_down_seen = false;
  Clock::time_point last_reap{}, last_beat{};
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
  // (A plain handle has a consumer id too once it called task_done(): nothing to give back.)
  if (!m.options.reliable || m.consumer.empty() || m.consumer_pid != getpid()) return;
  try {
    m.eval(kRelease, {m.k_proc, m.k_items, m.k_hb, m.k_consumers, m.k_flag, m.k_drain, m.k_done},
           {m.consumer}, Deadline::now(), false);
  } catch (...) {
    // The server is gone: the reaper of a live consumer returns the items once the heartbeat ends.
  }
}

size_t QueueCore::put(std::span<const std::string> items, const Deadline& deadline) {
  auto& m = *impl_;
  if (m.closed) throw QueueClosed("multiproc: redis::Queue '" + m.name + "': put() after close()");
  if (m.maxsize == 0 && !m.joinable) {
    // Unbounded: a plain LPUSH of every item (a script costs the server ten times more). It fails
    // with WRONGTYPE once the queue is shut down: the push and the shutdown check are one command,
    // so a put either lands before the shutdown (and is drained, or dropped by an immediate one)
    // or raises, never both and never neither. A put_many of more than kChunk items is several
    // pushes: a shutdown between two leaves the first ones in the queue, and raises.
    constexpr size_t kChunk = 10000;
    std::vector<std::string_view> argv;
    argv.reserve(2 + std::min(items.size(), kChunk));
    for (size_t done = 0; done < items.size();) {
      const size_t chunk = std::min(items.size() - done, kChunk);
      argv.assign({"LPUSH", m.k_items});
      for (size_t i = done; i < done + chunk; ++i) argv.push_back(items[i]);
      try {
        m.conn.run(argv, deadline);
      } catch (const WrongTypeError&) {
        m.throw_shut_down();
      }
      done += chunk;
    }
    return items.size();
  }
  const std::string max = std::to_string(m.maxsize);
  size_t done = 0;
  auto backoff = std::chrono::microseconds(500);
  while (done < items.size()) {
    const size_t chunk = std::min<size_t>(items.size() - done, 10000);
    std::vector<std::string_view> args{max, m.joinable ? "1" : "0"};
    for (size_t i = done; i < done + chunk; ++i) args.push_back(items[i]);
    const long long n =
        integer(m.eval(kPut, {m.k_items, m.k_flag, m.k_unfinished}, args, deadline));
    if (n < 0) m.throw_shut_down();
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
  const std::string ttl_ms = heartbeat_ms(ttl);
  // A count above what Redis takes (a long) would be an error, not "everything".
  max_items = std::min<size_t>(max_items, size_t{1} << 31);
  // A blocked getter looks at the shutdown flag, renews its heartbeat and reaps this often.
  const double slice = std::min(0.2, ttl / 4);
  // The heartbeat lasts 1.1 ttl: renewing it at most every tenth of ttl keeps it alive and spares
  // the server a SET and a SADD per get.
  const auto beat_every =
      std::chrono::duration_cast<Clock::duration>(std::chrono::duration<double>(ttl / 10));
  constexpr auto kReapEvery = std::chrono::milliseconds(500);
  std::vector<std::string> out;
  // The script: the reliable mode's take, and the plain mode's once shut down (the drain list).
  // -> 1 when shut down and nothing is left for us.
  auto take = [&](size_t n) {
    const auto now = Clock::now();
    const bool reap = reliable && now - m.last_reap >= kReapEvery;
    if (reap) m.last_reap = now;
    const bool beat = reliable && now - m.last_beat >= beat_every;
    const std::string count = std::to_string(n), known = std::to_string(m.unacked);
    Reply r = m.eval(
        kTake,
        {m.k_items, m.k_flag, reliable ? m.k_proc : m.k_items, m.k_hb, m.k_consumers, m.k_drain},
        {count, reliable ? "1" : "0", known, ttl_ms, m.consumer, reap ? "1" : "0", m.prefix,
         beat ? "1" : "0"},
        deadline);
    if (r->type != REDIS_REPLY_ARRAY || r->elements < 2)
      throw ProcessError("multiproc: redis: unexpected reply to a get");
    if (beat) m.last_beat = now;
    for (size_t i = 2; i < r->elements; ++i)
      out.emplace_back(r->element[i]->str, r->element[i]->len);
    if (reliable) m.unacked = static_cast<size_t>(r->element[1]->integer) + (r->elements - 2);
    m.shut_down_seen = r->element[0]->integer != 0;
    return r->element[0]->integer == 1;
  };
  // Plain mode, without waiting: one RPOP with a count. Only a shut down queue (its items key is
  // the tombstone: WRONGTYPE) needs the script.
  auto pop = [&](size_t n) {
    if (reliable || m.shut_down_seen) return take(n);
    const std::string count = std::to_string(n);
    Reply r;
    try {
      r = m.conn.run({"RPOP", m.k_items, count}, deadline);
    } catch (const WrongTypeError&) {
      return take(n);
    }
    if (r->type == REDIS_REPLY_ARRAY) {
      out.reserve(out.size() + r->elements);
      for (size_t i = 0; i < r->elements; ++i)
        out.emplace_back(r->element[i]->str, r->element[i]->len);
    }
    return false;
  };
  // One item, a caller who may wait: the first call is the blocking one, one round trip whether
  // the item is there or comes later. BRPOP takes the item whatever the flag says: after a
  // shutdown the items left are to be drained, and an immediate one deleted them; on the
  // tombstone it fails, and the script drains. In reliable mode only while neither the heartbeat
  // nor the reaper is due: the take script does those, and puts back what a lost reply moved
  // (the BLMOVE below is never sent twice, so that is only ever its newest item).
  const auto now = Clock::now();
  bool wait_first =
      max_items == 1 && !deadline.expired() && !m.shut_down_seen &&
      (!reliable || (now - m.last_beat < beat_every && now - m.last_reap < kReapEvery));
  for (;;) {
    if (!wait_first) {
      const bool shut_down = pop(max_items);
      if (!out.empty()) return out;
      if (shut_down) m.throw_shut_down();
      if (deadline.expired()) return out;
    }
    wait_first = false;
    double block = slice;
    if (deadline.at)
      block = std::min(block, std::chrono::duration<double>(*deadline.at - Clock::now()).count());
    block = std::max(block, 0.01);  // 0 would block forever
    char buf[32];
    const std::string_view secs(
        buf,
        static_cast<size_t>(
            std::to_chars(buf, buf + sizeof buf, block, std::chars_format::fixed, 3).ptr - buf));
    Reply r;
    try {
      // block_s is the slice, not block: the socket's timeout then stays as it is. The BLMOVE
      // is sent once, not again on a new connection: when its reply is lost, the item it moved
      // is the newest in the processing list, which the take script moves back first (an
      // item moved by a second BLMOVE would sit above it, and the acks, oldest first, would
      // then ack the lost one in place of the one handed out).
      r = reliable ? m.conn.run({"BLMOVE", m.k_items, m.k_proc, "RIGHT", "LEFT", secs}, deadline,
                                slice, /*retry=*/false)
                   : m.conn.run({"BRPOP", m.k_items, secs}, deadline, slice);
    } catch (const WrongTypeError&) {
      continue;  // shut down: the next pop drains
    } catch (const ConnectionError&) {
      if (!reliable) throw;
      continue;  // the take script reconnects (with the usual patience) and puts back
    }
    if (r->type == REDIS_REPLY_STRING) {
      out.emplace_back(r->str, r->len);
      ++m.unacked;
    } else if (r->type == REDIS_REPLY_ARRAY && r->elements == 2) {
      out.emplace_back(r->element[1]->str, r->element[1]->len);
    }
    if (!out.empty()) {
      if (max_items > 1) pop(max_items - 1);
      return out;
    }
  }
}

size_t QueueCore::qsize() {
  auto& m = *impl_;
  try {
    return static_cast<size_t>(integer(m.conn.run({"LLEN", m.k_items}, Deadline::never())));
  } catch (const WrongTypeError&) {  // shut down: what is left is in the drain list
    return static_cast<size_t>(integer(m.conn.run({"LLEN", m.k_drain}, Deadline::never())));
  }
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
  m.eval(kShutdown, {m.k_flag, m.k_items, m.k_unfinished, m.k_drain}, {immediate ? "1" : "0"},
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
  // One plain RPOP, sent once: sent again after a lost reply it would ack n more items, never
  // handed out. Once the connection failed, whether it ran is unknown: the script then trims the
  // list, from its oldest end, down to what stays unacked, which is right either way.
  try {
    m.conn.run({"RPOP", m.k_proc, std::to_string(n)}, Deadline::never(), 0, /*retry=*/false);
  } catch (const ConnectionError&) {
    m.eval(kAck, {m.k_proc}, {std::to_string(m.unacked - n)}, Deadline::never());
  }
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
  m.conn.run({"SET", m.k_hb, "1", "PX", heartbeat_ms(ttl)}, Deadline::never());
  m.conn.run({"SADD", m.k_consumers, m.consumer}, Deadline::never());
  m.last_beat = Clock::now();
}

void QueueCore::task_done() {
  auto& m = *impl_;
  m.own_consumer();  // its id names the record that makes a retried call count once
  const bool ack = m.options.reliable && m.unacked > 0;
  // The record outlives any retry of the call (retries stop after unreachable_timeout).
  const std::string call = std::to_string(++m.done_calls),
                    keep_ms = std::to_string(static_cast<long long>(
                        std::max(60.0, 2 * m.options.unreachable_timeout.count()) * 1000));
  const long long left =
      integer(m.eval(kTaskDone, {m.k_unfinished, ack ? m.k_proc : m.k_unfinished, m.k_done},
                     {ack ? "1" : "0", call, keep_ms}, Deadline::never()));
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
  m.eval(kUnlink, {m.k_items, m.k_flag, m.k_unfinished, m.k_consumers, m.k_drain}, {m.prefix},
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
