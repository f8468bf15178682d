#include <multiproc/pool.hpp>

#include <unistd.h>

namespace multiproc {

Pool::Pool(PoolOptions options) {
  detail::PoolConfig cfg;
  cfg.processes = options.processes;
  cfg.method = options.context ? options.context->start_method() : get_start_method();
  cfg.maxtasksperchild = options.maxtasksperchild;
  cfg.has_initializer = options.initializer.is_set();
  cfg.initializer = options.initializer.code();
  cfg.initializer_args = options.initializer.args();
  cfg.initializer_objects = options.initializer.shared_objects();
  core_ = std::make_shared<detail::PoolCore>(std::move(cfg));
  core_->start();
}

Pool::Pool(int processes)
    : Pool(processes > 0
               ? PoolOptions{.processes = static_cast<unsigned>(processes)}
               : throw ProcessError("Pool: the number of processes must be at least 1, "
                                    "not " +
                                    std::to_string(processes) + " (Pool() uses cpu_count())")) {}

Pool::~Pool() {
  if (!core_) return;              // moved from
  if (core_->inherited()) return;  // a forked child's copy: the pool is its parent's
  try {
    // Python warns (ResourceWarning) about a pool left running; what is lost here is the results
    // of calls still pending, which terminate() fails with BrokenPool.
    if (size_t n = core_->pending_calls()) {
      std::string line = "multiproc: warning: Pool destroyed with " + std::to_string(n) +
                         " submitted call(s) still pending; they fail with BrokenPool (wait for "
                         "their results, or close() and join(), before the Pool goes)\n";
      (void)!::write(STDERR_FILENO, line.data(), line.size());
    }
    core_->terminate();
  } catch (...) {
    // A destructor must not throw; terminate() has already done what it could.
  }
}

void Pool::close() {
  core()->close();
}
void Pool::join() {
  core()->join(detail::Deadline::never());
}
void Pool::terminate() {
  core()->terminate();
}
unsigned Pool::processes() const {
  return core()->processes();
}
std::vector<pid_t> Pool::worker_pids() const {
  return core()->worker_pids();
}

}  // namespace multiproc
