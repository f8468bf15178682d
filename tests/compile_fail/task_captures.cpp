// Must not compile: a lambda with captures as a task, for every API that takes a task. The first
// error line must name the problem and the fix (not a list of overload candidates).
// variants: process apply apply_async map imap starmap
// expect-first-error: a task may not capture: pass the state as an argument
#include <tuple>
#include <vector>

#include <multiproc/pool.hpp>
#include <multiproc/process.hpp>

void submit(multiproc::Pool& pool, int k) {
  auto task = [k](int x) { return x + k; };
#if defined(VARIANT_process)
  multiproc::Process p(task, 1);
#elif defined(VARIANT_apply)
  int r = pool.apply(task, 1);
#elif defined(VARIANT_apply_async)
  auto r = pool.apply_async(task, 1);
#elif defined(VARIANT_map)
  std::vector<int> r = pool.map(task, std::vector<int>{1, 2});
#elif defined(VARIANT_imap)
  for (int y : pool.imap(task, std::vector<int>{1, 2})) (void)y;
#elif defined(VARIANT_starmap)
  std::vector<int> r = pool.starmap(task, std::vector<std::tuple<int> >{{1}});
#endif
}
