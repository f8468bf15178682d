// A program that breaks the rule "multiproc::init(argc, argv) is the first line of main()":
//   no_init <method>            never calls init()
//   no_init <method> --init     calls init() only when given --init, so the children (started
//                               without arguments) skip it and go on into main's pool code
// Either way spawn/forkserver must fail in the parent with a clear error, within seconds, and
// must not start processes without end.
#include <cstdio>
#include <cstring>

#include <multiproc/multiproc.hpp>

namespace mp = multiproc;

int twice(int x) {
  return 2 * x;
}

int main(int argc, char** argv) {
  if (argc > 2 && std::strcmp(argv[2], "--init") == 0) mp::init(argc, argv);
  mp::StartMethod m = argc > 1 && std::strcmp(argv[1], "forkserver") == 0
                          ? mp::StartMethod::forkserver
                          : mp::StartMethod::spawn;
  try {
    mp::Pool pool(mp::PoolOptions{.processes = 2, .context = mp::get_context(m)});
    std::printf("pool result %d\n", pool.apply(twice, 21));
    return 0;
  } catch (const mp::ProcessError& e) {
    std::fprintf(stderr, "error: %s\n", e.what());
    return 2;
  }
}
