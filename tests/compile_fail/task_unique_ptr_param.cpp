// Must not compile: a task whose parameter is a std::unique_ptr (the receiver would get an
// unrelated copy), for every API that takes a task. The first error line must say so and how to
// fix it (not an invoke_result failure deep in the library).
// variants: process apply apply_async map imap starmap
// expect-first-error: a smart pointer cannot cross a process boundary.*Send the value
// expect-error: this_type_cannot_cross_a_process_boundary<std::unique_ptr<int
#include <memory>
#include <tuple>
#include <vector>

#include <multiproc/pool.hpp>
#include <multiproc/process.hpp>

int consume(std::unique_ptr<int> p) {
  return *p;
}

void submit(multiproc::Pool& pool) {
#if defined(VARIANT_process)
  multiproc::Process p(consume, std::make_unique<int>(1));
#elif defined(VARIANT_apply)
  int r = pool.apply(consume, std::make_unique<int>(1));
#elif defined(VARIANT_apply_async)
  auto r = pool.apply_async(consume, std::make_unique<int>(1));
#elif defined(VARIANT_map)
  auto r = pool.map(consume, std::vector<std::unique_ptr<int> >{});
#elif defined(VARIANT_imap)
  for (int y : pool.imap(consume, std::vector<std::unique_ptr<int> >{})) (void)y;
#elif defined(VARIANT_starmap)
  auto r = pool.starmap(consume, std::vector<std::tuple<std::unique_ptr<int> > >{});
#endif
}
