// A large array handed to pool workers without copying it: the parent fills a SharedMemory block
// with 32 Mi int64 values (256 MiB), and each worker receives the block (its name crosses, not its
// bytes), attaches to it and sums its own slice in place. The parent checks the total against the
// closed form and unlinks the block: whoever creates a block unlinks it (Python's rule). Run with
// an argument fork, spawn or forkserver to pick the start method.
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <numeric>
#include <string>
#include <vector>

#include <multiproc/multiproc.hpp>
#include <multiproc/shared_memory.hpp>

namespace mp = multiproc;

namespace {

// Runs in a worker: reads values [begin, end) of the block where they lie.
int64_t sum_slice(mp::SharedMemory block, size_t begin, size_t end) {
  const auto* values = reinterpret_cast<const int64_t*>(block.buf().data());
  return std::accumulate(values + begin, values + end, int64_t{0});
}

}  // namespace

int main(int argc, char** argv) {
  mp::init(argc, argv);
  for (mp::StartMethod m :
       {mp::StartMethod::fork, mp::StartMethod::spawn, mp::StartMethod::forkserver})
    if (argc > 1 && mp::to_string(m) == argv[1]) mp::set_start_method(m);
  constexpr size_t kCount = size_t{32} << 20;  // 256 MiB of int64
  constexpr unsigned kWorkers = 4;

  mp::SharedMemory block = mp::SharedMemory::create(kCount * sizeof(int64_t));
  auto* values = reinterpret_cast<int64_t*>(block.buf().data());
  std::iota(values, values + kCount, int64_t{0});

  const auto start = std::chrono::steady_clock::now();
  int64_t total = 0;
  {
    mp::Pool pool(kWorkers);
    std::vector<mp::AsyncResult<int64_t>> parts;
    for (unsigned w = 0; w < kWorkers; ++w)
      parts.push_back(
          pool.apply_async(sum_slice, block, kCount * w / kWorkers, kCount * (w + 1) / kWorkers));
    for (auto& part : parts) total += part.get();
    pool.close();
    pool.join();
  }
  const double ms =
      std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - start).count();
  block.unlink();

  const int64_t expected = static_cast<int64_t>(kCount) * (static_cast<int64_t>(kCount) - 1) / 2;
  std::printf("start method: %s\n", std::string(mp::to_string(mp::get_start_method())).c_str());
  std::printf("%u workers summed %zu MiB in place in %.1f ms: %lld (%s)\n", kWorkers,
              kCount * sizeof(int64_t) >> 20, ms, static_cast<long long>(total),
              total == expected ? "correct" : "WRONG");
  return total == expected ? 0 : 1;
}
