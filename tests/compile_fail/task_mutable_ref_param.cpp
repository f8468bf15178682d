// Must not compile: a task taking a non-const lvalue reference. It used to compile and the
// task's changes were silently lost (they happen in another process). For every API that takes a
// task, the first error line must name the problem and the fix.
// variants: process apply apply_async map imap starmap
// expect-first-error: a task may not take a non-const reference \(T&\).*take T or const T&
#include <tuple>
#include <vector>

#include <multiproc/pool.hpp>
#include <multiproc/process.hpp>

int bump(int& x) {
  return ++x;
}

void submit(multiproc::Pool& pool) {
  int v = 1;
#if defined(VARIANT_process)
  multiproc::Process p(bump, v);
#elif defined(VARIANT_apply)
  int r = pool.apply(bump, v);
#elif defined(VARIANT_apply_async)
  auto r = pool.apply_async(bump, v);
#elif defined(VARIANT_map)
  std::vector<int> r = pool.map(bump, std::vector<int>{1, 2});
#elif defined(VARIANT_imap)
  for (int y : pool.imap(bump, std::vector<int>{1, 2})) (void)y;
#elif defined(VARIANT_starmap)
  std::vector<int> r = pool.starmap(bump, std::vector<std::tuple<int> >{{1}});
#endif
}
