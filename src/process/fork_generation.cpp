#include <multiproc/detail/fork_generation.hpp>

#include <pthread.h>

#include <atomic>

namespace multiproc::detail {
namespace {

// Registered at load time, by the object file that defines fork_generation(): whoever calls it
// links this file in, and the handler with it.
std::atomic<uint32_t> g_fork_generation{0};
[[maybe_unused]] const int g_fork_counter = pthread_atfork(
    nullptr, nullptr, [] { g_fork_generation.fetch_add(1, std::memory_order_relaxed); });

}  // namespace

uint32_t fork_generation() noexcept {
  return g_fork_generation.load(std::memory_order_relaxed);
}

}  // namespace multiproc::detail
