// Fuzz target: item decoding (serialization.hpp's load, archive.hpp's InputArchive) for the kinds
// of types queue items, task arguments and results are made of. The first byte picks the type,
// the rest is decoded as one. A decode must give a value or a ProcessError: any other exception,
// a crash or a sanitizer report is a finding. A value that decodes must encode and decode back to
// itself, so the decoder never accepts bytes it reads differently from what the encoder meant.
#include <array>
#include <cstdint>
#include <cstdlib>
#include <map>
#include <optional>
#include <set>
#include <string>
#include <tuple>
#include <unordered_map>
#include <variant>
#include <vector>

#include <cereal/types/array.hpp>
#include <cereal/types/map.hpp>
#include <cereal/types/optional.hpp>
#include <cereal/types/set.hpp>
#include <cereal/types/string.hpp>
#include <cereal/types/tuple.hpp>
#include <cereal/types/unordered_map.hpp>
#include <cereal/types/utility.hpp>
#include <cereal/types/variant.hpp>
#include <cereal/types/vector.hpp>

#include <multiproc/serialization.hpp>

namespace {

namespace d = multiproc::detail;

// A user type with a cereal serialize of its own.
struct Record {
  std::string name;
  std::vector<double> values;
  std::optional<int> id;
  bool flag = false;
  template <class Archive>
  void serialize(Archive& ar) {
    ar(name, values, id, flag);
  }
  bool operator==(const Record&) const = default;
};

// A plain-bytes aggregate (copied with memcpy).
struct Point {
  int x;
  double y;
  bool operator==(const Point&) const = default;
};

struct Empty {
  template <class Archive>
  void serialize(Archive&) {}
  bool operator==(const Empty&) const = default;
};

// by_value: unordered containers encode in iteration order, which need not survive a round trip,
// so they are compared as values; the others are compared as encodings (NaN != NaN).
template <class T, bool by_value = false>
void check(std::string_view bytes) {
  T value;
  try {
    value = d::load<T>(bytes);
  } catch (const multiproc::ProcessError&) {
    return;
  }
  std::string again;
  d::dump(again, value);
  if constexpr (by_value) {
    if (!(d::load<T>(std::string_view(again)) == value)) std::abort();
    return;
  }
  std::string third;
  d::dump(third, d::load<T>(std::string_view(again)));
  if (again != third) std::abort();
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size == 0) return 0;
  const std::string_view bytes(reinterpret_cast<const char*>(data) + 1, size - 1);
  switch (data[0] % 20) {
    case 0:
      check<std::string>(bytes);
      break;
    case 1:
      check<std::vector<int>>(bytes);
      break;
    case 2:
      check<std::vector<std::string>>(bytes);
      break;
    case 3:
      check<std::map<std::string, int>>(bytes);
      break;
    case 4:
      check<std::variant<int, std::string, std::vector<double>>>(bytes);
      break;
    case 5:
      check<std::optional<std::string>>(bytes);
      break;
    case 6:
      check<std::map<int, std::vector<std::optional<std::string>>>>(bytes);
      break;
    case 7:
      check<Record>(bytes);
      break;
    case 8:
      check<std::vector<Record>>(bytes);
      break;
    case 9:
      check<std::tuple<int, std::string, bool>>(bytes);
      break;
    case 10:
      check<bool>(bytes);
      break;
    case 11:
      check<std::vector<bool>>(bytes);
      break;
    case 12:
      check<std::array<bool, 4>>(bytes);
      break;
    case 13:
      check<std::set<std::string>>(bytes);
      break;
    case 14:
      check<std::multimap<int, std::string>>(bytes);
      break;
    case 15:
      check<std::unordered_map<std::string, std::vector<int>>, true>(bytes);
      break;
    case 16:
      check<std::vector<Point>>(bytes);
      break;
    case 17:
      check<std::vector<Empty>>(bytes);
      break;
    case 18:
      check<std::pair<std::variant<std::monostate, Point, Record>, std::multiset<int>>>(bytes);
      break;
    default:
      check<std::vector<std::vector<std::string>>>(bytes);
      break;
  }
  return 0;
}
