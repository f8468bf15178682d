// The manager server's request handling without its sockets: a table of hosted objects
// (ServerState), one client's session against it (ClientSession: a request frame in, a reply
// frame out), and the client's reading of a reply frame (reply_payload). server.cpp serves each
// connection through a ClientSession; the fuzz targets (fuzz/fuzz_manager_*.cpp) feed both sides
// arbitrary bytes through the same code. Internal to src/managers/ and fuzz/.
#pragma once

#include <cstdint>
#include <limits>
#include <memory>
#include <set>
#include <string>
#include <utility>
#include <vector>

#include <multiproc/managers.hpp>

namespace multiproc::detail {

struct ServerState;  // defined in server.cpp

// A server's object table. `types` are the registered user types it may host, by typeid.
// `max_wait_s` caps every wait a request asks for (a lock's acquire, an event's wait...): the
// server passes infinity (a request's timeout is the client's own business: it only holds that
// client's thread); a caller with one thread and no other client, which nothing could ever wake
// (the fuzz targets), passes 0.
std::shared_ptr<ServerState> make_server_state(
    std::string authkey, std::vector<std::pair<std::string, const HostedTypeOps*>> types = {},
    double max_wait_s = std::numeric_limits<double>::infinity());

// One client (one connection) of a ServerState. Its end, as a connection's, releases the locks
// it holds: a client that goes away does not keep them.
class ClientSession {
 public:
  explicit ClientSession(std::shared_ptr<ServerState> state);
  ~ClientSession();
  ClientSession(const ClientSession&) = delete;
  ClientSession& operator=(const ClientSession&) = delete;

  // Runs one request frame and returns the reply frame: an error the request caused (an unknown
  // object, method or type, arguments that do not decode as the method's, a timeout that is no
  // number) is a reply. Throws ProcessError only for a frame that is no request at all: the
  // connection's peer does not speak the protocol, and the server hangs up.
  std::string dispatch(const std::string& request);

 private:
  std::shared_ptr<ServerState> state_;
  uint64_t client_;
  std::multiset<uint64_t> held_;  // the locks this client holds, by object id
};

// The client's side: the payload of an ok reply frame, or the reply's error thrown as the
// proxy's caller expects it (KeyError, std::out_of_range, TimeoutError, BrokenBarrierError, or a
// ProcessError naming `method`). A frame that is no reply (a damaged or hostile server) is a
// ProcessError too.
std::string reply_payload(const std::string& reply, const std::string& method);

}  // namespace multiproc::detail
