// The serialization layer: what is transferable (compile-time), round trips of every supported
// kind through detail::dump / detail::load, the exact encoding of plain-bytes types, and
// malformed input that must throw ProcessError rather than crash or allocate wildly.
#include <gtest/gtest.h>

#include <array>
#include <chrono>
#include <complex>
#include <cstdint>
#include <cstring>
#include <deque>
#include <functional>
#include <list>
#include <map>
#include <memory>
#include <optional>
#include <set>
#include <span>
#include <string>
#include <string_view>
#include <tuple>
#include <unordered_map>
#include <unordered_set>
#include <utility>
#include <variant>
#include <vector>

#include <cereal/cereal.hpp>
#include <multiproc/errors.hpp>
#include <multiproc/serialization.hpp>

// A plain-bytes type in the archives' own namespace, as multiproc's internals will have: asking
// whether it has cereal functions finds the plain-bytes overloads by ADL, which must not make the
// question depend on its own answer.
namespace multiproc::detail {
struct SerializationTestHeader {
  std::uint32_t kind;
  std::uint64_t length;
  bool operator==(const SerializationTestHeader&) const = default;
};
}  // namespace multiproc::detail

namespace {

namespace mp = multiproc;
using mp::detail::dump;
using mp::detail::load;

// --- types under test ---------------------------------------------------------------------------

// Trivially copyable, no serialize: plain bytes.
struct Pod {
  std::int32_t id;
  double weight;
  char tag[6];
  bool operator==(const Pod&) const = default;
};

// Member serialize, with names (CEREAL_NVP is accepted and dropped).
struct Person {
  std::string name;
  int age = 0;
  std::vector<std::string> tags;
  std::optional<Pod> pod;
  template <class Archive>
  void serialize(Archive& ar) {
    ar(CEREAL_NVP(name), CEREAL_NVP(age), CEREAL_NVP(tags), CEREAL_NVP(pod));
  }
  bool operator==(const Person&) const = default;
};

// Split save/load, like multiproc's handle types; keeps a derived field out of the encoding.
class Counter {
 public:
  Counter() = default;
  explicit Counter(std::int64_t start) : value_(start), doubled_(start * 2) {}
  std::int64_t value() const { return value_; }
  std::int64_t doubled() const { return doubled_; }
  template <class Archive>
  void save(Archive& ar) const {
    ar(value_);
  }
  template <class Archive>
  void load(Archive& ar) {
    ar(value_);
    doubled_ = value_ * 2;
  }

 private:
  std::int64_t value_ = 0;
  std::int64_t doubled_ = 0;
};

// Free serialize for a trivially copyable type: its serialize wins over plain bytes.
struct Cached {
  int value = 0;
  int cache = 0;  // not sent
};
template <class Archive>
void serialize(Archive& ar, Cached& c) {
  ar(c.value);
}

// Free save/load pair.
struct Celsius {
  double degrees = 0;
};
template <class Archive>
void save(Archive& ar, const Celsius& c) {
  ar(c.degrees);
}
template <class Archive>
void load(Archive& ar, Celsius& c) {
  ar(c.degrees);
}

enum class Color : std::uint8_t { red = 1, green = 2, blue = 3 };
enum Plain { kZero, kOne, kTwo };

struct Empty {};

// Not transferable.
struct NoSerialize {
  std::string s;  // not trivially copyable, no serialize
};
struct HoldsRef {
  int& r;
};
struct NoDefaultCtor {
  explicit NoDefaultCtor(int) {}
  template <class Archive>
  void serialize(Archive&) {}
};

// --- compile-time answers -----------------------------------------------------------------------

// Positive.
static_assert(mp::is_transferable_v<int>);
static_assert(mp::is_transferable_v<bool>);
static_assert(mp::is_transferable_v<double>);
static_assert(mp::is_transferable_v<const long>);
static_assert(mp::is_transferable_v<Color>);
static_assert(mp::is_transferable_v<Plain>);
static_assert(mp::is_transferable_v<std::byte>);
static_assert(mp::is_transferable_v<Pod>);
static_assert(mp::is_transferable_v<Empty>);
static_assert(mp::is_transferable_v<std::string>);
static_assert(mp::is_transferable_v<std::wstring>);
static_assert(mp::is_transferable_v<std::vector<int>>);
static_assert(mp::is_transferable_v<std::vector<Pod>>);
static_assert(mp::is_transferable_v<std::vector<bool>>);
static_assert(mp::is_transferable_v<std::array<Pod, 3>>);
static_assert(mp::is_transferable_v<std::deque<std::string>>);
static_assert(mp::is_transferable_v<std::list<Person>>);
static_assert(mp::is_transferable_v<std::map<std::string, std::vector<int>>>);
static_assert(mp::is_transferable_v<std::multimap<int, int>>);
static_assert(mp::is_transferable_v<std::unordered_map<std::string, Pod>>);
static_assert(mp::is_transferable_v<std::set<std::string>>);
static_assert(mp::is_transferable_v<std::unordered_set<int>>);
static_assert(mp::is_transferable_v<std::optional<std::string>>);
static_assert(mp::is_transferable_v<std::variant<std::monostate, int, std::string>>);
static_assert(mp::is_transferable_v<std::pair<int, std::string>>);
static_assert(mp::is_transferable_v<std::tuple<int, Pod, std::string>>);
static_assert(mp::is_transferable_v<std::tuple<>>);
static_assert(mp::is_transferable_v<std::complex<double>>);
static_assert(mp::is_transferable_v<std::chrono::milliseconds>);
static_assert(mp::is_transferable_v<std::chrono::steady_clock::time_point>);
static_assert(mp::is_transferable_v<Person>);
static_assert(mp::is_transferable_v<Counter>);
static_assert(mp::is_transferable_v<Cached>);
static_assert(mp::is_transferable_v<Celsius>);
static_assert(mp::is_transferable_v<
              std::map<std::string, std::vector<std::optional<std::pair<int, std::string>>>>>);
static_assert(mp::Transferable<const std::string&>);
static_assert(mp::Transferable<Pod&&>);

// Negative.
static_assert(!mp::is_transferable_v<int*>);
static_assert(!mp::is_transferable_v<const char*>);
static_assert(!mp::is_transferable_v<void (*)()>);
static_assert(!mp::is_transferable_v<int Pod::*>);
static_assert(!mp::is_transferable_v<std::nullptr_t>);
static_assert(!mp::is_transferable_v<int&>);
static_assert(!mp::is_transferable_v<int[4]>);
static_assert(!mp::is_transferable_v<void>);
static_assert(!mp::is_transferable_v<std::string_view>);
static_assert(!mp::is_transferable_v<std::span<int>>);
static_assert(!mp::is_transferable_v<std::reference_wrapper<int>>);
static_assert(!mp::is_transferable_v<std::function<void()>>);
static_assert(!mp::is_transferable_v<std::unique_ptr<int>>);
static_assert(!mp::is_transferable_v<std::shared_ptr<int>>);
static_assert(!mp::is_transferable_v<NoSerialize>);
static_assert(!mp::is_transferable_v<HoldsRef>);
static_assert(!mp::is_transferable_v<NoDefaultCtor>);
static_assert(!mp::is_transferable_v<std::vector<int*>>);
static_assert(!mp::is_transferable_v<std::map<std::string, std::string_view>>);
static_assert(!mp::is_transferable_v<std::optional<std::function<int()>>>);
static_assert(!mp::is_transferable_v<std::variant<int, const char*>>);
static_assert(!mp::is_transferable_v<std::pair<int, NoSerialize>>);
static_assert(!mp::is_transferable_v<std::tuple<int, std::unique_ptr<int>>>);
static_assert(!mp::Transferable<int*&>);

// Plain bytes.
static_assert(mp::detail::is_plain_bytes_v<int>);
static_assert(mp::detail::is_plain_bytes_v<Pod>);
static_assert(mp::detail::is_plain_bytes_v<Color>);
static_assert(mp::detail::is_plain_bytes_v<Empty>);
static_assert(!mp::detail::is_plain_bytes_v<Cached>);  // has serialize of its own
static_assert(!mp::detail::is_plain_bytes_v<int*>);
static_assert(!mp::detail::is_plain_bytes_v<std::string_view>);
static_assert(!mp::detail::is_plain_bytes_v<std::array<int, 2>>);
static_assert(!mp::detail::is_plain_bytes_v<std::optional<int>>);
static_assert(!mp::detail::is_plain_bytes_v<std::pair<int, int>>);
static_assert(!mp::detail::is_plain_bytes_v<std::chrono::seconds>);
static_assert(!mp::detail::is_plain_bytes_v<std::monostate>);

// require_transferable is usable in constant expressions for transferable types.
static_assert((mp::detail::require_transferable<std::vector<Pod>>(), true));
static_assert((mp::detail::require_transferable<const std::string&>(), true));

// --- helpers ------------------------------------------------------------------------------------

template <class T>
std::string encode(const T& value) {
  std::string out;
  dump(out, value);
  return out;
}

template <class T>
T round_trip(const T& value) {
  return load<T>(encode(value));
}

template <class T>
void expect_round_trip(const T& value) {
  EXPECT_EQ(round_trip(value), value);
}

// A lambda capturing local state by reference is trivially copyable, but it has no default
// constructor, so it is not mistaken for plain bytes.
TEST(Serialization, CapturingLambdaIsNotTransferable) {
  int n = 1;
  auto by_ref = [&n](int x) { return x + n; };
  auto by_value = [n](int x) { return x + n; };
  static_assert(std::is_trivially_copyable_v<decltype(by_ref)>);
  static_assert(!mp::is_transferable_v<decltype(by_ref)>);
  static_assert(!mp::is_transferable_v<decltype(by_value)>);
  EXPECT_EQ(by_ref(1) + by_value(1), 4);
}

// --- round trips --------------------------------------------------------------------------------

TEST(Serialization, Arithmetic) {
  expect_round_trip(42);
  expect_round_trip(-7LL);
  expect_round_trip(std::uint8_t{255});
  expect_round_trip(3.25);
  expect_round_trip(1.5f);
  expect_round_trip('x');
  expect_round_trip(true);
  expect_round_trip(false);
  expect_round_trip(static_cast<long double>(1) / 3);
}

TEST(Serialization, Enums) {
  expect_round_trip(Color::blue);
  expect_round_trip(kTwo);
  expect_round_trip(std::byte{0xab});
  expect_round_trip(std::vector<Color>{Color::red, Color::green, Color::blue});
  expect_round_trip(std::map<Color, std::string>{{Color::red, "r"}, {Color::blue, "b"}});
}

TEST(Serialization, Strings) {
  expect_round_trip(std::string("hello, world"));
  expect_round_trip(std::string(""));
  expect_round_trip(std::string("embedded\0nul", 12));
  expect_round_trip(std::wstring(L"wide"));
}

TEST(Serialization, SequenceContainers) {
  expect_round_trip(std::vector<int>{1, 2, 3});
  expect_round_trip(std::vector<double>{});
  expect_round_trip(std::vector<bool>{true, false, true, true});
  expect_round_trip(std::vector<std::string>{"a", "", "ccc"});
  expect_round_trip(std::array<int, 4>{1, 2, 3, 4});
  expect_round_trip(std::array<std::string, 2>{"x", "y"});
  expect_round_trip(std::deque<int>{5, 6, 7});
  expect_round_trip(std::list<std::string>{"l1", "l2"});
  expect_round_trip(std::vector<std::vector<int>>{{1}, {}, {2, 3}});
}

TEST(Serialization, AssociativeContainers) {
  expect_round_trip(std::map<std::string, int>{{"a", 1}, {"b", 2}});
  expect_round_trip(std::multimap<int, int>{{1, 1}, {1, 2}, {2, 3}});
  expect_round_trip(std::unordered_map<std::string, double>{{"pi", 3.14}, {"e", 2.71}});
  expect_round_trip(std::set<std::string>{"x", "y", "z"});
  expect_round_trip(std::multiset<int>{1, 1, 2});
  expect_round_trip(std::unordered_set<int>{4, 5, 6});
  expect_round_trip(std::unordered_multiset<int>{4, 4});
}

// Equivalent keys keep the order they were inserted in (cereal 1.3.2 alone reverses them).
TEST(Serialization, MultiContainersKeepOrderOfEquivalentKeys) {
  const std::multimap<int, std::string> mm{{1, "a"}, {1, "b"}, {1, "c"}, {0, "z"}, {2, "x"}};
  const auto mm_back = round_trip(mm);
  EXPECT_EQ(std::vector(mm_back.begin(), mm_back.end()), std::vector(mm.begin(), mm.end()));

  struct ByFirst {
    bool operator()(const std::pair<int, int>& a, const std::pair<int, int>& b) const {
      return a.first < b.first;
    }
  };
  const std::multiset<std::pair<int, int>, ByFirst> ms{{1, 10}, {1, 11}, {0, 5}, {1, 12}};
  const auto ms_back = round_trip(ms);
  EXPECT_EQ(std::vector(ms_back.begin(), ms_back.end()), std::vector(ms.begin(), ms.end()));

  std::unordered_multimap<int, int> umm;
  for (int i = 0; i < 5; ++i) umm.emplace(7, i);
  const auto umm_back = round_trip(umm);
  const auto [b1, e1] = umm.equal_range(7);
  const auto [b2, e2] = umm_back.equal_range(7);
  EXPECT_EQ(std::vector(b2, e2), std::vector(b1, e1));
}

TEST(Serialization, EmptyContainers) {
  expect_round_trip(std::vector<int>{});
  expect_round_trip(std::vector<Pod>{});
  expect_round_trip(std::vector<std::string>{});
  expect_round_trip(std::map<int, int>{});
  expect_round_trip(std::unordered_map<std::string, std::string>{});
  expect_round_trip(std::set<int>{});
  expect_round_trip(std::deque<int>{});
  expect_round_trip(std::list<int>{});
  expect_round_trip(std::optional<int>{});
  expect_round_trip(std::tuple<>{});
  // An empty container costs only its 8-byte count.
  EXPECT_EQ(encode(std::vector<Pod>{}).size(), 8u);
  EXPECT_EQ(encode(std::string{}).size(), 8u);
}

TEST(Serialization, OptionalPairTuple) {
  expect_round_trip(std::optional<std::string>("x"));
  expect_round_trip(std::optional<std::string>());
  expect_round_trip(std::pair<int, std::string>(1, "one"));
  expect_round_trip(std::tuple<int, double, std::string, Pod>(1, 2.5, "t", Pod{3, 4.0, "tag"}));
  expect_round_trip(std::complex<double>(1.0, -2.0));
  expect_round_trip(std::chrono::milliseconds(1234));
  const auto now = std::chrono::steady_clock::now();
  expect_round_trip(now);
}

TEST(Serialization, Variant) {
  using V = std::variant<std::monostate, int, std::string, Pod, std::vector<double>>;
  expect_round_trip(V{});
  expect_round_trip(V{7});
  expect_round_trip(V{std::string("seven")});
  expect_round_trip(V{Pod{1, 2.0, "p"}});
  expect_round_trip(V{std::vector<double>{1.0, 2.0}});
  EXPECT_EQ(round_trip(V{std::string("s")}).index(), 2u);
}

TEST(Serialization, Nested) {
  using Deep = std::map<std::string, std::vector<std::optional<std::pair<int, std::string>>>>;
  Deep deep;
  deep["first"] = {std::pair<int, std::string>(1, "one"), std::nullopt,
                   std::pair<int, std::string>(2, "")};
  deep["empty"] = {};
  deep[""] = {std::nullopt};
  expect_round_trip(deep);
}

TEST(Serialization, MemberSerialize) {
  Person p{"Ada", 36, {"math", "engines"}, Pod{9, 1.5, "pod"}};
  expect_round_trip(p);
  expect_round_trip(Person{});
  expect_round_trip(std::vector<Person>{p, Person{}, p});
}

TEST(Serialization, SaveLoad) {
  const Counter c(21);
  const Counter back = round_trip(c);
  EXPECT_EQ(back.value(), 21);
  EXPECT_EQ(back.doubled(), 42);  // recomputed by load, not sent
  EXPECT_EQ(encode(c).size(), sizeof(std::int64_t));

  const Celsius t{36.6};
  EXPECT_EQ(round_trip(t).degrees, 36.6);
  EXPECT_EQ(round_trip(std::map<int, Counter>{{1, Counter(5)}}).at(1).doubled(), 10);
}

TEST(Serialization, FreeSerializeBeatsPlainBytes) {
  const Cached c{5, 99};
  EXPECT_EQ(encode(c).size(), sizeof(int));  // only value is written
  const Cached back = round_trip(c);
  EXPECT_EQ(back.value, 5);
  EXPECT_EQ(back.cache, 0);
}

TEST(Serialization, PlainBytesTopLevel) {
  const Pod pod{7, 2.5, "abcde"};
  const std::string bytes = encode(pod);
  ASSERT_EQ(bytes.size(), sizeof(Pod));
  EXPECT_EQ(std::memcmp(bytes.data(), &pod, sizeof(Pod)), 0);
  EXPECT_EQ(load<Pod>(bytes), pod);

  EXPECT_EQ(encode(std::int64_t{1}).size(), sizeof(std::int64_t));
  EXPECT_EQ(encode(true).size(), sizeof(bool));
  EXPECT_EQ(encode(Color::green).size(), sizeof(Color));
  EXPECT_EQ(encode(Empty{}).size(), sizeof(Empty));
  round_trip(Empty{});
}

TEST(Serialization, PlainBytesNested) {
  std::vector<Pod> pods;
  for (int i = 0; i < 1000; ++i) pods.push_back(Pod{i, i * 0.5, "nest"});
  const std::string bytes = encode(pods);
  // One count, then the elements back to back (the bulk copy).
  EXPECT_EQ(bytes.size(), 8 + pods.size() * sizeof(Pod));
  EXPECT_EQ(std::memcmp(bytes.data() + 8, pods.data(), pods.size() * sizeof(Pod)), 0);
  EXPECT_EQ(load<std::vector<Pod>>(bytes), pods);

  expect_round_trip(std::map<std::string, Pod>{{"k", Pod{1, 1.0, "v"}}});
  expect_round_trip(std::optional<Pod>(Pod{2, 2.0, "o"}));
  expect_round_trip(std::array<Pod, 2>{Pod{1, 1, "a"}, Pod{2, 2, "b"}});
  expect_round_trip(std::pair<Pod, std::vector<Pod>>({3, 3, "p"}, {{4, 4, "q"}}));
}

TEST(Serialization, PlainBytesInTheArchivesNamespace) {
  using Header = mp::detail::SerializationTestHeader;
  static_assert(mp::detail::is_plain_bytes_v<Header>);
  static_assert(mp::is_transferable_v<std::vector<Header>>);
  EXPECT_EQ(encode(Header{1, 2}).size(), sizeof(Header));
  expect_round_trip(Header{1, 2});
  expect_round_trip(std::vector<Header>{{1, 2}, {3, 4}});
  expect_round_trip(std::optional<Header>(Header{5, 6}));
  expect_round_trip(std::map<int, Header>{{7, {8, 9}}});
}

TEST(Serialization, SeveralValuesInOneBuffer) {
  std::string buf;
  dump(buf, 1);
  dump(buf, std::string("two"));
  dump(buf, Pod{3, 3.0, "3"});
  dump(buf, std::vector<int>{4, 4});
  const char* p = buf.data();
  const char* end = buf.data() + buf.size();
  EXPECT_EQ(load<int>(p, end), 1);
  EXPECT_EQ(load<std::string>(p, end), "two");
  EXPECT_EQ(load<Pod>(p, end), (Pod{3, 3.0, "3"}));
  EXPECT_EQ(load<std::vector<int>>(p, end), (std::vector<int>{4, 4}));
  EXPECT_EQ(p, end);
}

TEST(Serialization, LargeString) {
  std::string big(64u << 20, '\0');
  for (std::size_t i = 0; i < big.size(); i += 4096) big[i] = static_cast<char>(i / 4096);
  big.back() = 'z';
  const std::string bytes = encode(big);
  EXPECT_EQ(bytes.size(), 8 + big.size());
  const std::string back = load<std::string>(bytes);
  EXPECT_TRUE(back == big);
}

// --- malformed input ----------------------------------------------------------------------------

// Every strict prefix of a valid encoding must be refused with ProcessError.
template <class T>
void expect_every_truncation_throws(const T& value) {
  const std::string bytes = encode(value);
  for (std::size_t n = 0; n < bytes.size(); ++n) {
    EXPECT_THROW(load<T>(std::string_view(bytes.data(), n)), mp::ProcessError)
        << "prefix of " << n << " of " << bytes.size() << " bytes";
  }
}

TEST(SerializationMalformed, Truncated) {
  expect_every_truncation_throws(123456789);
  expect_every_truncation_throws(Pod{1, 2, "xy"});
  expect_every_truncation_throws(std::string("truncate me"));
  expect_every_truncation_throws(std::vector<Pod>{{1, 1, "a"}, {2, 2, "b"}});
  expect_every_truncation_throws(std::vector<std::string>{"ab", "cd"});
  expect_every_truncation_throws(Person{"Ada", 36, {"x"}, Pod{1, 1, "p"}});
  expect_every_truncation_throws(
      std::map<std::string, std::vector<std::optional<std::pair<int, std::string>>>>{
          {"k", {std::pair<int, std::string>(1, "v"), std::nullopt}}});
  expect_every_truncation_throws(std::variant<int, std::string>(std::string("v")));
}

TEST(SerializationMalformed, TrailingBytes) {
  std::string bytes = encode(std::string("abc"));
  bytes.push_back('!');
  EXPECT_THROW(load<std::string>(bytes), mp::ProcessError);
  EXPECT_THROW(load<int>(std::string(5, '\0')), mp::ProcessError);
}

// A length prefix that claims far more than the buffer holds is refused before any allocation.
TEST(SerializationMalformed, HugeLengthPrefix) {
  for (const std::uint64_t claimed :
       {std::uint64_t{1} << 62, ~std::uint64_t{0}, std::uint64_t{1} << 40, std::uint64_t{100}}) {
    std::string bytes(reinterpret_cast<const char*>(&claimed), sizeof(claimed));
    bytes += "abc";
    EXPECT_THROW(load<std::string>(bytes), mp::ProcessError) << claimed;
    EXPECT_THROW(load<std::vector<int>>(bytes), mp::ProcessError) << claimed;
    EXPECT_THROW(load<std::vector<Pod>>(bytes), mp::ProcessError) << claimed;
    EXPECT_THROW(load<std::vector<std::string>>(bytes), mp::ProcessError) << claimed;
    EXPECT_THROW((load<std::map<int, int>>(bytes)), mp::ProcessError) << claimed;
    EXPECT_THROW((load<std::unordered_map<int, int>>(bytes)), mp::ProcessError) << claimed;
    EXPECT_THROW(load<std::unordered_set<int>>(bytes), mp::ProcessError) << claimed;
    EXPECT_THROW(load<std::deque<int>>(bytes), mp::ProcessError) << claimed;
    EXPECT_THROW(load<std::list<int>>(bytes), mp::ProcessError) << claimed;
  }
}

// Nested: a valid outer count, a corrupt inner one.
TEST(SerializationMalformed, HugeInnerLength) {
  std::string bytes = encode(std::vector<std::string>{"ok", "fine"});
  const std::uint64_t huge = std::uint64_t{1} << 61;
  std::memcpy(bytes.data() + 8 + 8 + 2, &huge, sizeof(huge));  // second string's count
  EXPECT_THROW(load<std::vector<std::string>>(bytes), mp::ProcessError);
}

TEST(SerializationMalformed, BadVariantIndex) {
  using V = std::variant<int, std::string>;
  for (const std::int32_t index : {2, 1000, -1}) {
    std::string bytes(reinterpret_cast<const char*>(&index), sizeof(index));
    bytes.append(8, '\0');
    EXPECT_THROW(load<V>(bytes), mp::ProcessError) << index;
  }
}

TEST(SerializationMalformed, BadBool) {
  EXPECT_THROW(load<bool>(std::string(1, '\x02')), mp::ProcessError);
  std::string opt(1, '\x07');  // std::optional's "nullopt" flag
  EXPECT_THROW(load<std::optional<int>>(opt), mp::ProcessError);
  std::string vb = encode(std::vector<bool>{true, false});
  vb.back() = '\x05';
  EXPECT_THROW(load<std::vector<bool>>(vb), mp::ProcessError);
  std::string ab = encode(std::array<bool, 3>{true, false, true});
  ab[1] = '\x03';
  EXPECT_THROW((load<std::array<bool, 3>>(ab)), mp::ProcessError);
  expect_round_trip(std::array<bool, 3>{true, false, true});
}

TEST(SerializationMalformed, MessageNamesTheType) {
  try {
    load<std::vector<int>>(std::string_view("\x01", 1));
    FAIL() << "no exception";
  } catch (const mp::ProcessError& e) {
    EXPECT_NE(std::string(e.what()).find("std::vector<int"), std::string::npos) << e.what();
  }
}

// Deterministic garbage of every length up to 64 bytes: always a clean outcome.
TEST(SerializationMalformed, RandomBytesNeverCrash) {
  using Deep = std::map<std::string, std::vector<std::optional<std::pair<int, std::string>>>>;
  std::uint64_t state = 0x9e3779b97f4a7c15ull;
  auto next = [&state] {
    state ^= state << 13;
    state ^= state >> 7;
    state ^= state << 17;
    return state;
  };
  for (int round = 0; round < 2000; ++round) {
    std::string bytes(static_cast<std::size_t>(round % 65), '\0');
    for (auto& c : bytes) {
      // Mostly small bytes, so that counts are often plausible and decoding goes deep.
      c = static_cast<char>(next() % 4 == 0 ? next() : next() % 3);
    }
    try {
      (void)load<Deep>(bytes);
    } catch (const mp::ProcessError&) {
    }
    try {
      (void)load<std::variant<int, std::string, std::vector<Pod>>>(bytes);
    } catch (const mp::ProcessError&) {
    }
    try {
      (void)load<Person>(bytes);
    } catch (const mp::ProcessError&) {
    }
  }
}

}  // namespace
