// Must not compile: a std::function holds code and captured state of this process.
// expect-error: this_type_cannot_cross_a_process_boundary<std::function<void ?\(\)> ?>
// expect-error: function object cannot cross a process boundary
#include <functional>

#include <multiproc/serialization.hpp>

void send_function() {
  multiproc::detail::require_transferable<std::function<void()>>();
}
