// shared_memory with multiproc's SharedMemory: the 256 MiB live in one block; each of the 2 pool
// workers gets the block (its name crosses, 30-odd bytes) and checksums its half in place.
#include <multiproc/multiproc.hpp>
#include <multiproc/shared_memory.hpp>

#include <cstdint>
#include <numeric>
#include <vector>

#include "_handoff.hpp"

namespace mp = multiproc;

namespace {

handoff::Sums checksum_slice(mp::SharedMemory block, std::size_t begin, std::size_t end) {
  handoff::Sums s{};
  handoff::add(s, reinterpret_cast<const std::int64_t*>(block.buf().data()) + begin, end - begin);
  return s;
}

}  // namespace

int main(int argc, char** argv) {
  mp::init(argc, argv);
  const bench::Options opt =
      bench::parse_options(argc, argv, "shared_memory", "multiproc", /*uses_placement=*/false);
  const std::size_t n = handoff::values(opt.mode);
  mp::SharedMemory block = mp::SharedMemory::create(static_cast<std::int64_t>(n * 8));
  auto* v = reinterpret_cast<std::int64_t*>(block.buf().data());
  std::iota(v, v + n, std::int64_t{0});

  mp::Pool pool(2);
  (void)pool.apply(checksum_slice, block, std::size_t{0}, std::size_t{1});  // started, warm
  const int rc = handoff::measure(opt, n, [&] {
    auto first = pool.apply_async(checksum_slice, block, std::size_t{0}, n / 2);
    auto second = pool.apply_async(checksum_slice, block, n / 2, n);
    return std::vector<handoff::Sums>{first.get(), second.get()};
  });
  pool.close();
  pool.join();
  block.unlink();
  return rc;
}
