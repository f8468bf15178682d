// Fuzz target: the manager server's side of its protocol (src/managers/dispatch.hpp): request
// frames, as an authenticated client sends them, run against one object table by two clients.
// The input is a series of records: a control byte (bit 0: which client sends; bit 1: that client
// disconnects first, as a connection that drops: its locks are released), a 16-bit little-endian
// length, then that many bytes of request frame. Every request must be answered with a reply frame
// the client's decoder reads (a value, or the error a proxy throws), or refused as no request at
// all (a ProcessError: the server hangs up on that client only); any other exception, a crash, a
// sanitizer report, a hang (libFuzzer's -timeout) or a large allocation is a finding. Waits are
// capped at 0 s: one thread, with no other client running, could never be woken.
#include <cstdint>
#include <limits>
#include <memory>
#include <optional>
#include <stdexcept>
#include <string>
#include <tuple>
#include <utility>
#include <vector>

#include <cereal/types/string.hpp>
#include <cereal/types/tuple.hpp>

#include <multiproc/detail/queue_core.hpp>
#include <multiproc/managers.hpp>

#include "managers/dispatch.hpp"

// A user type the server hosts (Manager's Registry): its typeid and proxy name are in the seeds
// (fuzz/gen_manager_corpus.py), so it stays at namespace scope with a fixed mangled name.
struct FuzzCounter {
  int64_t n = 0;
  int64_t add(int64_t k) {
    if (k == 13) throw std::invalid_argument("unlucky");  // a hosted method that throws
    // Wraps (no signed overflow of the target's own): a finding must be the server's.
    n = static_cast<int64_t>(static_cast<uint64_t>(n) + static_cast<uint64_t>(k));
    return n;
  }
  std::string name() const { return "counter"; }
};
FuzzCounter make_fuzz_counter(int64_t start) {
  return FuzzCounter{start};
}
struct FuzzCounterProxy : multiproc::Proxy<FuzzCounter, &FuzzCounter::add, &FuzzCounter::name> {
  using Proxy::Proxy;
};

namespace {

namespace d = multiproc::detail;

std::shared_ptr<d::ServerState> new_state() {
  return d::make_server_state(
      "fuzz-auth-key", {{"Counter", d::hosted_type_ops<FuzzCounterProxy, &make_fuzz_counter>()}},
      0.0);
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  auto state = new_state();
  std::optional<d::ClientSession> clients[2];
  bool made_queue = false;
  size_t i = 0;
  while (i < size) {
    const uint8_t control = data[i++];
    size_t len = 0;
    if (i < size) len = data[i++];
    if (i < size) len |= size_t{data[i++]} << 8;
    len = std::min(len, size - i);
    const std::string request(reinterpret_cast<const char*>(data + i), len);
    i += len;
    auto& client = clients[control & 1];
    if (control & 2) client.reset();
    if (!client) client.emplace(state);
    // A queue is a shared-memory segment: one per input keeps the fuzzer off /dev/shm's limits.
    std::string method;
    try {
      method = std::get<1>(d::load<std::tuple<uint64_t, std::string, std::string>>(request));
    } catch (const multiproc::ProcessError&) {
    }
    if (method == "create_queue") {
      if (made_queue) continue;
      made_queue = true;
    }
    std::string reply;
    try {
      reply = client->dispatch(request);
    } catch (const multiproc::ProcessError&) {
      client.reset();  // not a request: the server hangs up
      continue;
    }
    try {
      const std::string payload = d::reply_payload(reply, method);
      // The reply to create_queue is a queue handle with a reference in flight: take it, as the
      // client does, so that the queue goes when the last reference does.
      if (method == "create_queue") d::QueueCore::attach(d::load<std::string>(payload));
    } catch (const multiproc::ProcessError&) {
    } catch (const std::out_of_range&) {  // a list's IndexError
    }
  }
  return 0;
}
