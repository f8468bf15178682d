#include <cstdio>
#include <multiproc/multiproc.hpp>

namespace mp = multiproc;

int twice(int x) {
  return 2 * x;
}

int main(int argc, char** argv) {
  mp::init(argc, argv);
  mp::Pool pool(2);
  auto ys = pool.map(twice, std::vector<int>{1, 2, 3});
  mp::Queue<int> q;
  q.put(ys[2]);
  std::printf("consumer: %d %s\n", q.get(), MULTIPROC_VERSION);
  return q.empty() && ys == std::vector<int>{2, 4, 6} ? 0 : 1;
}
