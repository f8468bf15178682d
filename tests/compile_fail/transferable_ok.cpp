// Must compile: the positive control, proving that the harness (compiler, flags, include paths)
// accepts good code, so that the failures of its siblings are about the types they name.
#include <map>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include <multiproc/serialization.hpp>

namespace {
struct Pod {
  int a;
  double b;
};
struct WithSerialize {
  std::string s;
  template <class Archive>
  void serialize(Archive& ar) {
    ar(s);
  }
};
}  // namespace

using Nested = std::map<std::string, std::vector<std::optional<std::pair<int, std::string>>>>;

void send_good_things(std::string& out) {
  multiproc::detail::require_transferable<int>();
  multiproc::detail::require_transferable<Pod>();
  multiproc::detail::require_transferable<const std::string&>();
  multiproc::detail::require_transferable<Nested>();
  multiproc::detail::dump(out, WithSerialize{"x"});
  multiproc::detail::dump(out, std::vector<Pod>{});
  const char* p = out.data();
  (void)multiproc::detail::load<WithSerialize>(p, out.data() + out.size());
  (void)multiproc::detail::load<Nested>(std::string_view(out));
}
