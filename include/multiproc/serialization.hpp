// What can cross a process boundary, and how it is encoded (Python's reduction.py and pickle).
// is_transferable_v<T> / Transferable<T> answer "can a T be a task argument, a result or a queue
// item?"; detail::require_transferable<T>() turns a "no" into a compile error that names T;
// detail::dump() and detail::load() turn a value into bytes and back. Plain-bytes types are copied
// with memcpy; everything else goes through the cereal archives of <multiproc/detail/archive.hpp>,
// which this header includes along with cereal's support for the std types listed below.
//
// Transferable: arithmetic types and enums; trivially copyable, default-constructible aggregates
// without serialize functions whose members are all plain values, checked member by member:
// numbers, enums, arrays and std::array of them, nested such aggregates (copied as bytes); other
// trivially copyable types the user vouches for with copy_as_bytes<T> (archive.hpp); std::string;
// std::vector, std::array, std::deque, std::list, std::map, std::multimap, std::unordered_map,
// std::unordered_multimap, std::set, std::multiset, std::unordered_set, std::unordered_multiset,
// std::optional, std::variant, std::pair, std::tuple, std::complex (copied as bytes) and
// std::chrono durations and time points of transferable types, nested; default-constructible
// classes with a cereal-style serialize(Archive&) or save/load, member or free (multiproc's handles
// are such classes).
//
// Not transferable: raw pointers, member pointers, references and views (std::string_view,
// std::span, std::reference_wrapper), C arrays (use std::array), function objects
// (std::function, lambdas with captures), smart pointers, and classes with none of the above.
// A struct with a raw pointer or view member is refused at compile time, naming the struct: give
// it a serialize function that writes what the pointer refers to. A trivially copyable class that
// cannot be checked (constructors or private members, a union, a base class, an empty-struct
// member, over 32 members) is refused too, unless it has a serialize function or is opted in:
//   template <> struct multiproc::copy_as_bytes<Fixed> : std::true_type {};
#pragma once

// Every public header comes through here: say plainly what a pre-C++20 compile mode is missing
// (the build files add no -std flag for users of pkg-config).
#if __cplusplus < 202002L
#error "multiproc needs C++20 or later: compile with -std=c++20 (or a later standard)"
#endif

#include <chrono>
#include <cstddef>
#include <cstdlib>
#include <cstring>
#include <deque>
#include <functional>
#include <list>
#include <map>
#include <memory>
#include <optional>
#include <set>
#include <string>
#include <string_view>
#include <tuple>
#include <type_traits>
#include <typeinfo>
#include <unordered_map>
#include <unordered_set>
#include <utility>
#include <variant>
#include <vector>

#include <multiproc/detail/archive.hpp>
#include <multiproc/detail/handle.hpp>
#include <multiproc/errors.hpp>

#if defined(__GNUG__)
#include <cxxabi.h>
#endif

namespace multiproc {

namespace detail {

// Types refused outright, whatever cereal would say (cereal declares a serialize for raw pointers
// only to fail inside it). Smart pointers are refused on purpose: a pointer promises shared or
// owned state in this process, and the receiver would get an unrelated copy whose changes never
// come back. Send the value (std::optional<T> for "maybe a value"), or share state through a
// multiproc handle (Value, Array, a manager proxy).
template <class T>
struct is_refused_type
    : std::bool_constant<std::is_void_v<T> || std::is_reference_v<T> || std::is_pointer_v<T> ||
                         std::is_member_pointer_v<T> || std::is_null_pointer_v<T> ||
                         std::is_function_v<T> || std::is_array_v<T> || is_view_type<T>::value ||
                         is_specialization_of<T, std::function>::value ||
                         is_specialization_of<T, std::unique_ptr>::value ||
                         is_specialization_of<T, std::shared_ptr>::value ||
                         is_specialization_of<T, std::weak_ptr>::value> {};

// cereal can write and read T with our archives, exactly one way each, and load() can make one.
template <class T>
struct is_cereal_serializable
    : std::bool_constant<std::is_default_constructible_v<T> && std::is_move_constructible_v<T> &&
                         cereal::traits::is_output_serializable<T, OutputArchive>::value &&
                         cereal::traits::is_input_serializable<T, InputArchive>::value> {};

// The recursive rule. The primary template covers scalars, plain bytes and classes with cereal
// functions; the specializations below look inside std containers, for which cereal's detection
// would say yes whatever the elements are.
template <class T>
struct transferable
    : std::conjunction<
          std::negation<is_refused_type<T>>,
          std::disjunction<std::is_arithmetic<T>, std::is_enum<T>,
                           std::bool_constant<is_plain_bytes_v<T>>, is_cereal_serializable<T>>> {};
template <class... Ts>
struct all_transferable : std::conjunction<transferable<std::remove_cv_t<Ts>>...> {};

template <class C, class Alloc>
struct transferable<std::basic_string<C, std::char_traits<C>, Alloc>> : std::is_arithmetic<C> {};
template <class T, class Alloc>
struct transferable<std::vector<T, Alloc>> : all_transferable<T> {};
template <class T, std::size_t N>
struct transferable<std::array<T, N>> : all_transferable<T> {};
template <class T, class Alloc>
struct transferable<std::deque<T, Alloc>> : all_transferable<T> {};
template <class T, class Alloc>
struct transferable<std::list<T, Alloc>> : all_transferable<T> {};
template <class K, class V, class Cmp, class Alloc>
struct transferable<std::map<K, V, Cmp, Alloc>> : all_transferable<K, V> {};
template <class K, class V, class Cmp, class Alloc>
struct transferable<std::multimap<K, V, Cmp, Alloc>> : all_transferable<K, V> {};
template <class K, class V, class Hash, class Eq, class Alloc>
struct transferable<std::unordered_map<K, V, Hash, Eq, Alloc>> : all_transferable<K, V> {};
template <class K, class V, class Hash, class Eq, class Alloc>
struct transferable<std::unordered_multimap<K, V, Hash, Eq, Alloc>> : all_transferable<K, V> {};
template <class K, class Cmp, class Alloc>
struct transferable<std::set<K, Cmp, Alloc>> : all_transferable<K> {};
template <class K, class Cmp, class Alloc>
struct transferable<std::multiset<K, Cmp, Alloc>> : all_transferable<K> {};
template <class K, class Hash, class Eq, class Alloc>
struct transferable<std::unordered_set<K, Hash, Eq, Alloc>> : all_transferable<K> {};
template <class K, class Hash, class Eq, class Alloc>
struct transferable<std::unordered_multiset<K, Hash, Eq, Alloc>> : all_transferable<K> {};
template <class T>
struct transferable<std::optional<T>> : all_transferable<T> {};
// Every alternative is made with emplace<N>() on load, so each must be default-constructible;
// the recursion checks that (std::monostate qualifies).
template <class... Ts>
struct transferable<std::variant<Ts...>> : all_transferable<Ts...> {};
template <class A, class B>
struct transferable<std::pair<A, B>> : all_transferable<A, B> {};
template <class... Ts>
struct transferable<std::tuple<Ts...>> : all_transferable<Ts...> {};
template <class Rep, class Period>
struct transferable<std::chrono::duration<Rep, Period>> : std::is_arithmetic<Rep> {};
// Clocks are system-wide on one machine (CLOCK_MONOTONIC too), so time points keep their meaning.
template <class Clock, class Duration>
struct transferable<std::chrono::time_point<Clock, Duration>> : all_transferable<Duration> {};

}  // namespace detail

// True when a T can be sent to another process (task argument, result, queue item). Asks about an
// object type: cv-qualifiers are ignored and a reference type is false (a reference is an address
// in this process). Transferable<T> strips references first; use it on deduced parameter types.
template <class T>
inline constexpr bool is_transferable_v = detail::transferable<std::remove_cv_t<T>>::value;

template <class T>
concept Transferable = is_transferable_v<std::remove_cvref_t<T>>;

namespace detail {

// Never defined: naming it with T makes the compiler print T in its error
// ("invalid application of 'sizeof' to incomplete type
//  'multiproc::detail::this_type_cannot_cross_a_process_boundary<int*>'").
template <class T>
struct this_type_cannot_cross_a_process_boundary;

template <class T>
inline constexpr bool dependent_false_v = false;

// Compiles to nothing when Transferable<T>; otherwise fails with the type named (see above) and a
// static_assert saying why and what is accepted. Call it first thing in every API template that
// will send a T to another process; cv-qualifiers and references on T are ignored.
template <class T>
constexpr void require_transferable() {
  using U = std::remove_cvref_t<T>;
  if constexpr (!Transferable<U>) {
    if constexpr (std::is_pointer_v<U> || std::is_member_pointer_v<U> ||
                  std::is_null_pointer_v<U>) {
      static_assert(dependent_false_v<U>,
                    "multiproc: a raw pointer cannot cross a process boundary: it is an address "
                    "in this process's memory. Send the value it points to (or a std::vector / "
                    "std::string of the values).");
    } else if constexpr (is_view_type<U>::value || std::is_array_v<U>) {
      static_assert(dependent_false_v<U>,
                    "multiproc: a view or reference (std::string_view, std::span, "
                    "std::reference_wrapper, C array) cannot cross a process boundary: it "
                    "refers to memory in this process. Send an owning std::string, std::vector "
                    "or std::array instead.");
    } else if constexpr (is_specialization_of<U, std::function>::value) {
      static_assert(dependent_false_v<U>,
                    "multiproc: a function object cannot cross a process boundary. Pass a free "
                    "function or a capture-free lambda as the task, and its state as arguments.");
    } else if constexpr (is_specialization_of<U, std::unique_ptr>::value ||
                         is_specialization_of<U, std::shared_ptr>::value ||
                         is_specialization_of<U, std::weak_ptr>::value) {
      static_assert(dependent_false_v<U>,
                    "multiproc: a smart pointer cannot cross a process boundary: the receiver "
                    "would get an unrelated copy. Send the value (std::optional for 'maybe a "
                    "value'), or share state through a multiproc handle (Value, Array, a manager "
                    "proxy).");
    } else if constexpr (plain_bytes_candidate<U> && !has_cereal_functions<U> &&
                         bytes_verdict<U>() == BytesVerdict::holds_address) {
      static_assert(dependent_false_v<U>,
                    "multiproc: this struct has a raw pointer or view member, an address in this "
                    "process, so its bytes cannot cross a process boundary: hold the data by value "
                    "(std::string, std::vector, std::array) or give the struct a "
                    "serialize(Archive&) that sends what the pointer refers to");
    } else if constexpr (plain_bytes_candidate<U> && !has_cereal_functions<U>) {
      static_assert(
          dependent_false_v<U>,
          "multiproc: cannot check this trivially copyable type member by member (it is "
          "not an aggregate, or a union, or has a base class, an empty-struct member or "
          "over 32 members): give it a serialize(Archive&), or, if its bytes mean the same in "
          "every process, specialize multiproc::copy_as_bytes<T> as std::true_type");
    } else {
      static_assert(dependent_false_v<U>,
                    "multiproc: this type cannot cross a process boundary. Accepted: arithmetic "
                    "types, enums, trivially copyable default-constructible structs (copied as "
                    "bytes), std::string, std::vector/array/deque/list/map/unordered_map/set/"
                    "unordered_set/optional/variant/pair/tuple of accepted types, and "
                    "default-constructible classes with a cereal serialize(Archive&) or "
                    "save/load (multiproc handles are such classes).");
    }
    (void)sizeof(this_type_cannot_cross_a_process_boundary<U>);
  }
}

// T's name for error messages, demangled where the compiler allows.
template <class T>
std::string demangled_type_name() {
  const char* mangled = typeid(T).name();
#if defined(__GNUG__)
  int status = 0;
  std::unique_ptr<char, void (*)(void*)> demangled(
      abi::__cxa_demangle(mangled, nullptr, nullptr, &status), std::free);
  if (status == 0 && demangled) return demangled.get();
#endif
  return mangled;
}

// Appends the encoding of value to out: sizeof(T) raw bytes for a plain-bytes T, cereal's binary
// layout through OutputArchive otherwise. Whatever out held before is left as it was, so several
// values can be appended in turn. Throws only what T's own save functions throw (and bad_alloc).
template <class T>
void dump(std::string& out, const T& value) {
  if constexpr (!Transferable<T>) {
    require_transferable<T>();
  } else if constexpr (is_plain_bytes_v<T>) {
    out.append(reinterpret_cast<const char*>(std::addressof(value)), sizeof(T));
  } else {
    OutputArchive archive(out);
    archive(value);
  }
}

// Decodes one T from [p, end) and advances p past it; p is left where it was when decoding fails.
// Throws ProcessError, naming T, on truncated or malformed input (a length larger than the bytes
// left, a bad variant index, a bool that is not 0 or 1, ...); never reads outside [p, end).
// Exceptions thrown by T's own load functions pass through unchanged.
// GCC 12 at -O3 reports a std::string member of `value` below as maybe used uninitialized once
// cereal's loads are inlined into a caller (a false positive: `value` is value-initialized).
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#endif
template <class T>
T load(const char*& p, const char* end) {
  if constexpr (!Transferable<T>) {
    require_transferable<T>();
    std::abort();  // not reached: the line above does not compile
  } else if constexpr (is_plain_bytes_v<T>) {
    // The fast path for queue items of arithmetic or struct type: no archive is built.
    const auto left = static_cast<std::size_t>(end - p);
    if (left < sizeof(T)) {
      throw ProcessError("multiproc: cannot decode a " + demangled_type_name<T>() +
                         ": truncated input: " + std::to_string(sizeof(T)) + " bytes needed, " +
                         std::to_string(left) + " left");
    }
    if constexpr (std::is_same_v<std::remove_cv_t<T>, bool>) {
      if (static_cast<unsigned char>(*p) > 1) {
        throw ProcessError("multiproc: cannot decode a bool: byte " +
                           std::to_string(static_cast<unsigned char>(*p)));
      }
    }
    std::remove_cv_t<T> value{};
    std::memcpy(static_cast<void*>(std::addressof(value)), p, sizeof(T));
    p += sizeof(T);
    return value;
  } else {
    InputArchive archive(p, end);
    try {
      // Handles default-constructed here are about to be loaded: they must not create objects.
      HandleLoadScope handles_loading;
      T value{};
      archive(value);
      p = archive.position();
      return value;
    } catch (const MalformedInput& e) {
      throw ProcessError("multiproc: cannot decode a " + demangled_type_name<T>() + ": " +
                         e.what());
    } catch (const cereal::Exception& e) {
      throw ProcessError("multiproc: cannot decode a " + demangled_type_name<T>() + ": " +
                         e.what());
    }
  }
}
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic pop
#endif

// Decodes one T that must fill bytes exactly; trailing bytes are an error (ProcessError).
template <class T>
T load(std::string_view bytes) {
  const char* p = bytes.data();
  const char* const end = bytes.data() + bytes.size();
  T value = load<T>(p, end);
  if (p != end) {
    throw ProcessError("multiproc: " + std::to_string(end - p) + " unexpected bytes after a " +
                       demangled_type_name<T>());
  }
  return value;
}

}  // namespace detail

}  // namespace multiproc
