// For the tests of objects a forked child inherits as globals: a child that ends through
// std::exit(3), so that its static destructors run, the check of that child's exit code, and
// refused(), whether one use of the inherited copy threw its clear error.
#pragma once

#include <cstdlib>
#include <optional>
#include <string>

#include <multiproc/errors.hpp>

inline void exit_three() {
  std::exit(3);
}

// Whether `code` is exit_three()'s. Under ASan, LeakSanitizer runs at exit() and reports the
// parent's objects that the child's copy forgets on purpose (exit status 1, ASan's default).
inline bool exited_three(std::optional<int> code) {
#if defined(__SANITIZE_ADDRESS__)
  if (code == 1) return true;
#endif
  return code == 3;
}

// 0 if `use` threw the inherited copy's clear ProcessError, 1 otherwise (returned, timed out,
// threw something else).
template <class F>
int refused(F&& use) {
  try {
    use();
    return 1;
  } catch (const multiproc::ProcessError& e) {
    return std::string(e.what()).find("cannot use its copy") == std::string::npos;
  } catch (...) {
    return 1;
  }
}
