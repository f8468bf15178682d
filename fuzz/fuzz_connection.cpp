// Fuzz target: what a Connection reads from its peer (src/connection): the frame reader
// (recv_bytes: u64 length, then that many bytes), typed messages (recv<T>: a type tag, then the
// value) and both sides of the HMAC handshake (answer_challenge, deliver_challenge). The first
// byte picks the reader; the rest is what the peer sent, written raw into a socket pair, then
// the peer's side is shut down. Every read must give a message or a ProcessError (EOFError,
// AuthenticationError, a malformed frame), never crash or hang.
#include <sys/socket.h>
#include <unistd.h>

#include <cstdint>
#include <map>
#include <string>
#include <vector>

#include <cereal/types/map.hpp>
#include <cereal/types/string.hpp>
#include <cereal/types/vector.hpp>

#include <multiproc/connection.hpp>

namespace {

const std::string kKey = "fuzz-auth-key";

template <class F>
void until_error(F read) {
  for (int i = 0; i < 64; ++i) {
    try {
      read();
    } catch (const multiproc::ProcessError&) {
      return;
    }
  }
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size == 0) return 0;
  auto pipe = multiproc::Pipe();
  multiproc::Connection& ours = pipe.first;
  multiproc::Connection& peer = pipe.second;
  // Inputs are small (libFuzzer's -max_len): they fit in the socket's buffer.
  if (size > 1) (void)!::write(peer.fileno(), data + 1, size - 1);
  ::shutdown(peer.fileno(), SHUT_WR);
  switch (data[0] % 6) {
    case 0:
      until_error([&] { (void)ours.recv_bytes(); });
      break;
    case 1:
      ours.max_message_size(64);
      until_error([&] { (void)ours.recv_bytes(); });
      break;
    case 2:
      until_error([&] { (void)ours.recv<std::string>(); });
      break;
    case 3:
      until_error([&] { (void)ours.recv<std::map<int, std::vector<std::string>>>(); });
      break;
    case 4:
      until_error([&] { multiproc::answer_challenge(ours, kKey); });
      break;
    default:
      until_error([&] { multiproc::deliver_challenge(ours, kKey); });
      break;
  }
  return 0;
}
