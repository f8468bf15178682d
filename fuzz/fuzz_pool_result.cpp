// Fuzz target: the parent's side of a pool result (pool_jobs.hpp decode_chunk), the payload a
// worker puts after its ResultHeader. The first byte picks the result type and the second the
// chunk's call count; the rest is the payload. Decoding must give values and errors for at most
// that many calls, or a ProcessError.
#include <cstdint>
#include <cstdlib>
#include <map>
#include <optional>
#include <string>
#include <vector>

#include <cereal/types/map.hpp>
#include <cereal/types/optional.hpp>
#include <cereal/types/string.hpp>
#include <cereal/types/vector.hpp>

#include <multiproc/detail/pool_jobs.hpp>

namespace {

namespace d = multiproc::detail;

template <class R>
void decode(const char* p, size_t n, size_t count) {
  size_t calls = 0;
  try {
    d::decode_chunk<R>(
        p, n, count, std::optional<size_t>(0), [&](size_t i, auto&&) { calls += i < count; },
        [&](size_t i, std::exception_ptr e) {
          calls += i < count;
          if (!e) std::abort();
        });
  } catch (const multiproc::ProcessError&) {
    return;
  }
  if (calls > count) std::abort();
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size < 2) return 0;
  const char* p = reinterpret_cast<const char*>(data) + 2;
  const size_t n = size - 2;
  const size_t count = data[1];
  switch (data[0] % 5) {
    case 0:
      decode<int>(p, n, count);
      break;
    case 1:
      decode<void>(p, n, count);
      break;
    case 2:
      decode<std::string>(p, n, count);
      break;
    case 3:
      decode<std::map<std::string, std::vector<double>>>(p, n, count);
      break;
    default:
      decode<std::optional<std::vector<std::string>>>(p, n, count);
      break;
  }
  return 0;
}
