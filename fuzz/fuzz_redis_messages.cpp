// Fuzz target: the bytes a redis::Pool worker pops from Redis (a signed task message) and the
// bytes its client pops back (a signed result message), through the real code of
// src/redis/pool.cpp: handle_task() as the worker runs it (signature, body, build id, the
// invoker checked against the program's task entry points, the arguments decoded and the task
// run) and, for results, the signature and body check followed by the pool's CallsSink decoding
// the payload as a map or apply of `count` calls would.
//
// The first byte picks the mode (and the result type), the second a result's call count; the
// rest is the message:
//   mode 0: raw task bytes (HMAC + body) as read from Redis;
//   mode 1: a task body, which the target signs with the known key first, so that mutations get
//           past the HMAC and reach the decoding behind it;
//   mode 2, 3: the same for a result message.
// The build id is pinned (MULTIPROC_REDIS_BUILD_ID) so that seeds stay valid across builds. The
// only task entry points registered are capture-free lambdas: an invoker found in the set never
// jumps to a function address taken from the message, so a signed message cannot make the
// target run arbitrary code (a key holder's power, not a finding).
//
// pool.cpp's message code lives in an unnamed namespace: the target compiles that file in (and
// links multiproc::redis for the rest) rather than widening its interface for a test.
//
// Seeds: MULTIPROC_FUZZ_WRITE_SEEDS=<dir> fuzz_redis_messages_replay <any file> writes a fresh
// set of valid messages of each mode to <dir>.
#include "redis/pool.cpp"  // NOLINT(bugprone-suspicious-include): see above

#include <cstdint>
#include <cstdlib>
#include <fstream>
#include <string>
#include <tuple>
#include <vector>

namespace {

namespace d = multiproc::detail;
namespace rd = multiproc::redis::detail;

const std::string& fuzz_key() {
  static const std::string k(32, 'f');
  return k;
}

auto g_square = [](int x) { return static_cast<int64_t>(x) * x; };  // no overflow: UBSan
auto g_concat = [](std::string a, std::string b) { return a + b; };

// The entry points a real program would have registered: map of g_square (one argument per
// item), apply of g_concat (argument tuples).
struct Entries {
  std::string square_map = rd::code_bytes<decltype(g_square), std::tuple<int>, false>(g_square);
  std::string concat_apply =
      rd::code_bytes<decltype(g_concat), std::tuple<std::string, std::string>, true>(g_concat);
};

const Entries& entries_once() {
  static const Entries e = [] {
    setenv("MULTIPROC_REDIS_BUILD_ID", "fuzz-build", 1);  // before build_id() caches it
    return Entries{};
  }();
  return e;
}

template <class R>
void decode_result(const std::string& payload, size_t count, bool is_map) {
  using V = d::value_of<R>;
  auto st = std::make_shared<rd::CallsState<V>>();
  st->values.resize(count);
  st->remaining = count;
  rd::CallsSink<R> sink(st, std::vector<size_t>{0}, count, is_map);
  sink.chunk_done(0, payload.data(), payload.size());
  // Every call settled, by a value or an error: never more, never fewer.
  std::lock_guard lk(st->mu);
  if (!st->ready) std::abort();
  for (size_t i = 0; i < count; ++i)
    if (!st->values[i] && !st->errors.count(i)) std::abort();
}

void check_result(const std::string& raw, unsigned type, size_t count) {
  std::string why;
  auto m = rd::open<rd::ResultMsg>(fuzz_key(), raw, rd::kResultMagic, &why);
  if (!m) {
    if (why.empty()) std::abort();  // a refusal always says why
    return;
  }
  if (m->kind != rd::kResult) return;  // lost and refused carry a text only
  switch (type % 3) {
    case 0:
      decode_result<int64_t>(m->payload, count, true);
      break;
    case 1:
      decode_result<std::string>(m->payload, 1, false);
      break;
    default:
      decode_result<void>(m->payload, count, true);
      break;
  }
}

void check_task(const std::string& raw) {
  std::string client;
  const std::string result = rd::handle_task(fuzz_key(), "fuzz-worker", raw, &client);
  if (result.empty()) return;  // dropped: bad signature or body
  // An answer is always a result message for the task's client, signed with the key.
  std::string why;
  auto m = rd::open<rd::ResultMsg>(fuzz_key(), result, rd::kResultMagic, &why);
  if (!m || m->client != client) std::abort();
}

void write(const std::string& dir, const std::string& name, const std::string& bytes) {
  std::ofstream(dir + "/" + name, std::ios::binary) << bytes;
}

// Valid messages of each mode, for the seed corpus.
void write_seeds(const std::string& dir) {
  const auto& e = entries_once();
  struct Task {
    const char* name;
    std::string code, args;
  };
  std::string squares, pairs;
  d::encode_chunk_items(squares, std::vector<std::tuple<int>>{{3}, {4}, {5}});
  d::encode_chunk_items(pairs, std::vector<std::tuple<std::string, std::string>>{{"ab", "cd"}});
  const std::vector<Task> tasks = {
      {"square_map", e.square_map, squares},
      {"concat_apply", e.concat_apply, pairs},
  };
  for (const auto& t : tasks) {
    const std::string signed_task = rd::sign_task(fuzz_key(), "client-1", 7, t.code, t.args);
    write(dir, std::string("task_raw_") + t.name, std::string("\x00\x00", 2) + signed_task);
    write(dir, std::string("task_body_") + t.name,
          std::string("\x01\x00", 2) + signed_task.substr(32));
    std::string client;
    const std::string result = rd::handle_task(fuzz_key(), "w", signed_task, &client);
    // Result type: int64_t for the map (3 calls), std::string for the apply (1 call).
    const char type = t.name[0] == 's' ? 0 : 1, count = t.name[0] == 's' ? 3 : 1;
    write(dir, std::string("result_raw_") + t.name,
          std::string{static_cast<char>(2 + 4 * type), static_cast<char>(count - 1)} + result);
    write(dir, std::string("result_body_") + t.name,
          std::string{static_cast<char>(3 + 4 * type), static_cast<char>(count - 1)} +
              result.substr(32));
  }
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  (void)entries_once();
  static const bool seeded = [] {
    if (const char* dir = std::getenv("MULTIPROC_FUZZ_WRITE_SEEDS")) write_seeds(dir);
    return true;
  }();
  (void)seeded;
  if (size < 2) return 0;
  const unsigned mode = data[0] % 4, type = data[0] / 4;
  const size_t count = data[1] % 16 + 1;
  const std::string bytes(reinterpret_cast<const char*>(data) + 2, size - 2);
  switch (mode) {
    case 0:
      check_task(bytes);
      break;
    case 1:
      check_task(rd::hmac(fuzz_key(), bytes) + bytes);
      break;
    case 2:
      check_result(bytes, type, count);
      break;
    default:
      check_result(rd::hmac(fuzz_key(), bytes) + bytes, type, count);
      break;
  }
  return 0;
}
