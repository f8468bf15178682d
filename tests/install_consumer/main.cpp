#include <cstdio>
#include <multiproc/multiproc.hpp>

namespace mp = multiproc;

int triple(int x);  // tasks.cpp, in libconsumer_tasks.so

int twice(int x) {
  return 2 * x;
}

int main(int argc, char** argv) {
  mp::init(argc, argv);
  for (auto method : {mp::StartMethod::fork, mp::StartMethod::spawn, mp::StartMethod::forkserver}) {
    mp::Pool pool(mp::PoolOptions{.processes = 2, .context = mp::get_context(method)});
    auto ys = pool.map(twice, std::vector<int>{1, 2, 3});
    auto zs = pool.map(triple, std::vector<int>{1, 2, 3});
    if (ys != std::vector<int>{2, 4, 6} || zs != std::vector<int>{3, 6, 9}) {
      std::printf("consumer: wrong results under %s\n", std::string(mp::to_string(method)).c_str());
      return 1;
    }
  }
  mp::Queue<int> q;
  q.put(6);
  std::printf("consumer: %d %s\n", q.get(), MULTIPROC_VERSION);
  return q.empty() ? 0 : 1;
}
