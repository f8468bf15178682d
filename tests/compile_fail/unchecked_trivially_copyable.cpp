// Must not compile: a trivially copyable class that is not an aggregate (a constructor, private
// members) cannot be checked member by member; it needs a serialize function or the explicit
// opt-in, and the error says both.
// expect-first-error: cannot check this trivially copyable type member by member.*copy_as_bytes
// expect-error: this_type_cannot_cross_a_process_boundary<Fixed>
#include <multiproc/serialization.hpp>

class Fixed {
 public:
  Fixed() = default;
  explicit Fixed(long raw) : raw_(raw) {}
  long raw() const { return raw_; }

 private:
  long raw_ = 0;
};

void send(std::string& out) {
  multiproc::detail::dump(out, Fixed(3));
}
