// A forked child that ends through std::exit(3), so that its static destructors run (the tests of
// objects a child inherits as globals), and the check of that child's exit code.
#pragma once

#include <cstdlib>
#include <optional>

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
