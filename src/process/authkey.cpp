// The process auth key (Python's current_process().authkey): 32 random bytes made once per
// program, before main(), so that a fork server started later has it too, and inherited by every
// process the program starts (fork: memory; spawn and forkserver: MULTIPROC_AUTHKEY in the launch
// environment, in hex). Never written to disk. The connection layer proves it with HMAC; the key
// itself only needs the kernel's randomness, so the process part owns it.
#include <multiproc/process.hpp>

#include <sys/random.h>
#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <system_error>

#include <multiproc/errors.hpp>

namespace multiproc {
namespace {

constexpr const char* kAuthkeyVar = "MULTIPROC_AUTHKEY";

std::string to_hex(const std::string& bytes) {
  static constexpr char digits[] = "0123456789abcdef";
  std::string out;
  out.reserve(bytes.size() * 2);
  for (unsigned char c : bytes) {
    out.push_back(digits[c >> 4]);
    out.push_back(digits[c & 15]);
  }
  return out;
}

bool from_hex(const char* s, std::string& out) {
  auto val = [](char c) -> int {
    if (c >= '0' && c <= '9') return c - '0';
    if (c >= 'a' && c <= 'f') return c - 'a' + 10;
    return -1;
  };
  size_t n = std::strlen(s);
  if (n == 0 || n % 2 != 0) return false;
  out.clear();
  for (size_t i = 0; i < n; i += 2) {
    int a = val(s[i]), b = val(s[i + 1]);
    if (a < 0 || b < 0) return false;
    out.push_back(static_cast<char>(a * 16 + b));
  }
  return true;
}

std::string make_authkey() {
  std::string key;
  if (const char* v = std::getenv(kAuthkeyVar); v && from_hex(v, key) && key.size() >= 16)
    return key;
  key.assign(32, '\0');
  size_t got = 0;
  while (got < key.size()) {
    ssize_t n = getrandom(key.data() + got, key.size() - got, 0);
    if (n < 0) {
      if (errno == EINTR) continue;
      throw ProcessError(std::string("cannot make the process auth key: getrandom: ") +
                         std::generic_category().message(errno));
    }
    got += static_cast<size_t>(n);
  }
  // Runs once, before main() (g_authkey_made_before_main): no other thread reads the environment.
  ::setenv(kAuthkeyVar, to_hex(key).c_str(), 1);  // NOLINT(concurrency-mt-unsafe)
  return key;
}

[[maybe_unused]] const bool g_authkey_made_before_main = (process_authkey(), true);

}  // namespace

const std::string& process_authkey() {
  static const std::string key = make_authkey();
  return key;
}

}  // namespace multiproc
