// Entry point and start methods (CPython's context.py).
//
// init() must be the first line of main(): in a child started by spawn or forkserver it runs the
// child's work and never returns (Python's `if __name__ == '__main__'` guard, inverted). A
// Context is a factory bound to one start method; the free functions use the default one.
#pragma once

#include <string>
#include <string_view>
#include <vector>

namespace multiproc {

enum class StartMethod { fork, spawn, forkserver };

std::string_view to_string(StartMethod m);

// Call first in main(). In the parent it records argv (spawn re-executes the program with it)
// and returns; in a spawned/forkserver child it runs the child's task and exits.
void init(int argc, char** argv);
// Whether init() has been called in this process.
bool initialized();

// Sets the default start method. Allowed until the first process starts; afterwards only the
// same method (anything else throws ProcessError, like Python's "context has already been set").
// `force` allows changing a method set earlier, as long as no process has started.
void set_start_method(StartMethod m, bool force = false);
StartMethod get_start_method();  // default: fork
// Every start method this platform offers, the platform's default (fork) first, whatever
// set_start_method() chose (Python's get_all_start_methods()).
std::vector<StartMethod> get_all_start_methods();

// Number of CPUs this process may run on (its affinity mask), at least 1.
unsigned cpu_count();

class Context {
 public:
  explicit Context(StartMethod m) : method_(m) {}
  StartMethod start_method() const { return method_; }
  StartMethod get_start_method() const { return method_; }
  bool operator==(const Context&) const = default;

 private:
  StartMethod method_;
};

// A context for `m` (the default method when omitted).
Context get_context();
Context get_context(StartMethod m);

namespace detail {
// Called by everything that starts a process: refuses to run in a spawned child whose main()
// skipped init() (which would otherwise start processes of its own, recursively).
void check_can_start_processes(StartMethod m);
// Marks that a process has been started (set_start_method's rule).
void note_process_started();
const std::string& saved_executable();
// What init() runs, then exits with, when the command line has --multiproc-worker: set by an
// optional component (multiproc::redis) from a static initializer, so the core never links it.
void set_worker_entry(int (*entry)(int argc, char** argv));
}  // namespace detail

}  // namespace multiproc
