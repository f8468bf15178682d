// Must not compile: a raw pointer is an address in this process and cannot be a queue item.
// The error must name the type and say why.
// expect-error: this_type_cannot_cross_a_process_boundary<int ?\*>
// expect-error: raw pointer cannot cross a process boundary
#include <multiproc/serialization.hpp>

void send_pointer() {
  multiproc::detail::require_transferable<int*>();
}
