// A process's parent, whether it has ended, and its descendants (all, or the live ones), read
// from /proc: for tests that check that nothing a run started outlives it (run it as a child of a
// PR_SET_CHILD_SUBREAPER process, so that orphans stay below it).
#pragma once

#include <dirent.h>
#include <sys/types.h>

#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <map>
#include <set>
#include <vector>

// Parent pid and state letter of `pid` from /proc/<pid>/stat; false when it is gone.
inline bool proc_stat(pid_t pid, pid_t& ppid, char& state) {
  char path[64], buf[512] = {};
  std::snprintf(path, sizeof path, "/proc/%d/stat", static_cast<int>(pid));
  FILE* f = std::fopen(path, "r");
  if (!f) return false;
  const size_t n = std::fread(buf, 1, sizeof buf - 1, f);
  std::fclose(f);
  buf[n] = 0;
  const char* close = std::strrchr(buf, ')');  // the name may hold spaces and parentheses
  int p = -1;
  if (!close || std::sscanf(close + 1, " %c %d", &state, &p) != 2) return false;
  ppid = static_cast<pid_t>(p);
  return true;
}

// The parent of `pid`; -1 when it is gone.
inline pid_t parent_of(pid_t pid) {
  pid_t ppid = -1;
  char state = 0;
  return proc_stat(pid, ppid, state) ? ppid : -1;
}

// Whether `pid` is still there and not a zombie (ended, waiting to be reaped).
inline bool exists_unreaped(pid_t pid) {
  pid_t ppid = -1;
  char state = 0;
  return proc_stat(pid, ppid, state) && state != 'Z';
}

// The descendants of `root`, walking /proc's parent links. A zombie (and what is below it) counts
// only `with_zombies`.
inline std::set<pid_t> descendants_of(pid_t root, bool with_zombies) {
  std::map<pid_t, std::vector<pid_t>> kids;
  std::set<pid_t> zombies;
  if (DIR* d = opendir("/proc")) {
    while (dirent* e = readdir(d)) {
      const auto pid = static_cast<pid_t>(std::atoi(e->d_name));
      pid_t ppid = -1;
      char state = 0;
      if (pid <= 0 || !proc_stat(pid, ppid, state)) continue;
      kids[ppid].push_back(pid);
      if (state == 'Z' && !with_zombies) zombies.insert(pid);
    }
    closedir(d);
  }
  std::set<pid_t> out;
  std::vector<pid_t> todo{root};
  while (!todo.empty()) {
    const pid_t p = todo.back();
    todo.pop_back();
    for (pid_t k : kids[p])
      if (!zombies.count(k) && out.insert(k).second) todo.push_back(k);
  }
  return out;
}

inline std::set<pid_t> live_descendants(pid_t root) {
  return descendants_of(root, false);
}
