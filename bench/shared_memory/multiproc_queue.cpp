// shared_memory with a multiproc Queue instead: the same 256 MiB sent in 1 MiB chunks
// (std::vector<int64_t>) through one bounded Queue; each of the 2 pool workers takes half the
// chunks and checksums them. The parent's copy into the queue is part of the hand-off.
#include <multiproc/multiproc.hpp>

#include <algorithm>
#include <cstdint>
#include <numeric>
#include <vector>

#include "_handoff.hpp"

namespace mp = multiproc;

namespace {

constexpr std::size_t kChunkValues = 128 * 1024;  // 1 MiB

handoff::Sums checksum_chunks(mp::Queue<std::vector<std::int64_t>> q, std::size_t chunks) {
  handoff::Sums s{};
  for (std::size_t c = 0; c < chunks; ++c) {
    const std::vector<std::int64_t> chunk = q.get();
    handoff::add(s, chunk.data(), chunk.size());
  }
  return s;
}

}  // namespace

int main(int argc, char** argv) {
  mp::init(argc, argv);
  const bench::Options opt = bench::parse_options(argc, argv, "shared_memory", "multiproc_queue",
                                                  /*uses_placement=*/false);
  const std::size_t n = handoff::values(opt.mode);
  std::vector<std::int64_t> values(n);
  std::iota(values.begin(), values.end(), std::int64_t{0});
  const std::size_t chunks = (n + kChunkValues - 1) / kChunkValues;

  mp::Queue<std::vector<std::int64_t>> q(16);
  mp::Pool pool(2);
  (void)pool.apply(checksum_chunks, q, std::size_t{0});  // started, warm
  const int rc = handoff::measure(opt, n, [&] {
    auto first = pool.apply_async(checksum_chunks, q, chunks / 2);
    auto second = pool.apply_async(checksum_chunks, q, chunks - chunks / 2);
    for (std::size_t c = 0; c < chunks; ++c) {
      const std::size_t begin = c * kChunkValues, end = std::min(n, begin + kChunkValues);
      q.put(std::vector<std::int64_t>(values.begin() + static_cast<std::ptrdiff_t>(begin),
                                      values.begin() + static_cast<std::ptrdiff_t>(end)));
    }
    return std::vector<handoff::Sums>{first.get(), second.get()};
  });
  pool.close();
  pool.join();
  return rc;
}
