#include <multiproc/pool.hpp>

namespace multiproc {

Pool::Pool(PoolOptions options) {
  detail::PoolConfig cfg;
  cfg.processes = options.processes;
  cfg.method = options.context ? options.context->start_method() : get_start_method();
  cfg.maxtasksperchild = options.maxtasksperchild;
  cfg.has_initializer = options.initializer.is_set();
  cfg.initializer = options.initializer.code();
  cfg.initializer_args = options.initializer.args();
  core_ = std::make_shared<detail::PoolCore>(std::move(cfg));
  core_->start();
}

Pool::~Pool() {
  if (core_) core_->terminate();
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
