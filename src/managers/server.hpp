// The manager's server process and its wire protocol. Internal to src/managers/.
//
// A request is one frame: dump(tuple<uint64_t id, std::string method, std::string args>); id 0
// names the server itself ("create", "create_queue"). A reply is one frame:
// dump(tuple<uint8_t ReplyKind, std::string payload>). args and payload are dump()s of tuples of
// strings and numbers: the server never decodes a user's type, it keeps values as their bytes.
#pragma once

#include <sys/types.h>
#include <cstdint>
#include <string>
#include <utility>
#include <vector>

#include <multiproc/connection.hpp>
#include <multiproc/detail/code_address.hpp>

namespace multiproc::detail {

enum class ReplyKind : uint8_t {
  ok = 0,
  key_error = 1,
  index_error = 2,
  timeout = 3,
  error = 4,
  broken_barrier = 5,
};

// Requests are small; a frame over this is a hostile or broken client.
inline constexpr uint64_t kMaxRequestBytes = uint64_t{1} << 30;

// The server's task. It first connects back to the Manager at control_address (authenticated
// with authkey): that connection is the control pipe. Then it listens on `address`, answers
// "ok <address it listens on>" (or "error: ...") on the control connection, and stops at a
// message or EOF there (the Manager's shutdown or death); then it removes private_dir (when not
// empty), the directory made for its socket. Connecting back, rather than receiving a
// descriptor, needs no fd-passing thread in the Manager's process and nothing inherited.
// `registry` names the user types it may host: typeid, and where the function that returns the
// type's HostedTypeOps is (code addresses, so that it holds in a spawned server too).
void manager_server_main(std::string address, std::string private_dir, std::string authkey,
                         std::string control_address, bool pdeathsig,
                         std::vector<std::pair<std::string, CodeAddress>> registry);

}  // namespace multiproc::detail
