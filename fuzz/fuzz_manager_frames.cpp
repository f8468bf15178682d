// Fuzz target: the manager's frame reader (src/managers/frames.hpp), which the server runs on
// every client's bytes and a proxy on its server's replies: a u64 length, then that many bytes,
// read ahead in one recv. The first byte picks the frame limit (a small one, or the server's
// 1 GiB); the rest is what the peer sent, written into a socket pair whose sending side is then
// shut down. Frames must come out as they went in, and the stream must end in EOFError (between
// frames) or a ProcessError (a broken or oversized frame), never a crash, hang or large
// allocation (a length announced is not memory taken).
#include <sys/socket.h>
#include <unistd.h>

#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <string>

#include <multiproc/connection.hpp>

#include "managers/frames.hpp"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size == 0) return 0;
  int fds[2];
  if (::socketpair(AF_UNIX, SOCK_STREAM, 0, fds) != 0) return 0;
  // Inputs are small (libFuzzer's -max_len): they fit in the socket's buffer.
  if (size > 1) (void)!::write(fds[1], data + 1, size - 1);
  ::shutdown(fds[1], SHUT_WR);
  const uint64_t limit = data[0] % 2 ? 64 : uint64_t{1} << 30;
  multiproc::detail::FrameReader in(fds[0]);
  size_t at = 1;  // where the next frame starts in the input
  try {
    for (;;) {
      const std::string frame = in.next(limit);
      // What came out is what went in: the length, then exactly those bytes.
      uint64_t len = 0;
      if (size - at < sizeof len) std::abort();
      std::memcpy(&len, data + at, sizeof len);
      at += sizeof len;
      if (len != frame.size() || size - at < len || std::memcmp(data + at, frame.data(), len) != 0)
        std::abort();
      at += len;
    }
  } catch (const multiproc::EOFError&) {
    if (at != size) std::abort();  // EOF only between frames
  } catch (const multiproc::ProcessError&) {
  }
  ::close(fds[0]);
  ::close(fds[1]);
  return 0;
}
