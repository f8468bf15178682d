// Must compile: what may be copied as bytes. Aggregates of plain values (arrays, std::array,
// nested aggregates, enums, durations and std::complex included) are checked member by member and
// accepted; a class that cannot be checked is accepted once the user opts in with copy_as_bytes.
#include <array>
#include <chrono>
#include <complex>
#include <cstdint>
#include <string>

#include <multiproc/serialization.hpp>

namespace {
enum class Kind : std::uint8_t { a, b };
struct Point {
  double x, y;
};
struct Record {
  int id;
  char name[16];
  Point corners[2][2];
  std::array<float, 3> rgb;
  Kind kind;
  std::chrono::milliseconds age;
  std::complex<float> z;
  bool flag;
};
class Fixed {
 public:
  Fixed() = default;
  explicit Fixed(long raw) : raw_(raw) {}
  long raw() const { return raw_; }

 private:
  long raw_ = 0;
};
}  // namespace

template <>
struct multiproc::copy_as_bytes<Fixed> : std::true_type {};

static_assert(multiproc::detail::is_plain_bytes_v<Record>);
static_assert(multiproc::detail::is_plain_bytes_v<Fixed>);

void send(std::string& out) {
  multiproc::detail::dump(out, Record{});
  multiproc::detail::dump(out, Fixed(3));
  const char* p = out.data();
  (void)multiproc::detail::load<Record>(p, out.data() + out.size());
  (void)multiproc::detail::load<Fixed>(p, out.data() + out.size());
}
