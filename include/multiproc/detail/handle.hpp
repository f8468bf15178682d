// Support for handles (queues, locks, values...): objects that name shared state and can be
// copied into another process.
//
// Deserializing a handle first default-constructs it; a handle's default constructor normally
// creates a new shared object, which would be wasted work (and a segment) when the next thing
// that happens is load(). While a HandleLoadScope is active on this thread, handle default
// constructors leave the handle empty for load() to fill.
#pragma once

#include <string>

#include <multiproc/errors.hpp>

namespace multiproc::detail {

inline thread_local int t_handle_load_depth = 0;

struct HandleLoadScope {
  HandleLoadScope() { ++t_handle_load_depth; }
  ~HandleLoadScope() { --t_handle_load_depth; }
  HandleLoadScope(const HandleLoadScope&) = delete;
  HandleLoadScope& operator=(const HandleLoadScope&) = delete;
};

inline bool loading_handles() {
  return t_handle_load_depth > 0;
}

[[noreturn]] inline void throw_empty_handle(const char* what) {
  throw ProcessError(std::string(what) +
                     ": this handle is empty (it was default-constructed during deserialization "
                     "and never loaded)");
}

}  // namespace multiproc::detail
