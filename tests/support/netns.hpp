// Network namespaces for tests that play several hosts: enter_new_netns() puts the calling
// process into a new network namespace (first inside a new user namespace where it is not root
// already), and run_quiet() runs an `ip` command. Use them only in a forked child of the test,
// never in the test binary itself; a child that cannot make its namespace exits with kNetnsSkip
// and the test skips.
#pragma once

#include <sched.h>
#include <unistd.h>

#include <cstdio>
#include <cstdlib>
#include <string>

inline constexpr int kNetnsSkip = 77;

inline bool run_quiet(const std::string& cmd) {
  return std::system((cmd + " >/dev/null 2>&1").c_str()) == 0;
}

// `first`: this process may make the user namespace too; a later one (forked from the first)
// is already root in it and only makes its network namespace.
inline bool enter_new_netns(bool first) {
  if (::unshare(CLONE_NEWNET) == 0) return true;
  if (!first || ::unshare(CLONE_NEWUSER | CLONE_NEWNET) != 0) return false;
  auto write = [](const char* path, const std::string& text) {
    FILE* f = std::fopen(path, "w");
    if (!f) return false;
    bool ok = std::fputs(text.c_str(), f) >= 0;
    return std::fclose(f) == 0 && ok;
  };
  const std::string uid = std::to_string(::geteuid()), gid = std::to_string(::getegid());
  return write("/proc/self/setgroups", "deny") && write("/proc/self/uid_map", "0 " + uid + " 1") &&
         write("/proc/self/gid_map", "0 " + gid + " 1");
}
