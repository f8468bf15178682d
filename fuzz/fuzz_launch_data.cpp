// Fuzz target: what a spawned or forkserver child reads before it runs anything (child.cpp,
// launch_env.hpp, forkserver_protocol.hpp). The first byte picks the decoder:
// - the MULTIPROC_LAUNCH variable (read_launch_env): a launch kind and three descriptors, or none;
// - the ChildPayload a child decodes from its memfd or from the fork server's request, and the
//   code addresses in it resolved (never called: they name the program's own functions);
// - a fork server request read from a socket: its length header, then that many bytes.
// Each must give a value or a ProcessError (a refused request for the socket), never crash.
#include <sys/socket.h>
#include <unistd.h>

#include <cstdint>
#include <cstdlib>
#include <string>

#include <multiproc/detail/child.hpp>
#include <multiproc/detail/task.hpp>
#include <multiproc/errors.hpp>
#include <multiproc/serialization.hpp>
#include "process/forkserver_protocol.hpp"
#include "process/launch_env.hpp"

namespace {

namespace d = multiproc::detail;

void launch_env(const char* p, size_t n) {
  const std::string value(p, n);  // setenv stops at a NUL, as the kernel's environment would
  setenv(d::kLaunchVar, value.c_str(), 1);
  const d::LaunchEnv env = d::read_launch_env();
  if (std::getenv(d::kLaunchVar)) std::abort();  // a child must not pass it on to its own
  (void)env;
}

void child_payload(const char* p, size_t n) {
  try {
    const auto payload = d::load<d::ChildPayload>(std::string_view(p, n));
    (void)d::resolve_task(payload.code);
  } catch (const multiproc::ProcessError&) {
  }
}

void forkserver_request(const char* p, size_t n) {
  int sv[2];
  if (::socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv) != 0) return;
  // Small inputs fit in the socket's buffer: the whole request is written before it is read.
  (void)!::write(sv[0], p, n);
  ::shutdown(sv[0], SHUT_WR);
  uint64_t len = 0;
  int fd = -1;
  if (d::recv_request_header(sv[1], &len, &fd) && len < (1ULL << 34)) {
    if (len <= n) {  // the server allocates len bytes: keep the harness's memory bounded
      std::string payload(len, '\0');
      if (d::read_exact(sv[1], payload.data(), len)) child_payload(payload.data(), len);
    }
  }
  if (fd >= 0) ::close(fd);
  ::close(sv[0]);
  ::close(sv[1]);
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size == 0) return 0;
  const char* p = reinterpret_cast<const char*>(data) + 1;
  const size_t n = size - 1;
  switch (data[0] % 3) {
    case 0:
      launch_env(p, n);
      break;
    case 1:
      child_payload(p, n);
      break;
    default:
      forkserver_request(p, n);
      break;
  }
  return 0;
}
