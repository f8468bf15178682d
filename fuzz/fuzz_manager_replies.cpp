// Fuzz target: a proxy's side of the manager protocol: what a damaged or hostile server could
// answer. The first byte picks the call, the rest is the reply frame, read as the proxy reads it
// (reply_payload in src/managers/dispatch.hpp, then the payload decoded as that call's result,
// as include/multiproc/managers.hpp's proxies do, user values inside it included). A reply must
// give a value or the error a proxy's caller expects (a ProcessError, KeyError and the like, or a
// list's std::out_of_range), never crash, hang or allocate without bound.
#include <cstdint>
#include <map>
#include <optional>
#include <stdexcept>
#include <string>
#include <utility>
#include <vector>

#include <cereal/types/map.hpp>
#include <cereal/types/optional.hpp>
#include <cereal/types/string.hpp>
#include <cereal/types/utility.hpp>
#include <cereal/types/vector.hpp>

#include <multiproc/detail/queue_core.hpp>
#include <multiproc/managers.hpp>

#include "managers/dispatch.hpp"

namespace {

namespace d = multiproc::detail;

template <class T>
T result(const std::string& reply, const char* method) {
  return d::load<T>(d::reply_payload(reply, method));
}

void read_reply(uint8_t call, const std::string& reply) {
  switch (call % 12) {
    case 0:  // create, create_user, number_of_objects, size: a number
      (void)result<uint64_t>(reply, "create");
      break;
    case 1:  // contains, acquire, wait, is_set, broken
      (void)result<bool>(reply, "acquire");
      break;
    case 2:  // dict<std::string, std::vector<int>>.get, pop; list.get; Value.get
      (void)d::load<std::vector<int>>(result<std::string>(reply, "get"));
      break;
    case 3:  // dict.get_opt
      if (auto v = result<std::optional<std::string>>(reply, "get_opt"))
        (void)d::load<std::map<int, std::string>>(*v);
      break;
    case 4:  // dict.items
      for (auto& [k, v] :
           result<std::vector<std::pair<std::string, std::string>>>(reply, "items")) {
        (void)d::load<std::string>(k);
        (void)d::load<double>(v);
      }
      break;
    case 5:  // list.copy
      for (auto& s : result<std::vector<std::string>>(reply, "copy"))
        (void)d::load<std::optional<int64_t>>(s);
      break;
    case 6: {  // Namespace.get
      auto [type, bytes] = result<std::pair<std::string, std::string>>(reply, "get");
      if (type == typeid(std::string).name()) (void)d::load<std::string>(bytes);
      break;
    }
    case 7:  // Barrier.wait, parties, n_waiting; Semaphore.get_value
      (void)result<int64_t>(reply, "wait");
      break;
    case 8:  // a user type's method: its result
      (void)result<std::vector<std::string>>(reply, "call");
      break;
    case 9:  // set, clear, release, append...: nothing but the reply's kind
      (void)d::reply_payload(reply, "set");
      break;
    case 10: {  // create_queue: a queue's name, opened as the Queue proxy does
      const std::string name = result<std::string>(reply, "create_queue");
      (void)d::QueueCore::attach(name);
      break;
    }
    default:
      (void)result<std::string>(reply, "get");
      break;
  }
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size == 0) return 0;
  const std::string reply(reinterpret_cast<const char*>(data + 1), size - 1);
  try {
    read_reply(data[0], reply);
  } catch (const multiproc::ProcessError&) {
  } catch (const std::out_of_range&) {
  }
  return 0;
}
