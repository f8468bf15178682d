// The byte-level half of multiproc's serialization layer (Python's pickle, as reduction.py uses
// it). It defines two cereal archives, OutputArchive (appends to a std::string, no std::ostream
// in between) and InputArchive (reads a bounds-checked [begin, end) range), and the notion of a
// "plain bytes" type: one that is copied with memcpy because its object representation is its
// value in any process running the same executable (arithmetic types, enums, trivially copyable
// aggregates without serialize functions whose members hold no address, checked member by
// member, and types opted in with copy_as_bytes). The archives speak cereal's binary dialect, so
// cereal's own std-type support (included below) and any user type with a cereal-style serialize or
// save/load work unchanged; plain-bytes types get save/load overloads found by ADL, so they also
// work nested in containers and user types, and a std::vector of them is one memcpy.
//
// Decoding never trusts its input: every read is checked against the bytes left; a container's
// element count larger than the bytes left is refused before anything is allocated (so what a
// corrupt length can make a container allocate is at most bytes-left times the element size); a
// bool (alone, in a container or in an array) must be 0 or 1; every failure is a MalformedInput
// (a ProcessError). The public face of this layer (is_transferable_v, Transferable, dump, load)
// is <multiproc/serialization.hpp>; include that, not this file.
#pragma once

#include <cereal/cereal.hpp>
#include <cereal/types/array.hpp>
#include <cereal/types/chrono.hpp>
#include <cereal/types/deque.hpp>
#include <cereal/types/list.hpp>
#include <cereal/types/map.hpp>
#include <cereal/types/optional.hpp>
#include <cereal/types/set.hpp>
#include <cereal/types/string.hpp>
#include <cereal/types/tuple.hpp>
#include <cereal/types/unordered_map.hpp>
#include <cereal/types/unordered_set.hpp>
#include <cereal/types/utility.hpp>
#include <cereal/types/variant.hpp>
#include <cereal/types/vector.hpp>

#include <array>
#include <chrono>
#include <concepts>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <functional>
#include <initializer_list>
#include <map>
#include <optional>
#include <set>
#include <span>
#include <string>
#include <string_view>
#include <tuple>
#include <type_traits>
#include <utility>
#include <variant>
#include <vector>

#include <multiproc/errors.hpp>

namespace multiproc {

// Opt-in: specialize as std::true_type for a trivially copyable type that multiproc cannot check
// member by member (a class with constructors or private members, a union, an aggregate with a
// base class, an empty-struct member or more than 32 members) but whose bytes mean the same in
// every process (no pointers, no views):
//   template <> struct multiproc::copy_as_bytes<Fixed> : std::true_type {};
template <class T>
struct copy_as_bytes : std::false_type {};

}  // namespace multiproc

namespace multiproc::detail {

// Thrown by InputArchive on truncated or malformed input. load<T>() rethrows it as a
// ProcessError that also names T; catch ProcessError.
class MalformedInput : public ProcessError {
 public:
  using ProcessError::ProcessError;
};

// --- the archives
// ---------------------------------------------------------------------------------

// A cereal output archive that appends the encoding of what it is given to a caller-owned
// std::string. Same layout as cereal's BinaryOutputArchive: native-endian arithmetic values,
// container sizes as cereal::size_type (64 bits), no names, no padding between values.
class OutputArchive : public cereal::OutputArchive<OutputArchive, cereal::AllowEmptyClassElision> {
 public:
  explicit OutputArchive(std::string& out)
      : cereal::OutputArchive<OutputArchive, cereal::AllowEmptyClassElision>(this), out_(out) {}

  // Appends size raw bytes.
  void save_binary(const void* data, std::size_t size) {
    if (size != 0) out_.append(static_cast<const char*>(data), size);
  }

 private:
  std::string& out_;
};

// A cereal input archive reading what OutputArchive wrote from [begin, end). Never reads outside
// that range: a read that does not fit throws MalformedInput. position() is where the next read
// starts, so several values can be decoded from one buffer in turn.
class InputArchive : public cereal::InputArchive<InputArchive, cereal::AllowEmptyClassElision> {
 public:
  InputArchive(const char* begin, const char* end)
      : cereal::InputArchive<InputArchive, cereal::AllowEmptyClassElision>(this),
        pos_(begin),
        end_(end) {}

  // Copies the next size bytes into data; throws MalformedInput when fewer are left.
  void load_binary(void* data, std::size_t size) {
    if (size > remaining()) {
      throw MalformedInput("truncated input: " + std::to_string(size) + " bytes needed, " +
                           std::to_string(remaining()) + " left");
    }
    if (size != 0) std::memcpy(data, pos_, size);
    pos_ += size;
  }

  std::size_t remaining() const noexcept { return static_cast<std::size_t>(end_ - pos_); }
  const char* position() const noexcept { return pos_; }

 private:
  const char* pos_;
  const char* end_;
};

// Stand-ins used only to ask "does T have cereal functions of its own?" without finding the
// plain-bytes overloads below (which would make the question depend on its own answer). They
// derive from cereal's archive bases so that cereal's namespace is searched by ADL, exactly as for
// the real archives. Never constructed.
namespace probe {
class Out : public cereal::OutputArchive<Out, cereal::AllowEmptyClassElision> {
 public:
  Out() = delete;
};
class In : public cereal::InputArchive<In, cereal::AllowEmptyClassElision> {
 public:
  In() = delete;
};
}  // namespace probe

}  // namespace multiproc::detail

CEREAL_REGISTER_ARCHIVE(multiproc::detail::OutputArchive)
CEREAL_REGISTER_ARCHIVE(multiproc::detail::InputArchive)
CEREAL_SETUP_ARCHIVE_TRAITS(multiproc::detail::InputArchive, multiproc::detail::OutputArchive)
CEREAL_SETUP_ARCHIVE_TRAITS(multiproc::detail::probe::In, multiproc::detail::probe::Out)

namespace multiproc::detail {

// --- which types are plain bytes -----------------------------------------------------------------

template <class T, template <class...> class Template>
struct is_specialization_of : std::false_type {};
template <template <class...> class Template, class... Args>
struct is_specialization_of<Template<Args...>, Template> : std::true_type {};

// Trivially copyable, but their bytes are addresses in this process: views and references.
template <class T>
struct is_view_type : std::false_type {};
template <class C, class Tr>
struct is_view_type<std::basic_string_view<C, Tr>> : std::true_type {};
template <class T, std::size_t N>
struct is_view_type<std::span<T, N>> : std::true_type {};
template <class T>
struct is_view_type<std::initializer_list<T>> : std::true_type {};
template <class T>
struct is_view_type<std::reference_wrapper<T>> : std::true_type {};

// Standard types that cereal encodes itself (some are trivially copyable): leaving them to cereal
// keeps exactly one save/load candidate for each, whatever order headers come in.
template <class T>
struct is_cereal_std_type
    : std::bool_constant<is_specialization_of<T, std::optional>::value ||
                         is_specialization_of<T, std::variant>::value ||
                         is_specialization_of<T, std::pair>::value ||
                         is_specialization_of<T, std::tuple>::value ||
                         is_specialization_of<T, std::chrono::duration>::value ||
                         is_specialization_of<T, std::chrono::time_point>::value ||
                         std::is_same_v<T, std::monostate>> {};
template <class T, std::size_t N>
struct is_cereal_std_type<std::array<T, N>> : std::true_type {};

// cereal's own wrappers, which the archives handle one by one below.
template <class T>
struct is_cereal_wrapper
    : std::bool_constant<is_specialization_of<T, cereal::NameValuePair>::value ||
                         is_specialization_of<T, cereal::BinaryData>::value ||
                         is_specialization_of<T, cereal::SizeTag>::value ||
                         is_specialization_of<T, cereal::MapItem>::value> {};

// --- checking an aggregate member by member ------------------------------------------------------
// A trivially copyable struct may still hold an address (a raw pointer, a std::string_view): its
// bytes would mean nothing in another process. C++20 cannot list a struct's members, but an
// aggregate can be taken apart with a structured binding once its member count is known, and the
// count is found by aggregate initialization (as Boost.PFR does; Debian 12's Boost 1.74 predates
// PFR, so this is the small part of it that is needed). Each braced initializer {any} initializes
// exactly one member (braces are never elided), so the largest count that compiles is the number
// of members, provided every member accepts {any}; the count is trusted only when neither {} nor
// a plain value can start one member more.

template <class... Ts>
struct type_list {};

// std::complex<T>, recognised by its shape so that <complex> need not be included here (with
// <sstream> behind it, it was a sixth of the umbrella header's compile time). The standard fixes
// its layout as T[2], real then imaginary: its bytes are what cereal would write for it.
template <class T>
concept complex_like = requires(const T& c) {
  typename T::value_type;
  { c.real() } -> std::same_as<typename T::value_type>;
  { c.imag() } -> std::same_as<typename T::value_type>;
}
&&std::is_arithmetic_v<typename T::value_type>&& std::is_trivially_copyable_v<T> &&
    sizeof(T) == 2 * sizeof(typename T::value_type);

// Converts to (a reference to) anything; never called. Only as an rvalue: a member's converting
// constructor template that asks whether a const any_member& converts (std::chrono::duration's
// explicit one) then drops out, and the member is copied from the converted reference instead.
// Only to scalars and classes, and not to a std::complex: complex<float> can also be made from the
// other complex types and from the compiler's own complex scalar, which would make {any_member}
// ambiguous; (re, im) is the constructor left.
template <std::size_t>
struct any_member {
  template <class U>
  requires(std::is_scalar_v<U> || (std::is_class_v<U> && !complex_like<U>))
  operator U&() && noexcept;
};

// Converts only to a proper base class of T: T{base_of<T>{}} compiles when T's first element is
// a base, whose members a structured binding of T would count differently.
template <class T>
struct base_of {
  template <class U>
  requires(std::is_base_of_v<U, T> && !std::is_same_v<U, T>) operator U&() && noexcept;
};
template <class T>
concept starts_with_base = requires {
  T{base_of<T>{}};
};

template <class T, class Seq>
struct braced_init_with : std::false_type {};
template <class T, std::size_t... I>
requires requires {
  T{{any_member<I>{}}...};
}
struct braced_init_with<T, std::index_sequence<I...>> : std::true_type {};

template <class T, class Seq>
struct one_more_member : std::false_type {};
template <class T, std::size_t... I>
requires(
    requires {
      T{{any_member<I>{}}..., {}};
    } ||
    requires {
      T{{any_member<I>{}}..., any_member<sizeof...(I)>{}};
    }) struct one_more_member<T, std::index_sequence<I...>> : std::true_type {
};

inline constexpr std::size_t kMaxCheckedMembers = 32;

// The number of members of aggregate T, or kMaxCheckedMembers + 1 when it cannot be told.
template <class T, std::size_t N = 0>
constexpr std::size_t aggregate_member_count() {
  // The branches are tried in order (a later test may not compile for earlier cases), so two of
  // them returning the same value cannot be merged.
  // NOLINTNEXTLINE(bugprone-branch-clone)
  if constexpr (N > kMaxCheckedMembers) {
    return kMaxCheckedMembers + 1;
  } else if constexpr (braced_init_with<T, std::make_index_sequence<N + 1>>::value) {
    return aggregate_member_count<T, N + 1>();
  } else if constexpr (one_more_member<T, std::make_index_sequence<N>>::value) {
    return kMaxCheckedMembers + 1;
  } else {
    return N;
  }
}

template <class T>
auto member_types(T&, std::integral_constant<std::size_t, 0>) {
  return type_list<>{};
}
template <class T>
auto member_types(T& t, std::integral_constant<std::size_t, 1>) {
  auto& [m0] = t;
  return type_list<decltype(m0)>{};
}
template <class T>
auto member_types(T& t, std::integral_constant<std::size_t, 2>) {
  auto& [m0, m1] = t;
  return type_list<decltype(m0), decltype(m1)>{};
}
template <class T>
auto member_types(T& t, std::integral_constant<std::size_t, 3>) {
  auto& [m0, m1, m2] = t;
  return type_list<decltype(m0), decltype(m1), decltype(m2)>{};
}
template <class T>
auto member_types(T& t, std::integral_constant<std::size_t, 4>) {
  auto& [m0, m1, m2, m3] = t;
  return type_list<decltype(m0), decltype(m1), decltype(m2), decltype(m3)>{};
}
template <class T>
auto member_types(T& t, std::integral_constant<std::size_t, 5>) {
  auto& [m0, m1, m2, m3, m4] = t;
  return type_list<decltype(m0), decltype(m1), decltype(m2), decltype(m3), decltype(m4)>{};
}
template <class T>
auto member_types(T& t, std::integral_constant<std::size_t, 6>) {
  auto& [m0, m1, m2, m3, m4, m5] = t;
  return type_list<decltype(m0), decltype(m1), decltype(m2), decltype(m3), decltype(m4),
                   decltype(m5)>{};
}
template <class T>
auto member_types(T& t, std::integral_constant<std::size_t, 7>) {
  auto& [m0, m1, m2, m3, m4, m5, m6] = t;
  return type_list<decltype(m0), decltype(m1), decltype(m2), decltype(m3), decltype(m4),
                   decltype(m5), decltype(m6)>{};
}
template <class T>
auto member_types(T& t, std::integral_constant<std::size_t, 8>) {
  auto& [m0, m1, m2, m3, m4, m5, m6, m7] = t;
  return type_list<decltype(m0), decltype(m1), decltype(m2), decltype(m3), decltype(m4),
                   decltype(m5), decltype(m6), decltype(m7)>{};
}
template <class T>
auto member_types(T& t, std::integral_constant<std::size_t, 9>) {
  auto& [m0, m1, m2, m3, m4, m5, m6, m7, m8] = t;
  return type_list<decltype(m0), decltype(m1), decltype(m2), decltype(m3), decltype(m4),
                   decltype(m5), decltype(m6), decltype(m7), decltype(m8)>{};
}
template <class T>
auto member_types(T& t, std::integral_constant<std::size_t, 10>) {
  auto& [m0, m1, m2, m3, m4, m5, m6, m7, m8, m9] = t;
  return type_list<decltype(m0), decltype(m1), decltype(m2), decltype(m3), decltype(m4),
                   decltype(m5), decltype(m6), decltype(m7), decltype(m8), decltype(m9)>{};
}
template <class T>
auto member_types(T& t, std::integral_constant<std::size_t, 11>) {
  auto& [m0, m1, m2, m3, m4, m5, m6, m7, m8, m9, m10] = t;
  return type_list<decltype(m0), decltype(m1), decltype(m2), decltype(m3), decltype(m4),
                   decltype(m5), decltype(m6), decltype(m7), decltype(m8), decltype(m9),
                   decltype(m10)>{};
}
template <class T>
auto member_types(T& t, std::integral_constant<std::size_t, 12>) {
  auto& [m0, m1, m2, m3, m4, m5, m6, m7, m8, m9, m10, m11] = t;
  return type_list<decltype(m0), decltype(m1), decltype(m2), decltype(m3), decltype(m4),
                   decltype(m5), decltype(m6), decltype(m7), decltype(m8), decltype(m9),
                   decltype(m10), decltype(m11)>{};
}
template <class T>
auto member_types(T& t, std::integral_constant<std::size_t, 13>) {
  auto& [m0, m1, m2, m3, m4, m5, m6, m7, m8, m9, m10, m11, m12] = t;
  return type_list<decltype(m0), decltype(m1), decltype(m2), decltype(m3), decltype(m4),
                   decltype(m5), decltype(m6), decltype(m7), decltype(m8), decltype(m9),
                   decltype(m10), decltype(m11), decltype(m12)>{};
}
template <class T>
auto member_types(T& t, std::integral_constant<std::size_t, 14>) {
  auto& [m0, m1, m2, m3, m4, m5, m6, m7, m8, m9, m10, m11, m12, m13] = t;
  return type_list<decltype(m0), decltype(m1), decltype(m2), decltype(m3), decltype(m4),
                   decltype(m5), decltype(m6), decltype(m7), decltype(m8), decltype(m9),
                   decltype(m10), decltype(m11), decltype(m12), decltype(m13)>{};
}
template <class T>
auto member_types(T& t, std::integral_constant<std::size_t, 15>) {
  auto& [m0, m1, m2, m3, m4, m5, m6, m7, m8, m9, m10, m11, m12, m13, m14] = t;
  return type_list<decltype(m0), decltype(m1), decltype(m2), decltype(m3), decltype(m4),
                   decltype(m5), decltype(m6), decltype(m7), decltype(m8), decltype(m9),
                   decltype(m10), decltype(m11), decltype(m12), decltype(m13), decltype(m14)>{};
}
template <class T>
auto member_types(T& t, std::integral_constant<std::size_t, 16>) {
  auto& [m0, m1, m2, m3, m4, m5, m6, m7, m8, m9, m10, m11, m12, m13, m14, m15] = t;
  return type_list<decltype(m0), decltype(m1), decltype(m2), decltype(m3), decltype(m4),
                   decltype(m5), decltype(m6), decltype(m7), decltype(m8), decltype(m9),
                   decltype(m10), decltype(m11), decltype(m12), decltype(m13), decltype(m14),
                   decltype(m15)>{};
}
template <class T>
auto member_types(T& t, std::integral_constant<std::size_t, 17>) {
  auto& [m0, m1, m2, m3, m4, m5, m6, m7, m8, m9, m10, m11, m12, m13, m14, m15, m16] = t;
  return type_list<decltype(m0), decltype(m1), decltype(m2), decltype(m3), decltype(m4),
                   decltype(m5), decltype(m6), decltype(m7), decltype(m8), decltype(m9),
                   decltype(m10), decltype(m11), decltype(m12), decltype(m13), decltype(m14),
                   decltype(m15), decltype(m16)>{};
}
template <class T>
auto member_types(T& t, std::integral_constant<std::size_t, 18>) {
  auto& [m0, m1, m2, m3, m4, m5, m6, m7, m8, m9, m10, m11, m12, m13, m14, m15, m16, m17] = t;
  return type_list<decltype(m0), decltype(m1), decltype(m2), decltype(m3), decltype(m4),
                   decltype(m5), decltype(m6), decltype(m7), decltype(m8), decltype(m9),
                   decltype(m10), decltype(m11), decltype(m12), decltype(m13), decltype(m14),
                   decltype(m15), decltype(m16), decltype(m17)>{};
}
template <class T>
auto member_types(T& t, std::integral_constant<std::size_t, 19>) {
  auto& [m0, m1, m2, m3, m4, m5, m6, m7, m8, m9, m10, m11, m12, m13, m14, m15, m16, m17, m18] = t;
  return type_list<decltype(m0), decltype(m1), decltype(m2), decltype(m3), decltype(m4),
                   decltype(m5), decltype(m6), decltype(m7), decltype(m8), decltype(m9),
                   decltype(m10), decltype(m11), decltype(m12), decltype(m13), decltype(m14),
                   decltype(m15), decltype(m16), decltype(m17), decltype(m18)>{};
}
template <class T>
auto member_types(T& t, std::integral_constant<std::size_t, 20>) {
  auto& [m0, m1, m2, m3, m4, m5, m6, m7, m8, m9, m10, m11, m12, m13, m14, m15, m16, m17, m18, m19] =
      t;
  return type_list<decltype(m0), decltype(m1), decltype(m2), decltype(m3), decltype(m4),
                   decltype(m5), decltype(m6), decltype(m7), decltype(m8), decltype(m9),
                   decltype(m10), decltype(m11), decltype(m12), decltype(m13), decltype(m14),
                   decltype(m15), decltype(m16), decltype(m17), decltype(m18), decltype(m19)>{};
}
template <class T>
auto member_types(T& t, std::integral_constant<std::size_t, 21>) {
  auto& [m0, m1, m2, m3, m4, m5, m6, m7, m8, m9, m10, m11, m12, m13, m14, m15, m16, m17, m18, m19,
         m20] = t;
  return type_list<decltype(m0), decltype(m1), decltype(m2), decltype(m3), decltype(m4),
                   decltype(m5), decltype(m6), decltype(m7), decltype(m8), decltype(m9),
                   decltype(m10), decltype(m11), decltype(m12), decltype(m13), decltype(m14),
                   decltype(m15), decltype(m16), decltype(m17), decltype(m18), decltype(m19),
                   decltype(m20)>{};
}
template <class T>
auto member_types(T& t, std::integral_constant<std::size_t, 22>) {
  auto& [m0, m1, m2, m3, m4, m5, m6, m7, m8, m9, m10, m11, m12, m13, m14, m15, m16, m17, m18, m19,
         m20, m21] = t;
  return type_list<decltype(m0), decltype(m1), decltype(m2), decltype(m3), decltype(m4),
                   decltype(m5), decltype(m6), decltype(m7), decltype(m8), decltype(m9),
                   decltype(m10), decltype(m11), decltype(m12), decltype(m13), decltype(m14),
                   decltype(m15), decltype(m16), decltype(m17), decltype(m18), decltype(m19),
                   decltype(m20), decltype(m21)>{};
}
template <class T>
auto member_types(T& t, std::integral_constant<std::size_t, 23>) {
  auto& [m0, m1, m2, m3, m4, m5, m6, m7, m8, m9, m10, m11, m12, m13, m14, m15, m16, m17, m18, m19,
         m20, m21, m22] = t;
  return type_list<decltype(m0), decltype(m1), decltype(m2), decltype(m3), decltype(m4),
                   decltype(m5), decltype(m6), decltype(m7), decltype(m8), decltype(m9),
                   decltype(m10), decltype(m11), decltype(m12), decltype(m13), decltype(m14),
                   decltype(m15), decltype(m16), decltype(m17), decltype(m18), decltype(m19),
                   decltype(m20), decltype(m21), decltype(m22)>{};
}
template <class T>
auto member_types(T& t, std::integral_constant<std::size_t, 24>) {
  auto& [m0, m1, m2, m3, m4, m5, m6, m7, m8, m9, m10, m11, m12, m13, m14, m15, m16, m17, m18, m19,
         m20, m21, m22, m23] = t;
  return type_list<decltype(m0), decltype(m1), decltype(m2), decltype(m3), decltype(m4),
                   decltype(m5), decltype(m6), decltype(m7), decltype(m8), decltype(m9),
                   decltype(m10), decltype(m11), decltype(m12), decltype(m13), decltype(m14),
                   decltype(m15), decltype(m16), decltype(m17), decltype(m18), decltype(m19),
                   decltype(m20), decltype(m21), decltype(m22), decltype(m23)>{};
}
template <class T>
auto member_types(T& t, std::integral_constant<std::size_t, 25>) {
  auto& [m0, m1, m2, m3, m4, m5, m6, m7, m8, m9, m10, m11, m12, m13, m14, m15, m16, m17, m18, m19,
         m20, m21, m22, m23, m24] = t;
  return type_list<decltype(m0), decltype(m1), decltype(m2), decltype(m3), decltype(m4),
                   decltype(m5), decltype(m6), decltype(m7), decltype(m8), decltype(m9),
                   decltype(m10), decltype(m11), decltype(m12), decltype(m13), decltype(m14),
                   decltype(m15), decltype(m16), decltype(m17), decltype(m18), decltype(m19),
                   decltype(m20), decltype(m21), decltype(m22), decltype(m23), decltype(m24)>{};
}
template <class T>
auto member_types(T& t, std::integral_constant<std::size_t, 26>) {
  auto& [m0, m1, m2, m3, m4, m5, m6, m7, m8, m9, m10, m11, m12, m13, m14, m15, m16, m17, m18, m19,
         m20, m21, m22, m23, m24, m25] = t;
  return type_list<decltype(m0), decltype(m1), decltype(m2), decltype(m3), decltype(m4),
                   decltype(m5), decltype(m6), decltype(m7), decltype(m8), decltype(m9),
                   decltype(m10), decltype(m11), decltype(m12), decltype(m13), decltype(m14),
                   decltype(m15), decltype(m16), decltype(m17), decltype(m18), decltype(m19),
                   decltype(m20), decltype(m21), decltype(m22), decltype(m23), decltype(m24),
                   decltype(m25)>{};
}
template <class T>
auto member_types(T& t, std::integral_constant<std::size_t, 27>) {
  auto& [m0, m1, m2, m3, m4, m5, m6, m7, m8, m9, m10, m11, m12, m13, m14, m15, m16, m17, m18, m19,
         m20, m21, m22, m23, m24, m25, m26] = t;
  return type_list<decltype(m0), decltype(m1), decltype(m2), decltype(m3), decltype(m4),
                   decltype(m5), decltype(m6), decltype(m7), decltype(m8), decltype(m9),
                   decltype(m10), decltype(m11), decltype(m12), decltype(m13), decltype(m14),
                   decltype(m15), decltype(m16), decltype(m17), decltype(m18), decltype(m19),
                   decltype(m20), decltype(m21), decltype(m22), decltype(m23), decltype(m24),
                   decltype(m25), decltype(m26)>{};
}
template <class T>
auto member_types(T& t, std::integral_constant<std::size_t, 28>) {
  auto& [m0, m1, m2, m3, m4, m5, m6, m7, m8, m9, m10, m11, m12, m13, m14, m15, m16, m17, m18, m19,
         m20, m21, m22, m23, m24, m25, m26, m27] = t;
  return type_list<decltype(m0), decltype(m1), decltype(m2), decltype(m3), decltype(m4),
                   decltype(m5), decltype(m6), decltype(m7), decltype(m8), decltype(m9),
                   decltype(m10), decltype(m11), decltype(m12), decltype(m13), decltype(m14),
                   decltype(m15), decltype(m16), decltype(m17), decltype(m18), decltype(m19),
                   decltype(m20), decltype(m21), decltype(m22), decltype(m23), decltype(m24),
                   decltype(m25), decltype(m26), decltype(m27)>{};
}
template <class T>
auto member_types(T& t, std::integral_constant<std::size_t, 29>) {
  auto& [m0, m1, m2, m3, m4, m5, m6, m7, m8, m9, m10, m11, m12, m13, m14, m15, m16, m17, m18, m19,
         m20, m21, m22, m23, m24, m25, m26, m27, m28] = t;
  return type_list<decltype(m0), decltype(m1), decltype(m2), decltype(m3), decltype(m4),
                   decltype(m5), decltype(m6), decltype(m7), decltype(m8), decltype(m9),
                   decltype(m10), decltype(m11), decltype(m12), decltype(m13), decltype(m14),
                   decltype(m15), decltype(m16), decltype(m17), decltype(m18), decltype(m19),
                   decltype(m20), decltype(m21), decltype(m22), decltype(m23), decltype(m24),
                   decltype(m25), decltype(m26), decltype(m27), decltype(m28)>{};
}
template <class T>
auto member_types(T& t, std::integral_constant<std::size_t, 30>) {
  auto& [m0, m1, m2, m3, m4, m5, m6, m7, m8, m9, m10, m11, m12, m13, m14, m15, m16, m17, m18, m19,
         m20, m21, m22, m23, m24, m25, m26, m27, m28, m29] = t;
  return type_list<decltype(m0), decltype(m1), decltype(m2), decltype(m3), decltype(m4),
                   decltype(m5), decltype(m6), decltype(m7), decltype(m8), decltype(m9),
                   decltype(m10), decltype(m11), decltype(m12), decltype(m13), decltype(m14),
                   decltype(m15), decltype(m16), decltype(m17), decltype(m18), decltype(m19),
                   decltype(m20), decltype(m21), decltype(m22), decltype(m23), decltype(m24),
                   decltype(m25), decltype(m26), decltype(m27), decltype(m28), decltype(m29)>{};
}
template <class T>
auto member_types(T& t, std::integral_constant<std::size_t, 31>) {
  auto& [m0, m1, m2, m3, m4, m5, m6, m7, m8, m9, m10, m11, m12, m13, m14, m15, m16, m17, m18, m19,
         m20, m21, m22, m23, m24, m25, m26, m27, m28, m29, m30] = t;
  return type_list<decltype(m0), decltype(m1), decltype(m2), decltype(m3), decltype(m4),
                   decltype(m5), decltype(m6), decltype(m7), decltype(m8), decltype(m9),
                   decltype(m10), decltype(m11), decltype(m12), decltype(m13), decltype(m14),
                   decltype(m15), decltype(m16), decltype(m17), decltype(m18), decltype(m19),
                   decltype(m20), decltype(m21), decltype(m22), decltype(m23), decltype(m24),
                   decltype(m25), decltype(m26), decltype(m27), decltype(m28), decltype(m29),
                   decltype(m30)>{};
}
template <class T>
auto member_types(T& t, std::integral_constant<std::size_t, 32>) {
  auto& [m0, m1, m2, m3, m4, m5, m6, m7, m8, m9, m10, m11, m12, m13, m14, m15, m16, m17, m18, m19,
         m20, m21, m22, m23, m24, m25, m26, m27, m28, m29, m30, m31] = t;
  return type_list<decltype(m0), decltype(m1), decltype(m2), decltype(m3), decltype(m4),
                   decltype(m5), decltype(m6), decltype(m7), decltype(m8), decltype(m9),
                   decltype(m10), decltype(m11), decltype(m12), decltype(m13), decltype(m14),
                   decltype(m15), decltype(m16), decltype(m17), decltype(m18), decltype(m19),
                   decltype(m20), decltype(m21), decltype(m22), decltype(m23), decltype(m24),
                   decltype(m25), decltype(m26), decltype(m27), decltype(m28), decltype(m29),
                   decltype(m30), decltype(m31)>{};
}

// Why a trivially copyable T may or may not be copied as bytes.
enum class BytesVerdict { plain, holds_address, unverifiable };

template <class T>
constexpr BytesVerdict member_verdict();

template <class T>
constexpr BytesVerdict members_verdict(type_list<>) {
  return BytesVerdict::plain;
}
template <class T, class M, class... Ms>
constexpr BytesVerdict members_verdict(type_list<M, Ms...>) {
  constexpr BytesVerdict first = member_verdict<std::remove_cv_t<M>>();
  if constexpr (first != BytesVerdict::plain) {
    return first;
  } else {
    return members_verdict<T>(type_list<Ms...>{});
  }
}

// The verdict on an aggregate class from its members (unions, aggregates with a base class and
// aggregates too large to take apart cannot be checked).
template <class T>
constexpr BytesVerdict aggregate_verdict() {
  if constexpr (std::is_union_v<T> || !std::is_standard_layout_v<T> || starts_with_base<T>) {
    // A base class: its members and T's, or its members alone, count differently in a
    // structured binding than in aggregate initialization.
    return BytesVerdict::unverifiable;
  } else {
    constexpr std::size_t n = aggregate_member_count<T>();
    if constexpr (n > kMaxCheckedMembers) {
      return BytesVerdict::unverifiable;
    } else {
      using Members =
          decltype(member_types(std::declval<T&>(), std::integral_constant<std::size_t, n>{}));
      return members_verdict<T>(Members{});
    }
  }
}

template <class T>
struct std_array_element {
  using type = void;
};
template <class T, std::size_t N>
struct std_array_element<std::array<T, N>> {
  using type = T;
};

template <class... Ts>
constexpr BytesVerdict alternatives_verdict() {
  BytesVerdict v = BytesVerdict::plain;
  ((v = v == BytesVerdict::plain ? member_verdict<std::remove_cv_t<Ts>>() : v), ...);
  return v;
}
template <class T>
struct std_wrapper_verdict {
  static constexpr bool known = false;
};
template <class T>
struct std_wrapper_verdict<std::optional<T>> {
  static constexpr bool known = true;
  static constexpr BytesVerdict value = alternatives_verdict<T>();
};
template <class... Ts>
struct std_wrapper_verdict<std::variant<Ts...>> {
  static constexpr bool known = true;
  static constexpr BytesVerdict value = alternatives_verdict<Ts...>();
};

// One member's verdict: values are plain; addresses are not; a class member is judged by its own
// members when it is an aggregate, and must be opted in (copy_as_bytes) otherwise.
template <class M>
constexpr BytesVerdict member_verdict() {
  // Tried in order, as in aggregate_member_count(): equal verdicts cannot be merged.
  // NOLINTBEGIN(bugprone-branch-clone)
  if constexpr (std::is_array_v<M>) {
    return member_verdict<std::remove_cv_t<std::remove_all_extents_t<M>>>();
  } else if constexpr (std::is_arithmetic_v<M> || std::is_enum_v<M>) {
    return BytesVerdict::plain;
  } else if constexpr (std::is_pointer_v<M> || std::is_member_pointer_v<M> ||
                       std::is_null_pointer_v<M> || std::is_reference_v<M> ||
                       is_view_type<M>::value) {
    return BytesVerdict::holds_address;
  } else if constexpr (multiproc::copy_as_bytes<M>::value) {
    return BytesVerdict::plain;
  } else if constexpr (!std::is_void_v<typename std_array_element<M>::type>) {
    return member_verdict<std::remove_cv_t<typename std_array_element<M>::type>>();
  } else if constexpr (std_wrapper_verdict<M>::known) {
    return std_wrapper_verdict<M>::value;
  } else if constexpr (is_specialization_of<M, std::chrono::duration>::value ||
                       is_specialization_of<M, std::chrono::time_point>::value || complex_like<M> ||
                       std::is_same_v<M, std::monostate>) {
    return BytesVerdict::plain;  // numbers inside (a duration of a user Rep is not trivially
                                 // copyable unless Rep is)
  } else if constexpr (std::is_class_v<M> && std::is_aggregate_v<M>) {
    return aggregate_verdict<M>();
  } else {
    return BytesVerdict::unverifiable;
  }
  // NOLINTEND(bugprone-branch-clone)
}

// The verdict on a whole type that is trivially copyable: arithmetic types and enums are plain,
// opted-in types are plain, aggregates are judged member by member, other classes (a constructor,
// private members) cannot be checked.
template <class T>
constexpr BytesVerdict bytes_verdict() {
  if constexpr (std::is_arithmetic_v<T> || std::is_enum_v<T> || complex_like<T> ||
                multiproc::copy_as_bytes<T>::value) {
    return BytesVerdict::plain;
  } else if constexpr (std::is_class_v<T> && std::is_aggregate_v<T>) {
    return aggregate_verdict<T>();
  } else {
    return BytesVerdict::unverifiable;
  }
}

// The shape of a plain-bytes type. Default-constructible because the receiver makes one and
// copies the bytes in; that also turns away classes holding references and lambdas with captures.
template <class T>
concept plain_bytes_candidate =
    std::is_trivially_copyable_v<T> && std::is_default_constructible_v<T> &&
    !std::is_pointer_v<T> &&
    !std::is_member_pointer_v<T> && !std::is_null_pointer_v<T> && !std::is_array_v<T> &&
    !is_view_type<T>::value && !is_cereal_std_type<T>::value && !is_cereal_wrapper<T>::value;
// ... whose members, checked one by one, hold no address (or that the user vouches for).
template <class T>
concept plain_bytes_shape = plain_bytes_candidate<T> && bytes_verdict<T>()
== BytesVerdict::plain;

// Whether T brings its own cereal serialize/save/load (member or free, versioned or not,
// minimal or not), asked with the probe archives.
template <class T>
concept has_cereal_functions =
    cereal::traits::detail::count_output_serializers<T, probe::Out>::value != 0 ||
    cereal::traits::detail::count_input_serializers<T, probe::In>::value != 0;

// Enums are plain bytes at the top level (dump copies them); nested, cereal's own enum support
// (common.hpp, same bytes) encodes them. A class with serialize functions of its own is never
// plain bytes: its functions win, e.g. to skip a cache or a pointer member.
template <class T>
concept plain_bytes = plain_bytes_shape<T> &&(std::is_enum_v<T> || !has_cereal_functions<T>);

// True when T is copied with memcpy: trivially copyable and default-constructible, not a pointer,
// member pointer, nullptr_t, C array or view type (std::string_view, std::span,
// std::reference_wrapper, std::initializer_list), not a std type cereal encodes itself
// (std::array, optional, variant, pair, tuple, chrono types), without cereal functions
// of its own, and either arithmetic, an enum, an aggregate whose members hold no address
// (bytes_verdict) or opted in with copy_as_bytes<T>.
template <class T>
inline constexpr bool is_plain_bytes_v = plain_bytes<std::remove_cv_t<T>>;

// --- archive support functions, found by ADL ---------------------------------------------------

template <class A>
concept multiproc_archive = std::same_as<A, OutputArchive> || std::same_as<A, InputArchive>;

// Plain-bytes values, arithmetic included, nested anywhere: their raw bytes. The archive is a
// template parameter checked first, so that when the probes find these functions by ADL the
// constraint fails at once instead of asking is_plain_bytes_v about itself.
template <class A, class T>
requires(std::same_as<A, OutputArchive>&& plain_bytes<T> &&
         !std::is_enum_v<T>) void CEREAL_SAVE_FUNCTION_NAME(A& ar, const T& value) {
  ar.save_binary(std::addressof(value), sizeof(T));
}

template <class A, class T>
requires(std::same_as<A, InputArchive>&& plain_bytes<T> &&
         !std::is_enum_v<T>) void CEREAL_LOAD_FUNCTION_NAME(A& ar, T& value) {
  if constexpr (std::is_same_v<T, bool>) {
    unsigned char byte = 0;
    ar.load_binary(&byte, 1);
    if (byte > 1) throw MalformedInput("malformed bool: byte " + std::to_string(byte));
    value = byte != 0;
  } else {
    ar.load_binary(std::addressof(value), sizeof(T));
  }
}

// A std::vector of plain bytes: its count, then all elements in one copy. More specialized than
// cereal's vector functions (the archive is fixed), so it is the one chosen. The count is checked
// against the bytes left before anything is allocated.
template <class T, class Alloc>
requires(plain_bytes<T> && !std::is_same_v<T, bool>) void CEREAL_SAVE_FUNCTION_NAME(
    OutputArchive& ar, const std::vector<T, Alloc>& vec) {
  ar(cereal::make_size_tag(static_cast<cereal::size_type>(vec.size())));
  ar.save_binary(vec.data(), vec.size() * sizeof(T));
}

template <class T, class Alloc>
requires(plain_bytes<T> &&
         !std::is_same_v<T, bool>) void CEREAL_LOAD_FUNCTION_NAME(InputArchive& ar,
                                                                  std::vector<T, Alloc>& vec) {
  cereal::size_type count = 0;
  ar(cereal::make_size_tag(count));
  if (count > ar.remaining() / sizeof(T)) {
    throw MalformedInput("corrupt length: " + std::to_string(count) + " elements of " +
                         std::to_string(sizeof(T)) + " bytes, " + std::to_string(ar.remaining()) +
                         " bytes left");
  }
  vec.resize(static_cast<std::size_t>(count));
  ar.load_binary(vec.data(), vec.size() * sizeof(T));
}

// std::multimap and std::multiset must keep equivalent keys in the order they were sent; cereal
// 1.3.2 reverses them (it inserts each element before the previous one: USCiLab/cereal#865).
// Elements arrive sorted, so inserting at end() keeps the order and is amortized O(1). More
// specialized than cereal's loads; cereal's saves are kept.
template <class K, class V, class Cmp, class Alloc>
void CEREAL_LOAD_FUNCTION_NAME(InputArchive& ar, std::multimap<K, V, Cmp, Alloc>& map) {
  cereal::size_type count = 0;
  ar(cereal::make_size_tag(count));
  map.clear();
  for (cereal::size_type i = 0; i < count; ++i) {
    K key{};
    V value{};
    ar(cereal::make_map_item(key, value));
    map.emplace_hint(map.end(), std::move(key), std::move(value));
  }
}

template <class K, class Cmp, class Alloc>
void CEREAL_LOAD_FUNCTION_NAME(InputArchive& ar, std::multiset<K, Cmp, Alloc>& set) {
  cereal::size_type count = 0;
  ar(cereal::make_size_tag(count));
  set.clear();
  for (cereal::size_type i = 0; i < count; ++i) {
    K key{};
    ar(key);
    set.emplace_hint(set.end(), std::move(key));
  }
}

// Binary data (cereal::binary_data; strings and arithmetic vectors use it): raw bytes.
template <class T>
void CEREAL_SAVE_FUNCTION_NAME(OutputArchive& ar, const cereal::BinaryData<T>& bd) {
  ar.save_binary(bd.data, static_cast<std::size_t>(bd.size));
}
// std::array<bool, N> and bool[N] come this way too: each byte must be 0 or 1.
template <class T>
void CEREAL_LOAD_FUNCTION_NAME(InputArchive& ar, cereal::BinaryData<T>& bd) {
  const auto size = static_cast<std::size_t>(bd.size);
  using Element =
      std::remove_cv_t<std::remove_all_extents_t<std::remove_pointer_t<std::decay_t<T>>>>;
  if constexpr (std::is_same_v<Element, bool>) {
    const auto* bytes = reinterpret_cast<const unsigned char*>(ar.position());
    for (std::size_t i = 0; i < size && i < ar.remaining(); ++i) {
      if (bytes[i] > 1) throw MalformedInput("malformed bool: byte " + std::to_string(bytes[i]));
    }
  }
  ar.load_binary(bd.data, size);
}

// Names are dropped, as in cereal's binary archives.
template <class A, class T>
requires multiproc_archive<A>
void CEREAL_SERIALIZE_FUNCTION_NAME(A& ar, cereal::NameValuePair<T>& nvp) {
  ar(nvp.value);
}

// Container sizes: 64 bits. On load a count larger than the bytes left is refused before the
// container allocates: every element takes at least one byte, except elements that encode to
// nothing (std::monostate, std::tuple<>, empty classes with an empty serialize), so a container
// of those cannot hold more elements than bytes follow its count.
template <class T>
void CEREAL_SAVE_FUNCTION_NAME(OutputArchive& ar, const cereal::SizeTag<T>& tag) {
  const std::uint64_t size = tag.size;
  ar.save_binary(&size, sizeof(size));
}
template <class T>
void CEREAL_LOAD_FUNCTION_NAME(InputArchive& ar, cereal::SizeTag<T>& tag) {
  std::uint64_t size = 0;
  ar.load_binary(&size, sizeof(size));
  if (size > ar.remaining()) {
    throw MalformedInput("corrupt length: " + std::to_string(size) + " elements, " +
                         std::to_string(ar.remaining()) + " bytes left");
  }
  tag.size = static_cast<std::remove_reference_t<decltype(tag.size)>>(size);
}

}  // namespace multiproc::detail
