// Must not compile: dump() of a std::string_view, which refers to memory in this process. Goes
// through dump() rather than require_transferable() directly, as API code will.
// expect-error: this_type_cannot_cross_a_process_boundary<std::basic_string_view<char> ?>
// expect-error: cannot cross a process boundary
#include <string>
#include <string_view>

#include <multiproc/serialization.hpp>

void send_view(std::string& out, std::string_view text) {
  multiproc::detail::dump(out, text);
}
