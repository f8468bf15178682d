// Soak (issue 14): 1,000,000 small pool tasks, 10,000,000 queue items through the same pool and
// 100,000 manager proxy calls, in ten equal rounds. After the first round (the warm-up: rings
// grown, buffers pooled, connections made), the parent's, the workers' and the manager server's
// resident memory, the parent's open descriptors and the /dev/shm space of this program stay flat.
// The bounds are generous: they catch a leak per item or per task, not allocator noise.
#include <dirent.h>
#include <sys/stat.h>
#include <unistd.h>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <numeric>
#include <set>
#include <string>
#include <vector>

#include "start_methods.hpp"

using namespace std::chrono_literals;

namespace {

constexpr int kRounds = 10;
constexpr int kTasksPerRound = 100000;        // 1,000,000 in all
constexpr uint64_t kItemsPerRound = 1000000;  // 10,000,000 in all
constexpr int kManagerCallsPerRound = 10000;  // 100,000 in all
constexpr int kMappedPerRound = 90000;        // of the tasks, through map; the rest apply_async
constexpr unsigned kWorkers = 2;

int64_t tiny(int64_t x) {
  return x * 3 + 1;
}

// Takes items one by one until a zero (each worker gets one zero; a batch get could take both).
uint64_t drain(mp::Queue<uint64_t> q) {
  uint64_t sum = 0;
  for (uint64_t x = q.get(); x != 0; x = q.get()) sum += x;
  return sum;
}

int64_t rss_kib(pid_t pid) {
  std::ifstream f("/proc/" + std::to_string(pid) + "/statm");
  int64_t size = 0, resident = 0;
  f >> size >> resident;
  return resident * (sysconf(_SC_PAGESIZE) / 1024);
}

// Allocated /dev/shm space (KiB) of the segments these processes created ("<prefix><pid>_...").
int64_t shm_kib(const std::set<pid_t>& creators) {
  const char* env = std::getenv("MULTIPROC_SHM_PREFIX");
  const std::string prefix = env && *env ? env : "mp";
  int64_t kib = 0;
  if (DIR* d = opendir("/dev/shm")) {
    while (dirent* e = readdir(d)) {
      if (std::strncmp(e->d_name, prefix.c_str(), prefix.size()) != 0) continue;
      pid_t creator = static_cast<pid_t>(std::atoi(e->d_name + prefix.size()));
      if (!creators.count(creator)) continue;
      struct stat st {};
      if (stat(("/dev/shm/" + std::string(e->d_name)).c_str(), &st) == 0)
        kib += static_cast<int64_t>(st.st_blocks) / 2;
    }
    closedir(d);
  }
  return kib;
}

struct Sample {
  int64_t parent_kib, workers_kib, manager_kib, shm;
  int fds;
};

}  // namespace

TEST(Soak, MemoryDescriptorsAndShmStayFlat) {
  mp::Manager manager;
  auto dict = manager.dict<int64_t, int64_t>();
  mp::Pool pool(kWorkers);
  mp::Queue<uint64_t> q(65536);
  std::vector<int64_t> inputs(kMappedPerRound);
  std::iota(inputs.begin(), inputs.end(), 0);

  auto sample = [&] {
    Sample s{rss_kib(getpid()), 0, rss_kib(manager.pid()), 0, count_open_fds()};
    std::set<pid_t> creators{getpid(), manager.pid()};
    for (pid_t w : pool.worker_pids()) {
      s.workers_kib += rss_kib(w);
      creators.insert(w);
    }
    s.shm = shm_kib(creators);
    return s;
  };

  Sample warm{}, worst{};
  for (int round = 0; round < kRounds; ++round) {
    // Tasks: most through map, the rest one by one.
    auto mapped = pool.map(tiny, inputs, 64);
    ASSERT_EQ(mapped.size(), inputs.size());
    ASSERT_EQ(mapped.back(), tiny(inputs.back()));
    std::vector<mp::AsyncResult<int64_t>> singles;
    singles.reserve(kTasksPerRound - kMappedPerRound);
    for (int i = 0; i < kTasksPerRound - kMappedPerRound; ++i)
      singles.push_back(pool.apply_async(tiny, int64_t{i}));
    for (int i = 0; i < kTasksPerRound - kMappedPerRound; ++i)
      ASSERT_EQ(singles[i].get(60s), tiny(i));

    // Queue items: the parent puts, the same pool's workers take.
    std::vector<mp::AsyncResult<uint64_t>> drains;
    for (unsigned w = 0; w < kWorkers; ++w) drains.push_back(pool.apply_async(drain, q));
    for (uint64_t x = 1; x <= kItemsPerRound; ++x) q.put(x);
    for (unsigned w = 0; w < kWorkers; ++w) q.put(0);
    uint64_t sum = 0;
    for (auto& d : drains) sum += d.get(60s);
    ASSERT_EQ(sum, kItemsPerRound * (kItemsPerRound + 1) / 2);

    // Manager calls, over a bounded set of keys.
    for (int i = 0; i < kManagerCallsPerRound / 2; ++i) {
      dict.set(i % 1000, i);
      ASSERT_EQ(dict.get(i % 1000), i);
    }

    Sample s = sample();
    std::printf(
        "soak round %d: parent %lld KiB, workers %lld KiB, manager %lld KiB, %d fds, shm %lld "
        "KiB\n",
        round, static_cast<long long>(s.parent_kib), static_cast<long long>(s.workers_kib),
        static_cast<long long>(s.manager_kib), s.fds, static_cast<long long>(s.shm));
    if (round == 0) {
      warm = worst = s;
    } else {
      worst.parent_kib = std::max(worst.parent_kib, s.parent_kib);
      worst.workers_kib = std::max(worst.workers_kib, s.workers_kib);
      worst.manager_kib = std::max(worst.manager_kib, s.manager_kib);
      worst.shm = std::max(worst.shm, s.shm);
      worst.fds = std::max(worst.fds, s.fds);
    }
  }
  // Nine rounds after the warm-up: 900,000 tasks, 9,000,000 items, 90,000 manager calls. A leak of
  // 40 bytes per task, 4 per queue item or 200 per manager call passes these bounds; allocator
  // noise (a few MiB) stays well below them.
  EXPECT_LE(worst.parent_kib - warm.parent_kib, 32 * 1024);
  EXPECT_LE(worst.workers_kib - warm.workers_kib, 32 * 1024);
  EXPECT_LE(worst.manager_kib - warm.manager_kib, 16 * 1024);
  EXPECT_LE(worst.shm - warm.shm, 16 * 1024);
  EXPECT_LE(worst.fds - warm.fds, 2);
  pool.close();
  pool.join();
  manager.shutdown();
}
