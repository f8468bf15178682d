// Chaos (issue 14): the whole pipeline under random SIGKILLs, under each start method.
//
//   producers ─▶ Queue `in` ─▶ (parent's dispatcher) ─▶ Pool workers ─▶ manager dict + manager
//   Queue `mid` ─▶ consumers (also manager clients) ─▶ Queue `out` ─▶ the parent
//
// A killer SIGKILLs random pool workers, producers and consumers (every one of them a client of the
// Manager: workers and consumers call the hosted dict) at random moments, 100+ times per start
// method, never the parent or the manager's server. Afterwards every acknowledged item (one whose
// put() returned, as the producer recorded in shared memory right after) must be accounted for:
//   - the dispatcher got it from `in` exactly once (the parent is never killed, so nothing there
//     may be lost; an unacknowledged item, the one a killed producer had in flight, may be
//     missing);
//   - its pool task either returned the right value or failed with WorkerLost (nothing else);
//   - it reached `out` at most once, intact; one whose task succeeded is missing from `out` only if
//     a consumer was killed (each consumer kill loses at most the one item it had in hand);
//   - nothing hung (every wait is bounded), and once the run's program has ended, no process it
//     started and no /dev/shm file of its prefix is left, and inside it no descriptor leaked.
//
// Each start method runs as a separate program (this binary again, filtered to ChaosRun.Pipeline)
// under its own MULTIPROC_SHM_PREFIX, in its own process group, as a child of a subreaper, so that
// what it leaves behind can be seen. The seed (MULTIPROC_CHAOS_SEED to replay another) chooses the
// victims and the delays; it is printed. Timing still varies from run to run, so a seed replays
// the same kill schedule, not the same interleaving.
#include <atomic>
#include <csignal>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <deque>
#include <map>
#include <random>
#include <string>
#include <thread>
#include <vector>

#include "chaos.hpp"

using namespace std::chrono_literals;

namespace {

constexpr ChaosProgram kChaosRun{.label = "chaos",
                                 .binary = "test_chaos",
                                 .suite = "Chaos",
                                 .run_test = "ChaosRun.Pipeline",
                                 .method_var = "MULTIPROC_CHAOS_METHOD",
                                 .prefix = "chaos",
                                 .check_segments = true};

constexpr int kProducers = 2;
constexpr int kConsumers = 2;
constexpr unsigned kWorkers = 3;
constexpr uint64_t kMaxSeq = 1u << 19;  // per producer
constexpr int kKills = 110;

// Shared by the parent and the producers and consumers (a SharedMemory block, so that spawn and
// forkserver children see it too).
struct Shared {
  std::atomic<uint64_t> next_seq[kProducers];  // claimed: at most one claimed item is in flight
  std::atomic<uint32_t> producers_stop;
  std::atomic<uint32_t> consumers_stop;
  std::atomic<uint64_t> consumer_corrupt;
  std::atomic<uint64_t> consumer_dict_mismatch;
  // Set once the item's put() returned: acknowledged. A flag per item, not a high-water mark: a
  // killed producer leaves a gap (its claimed item) below what its replacement then acknowledges.
  std::atomic<uint8_t> acked[kProducers][kMaxSeq];
};

uint64_t mix(uint64_t x) {
  x ^= x >> 33;
  x *= 0xff51afd7ed558ccdULL;
  x ^= x >> 33;
  return x;
}

int64_t item_id(uint32_t producer, uint64_t seq) {
  return static_cast<int64_t>(producer * kMaxSeq + seq);
}

size_t item_size(int64_t id) {
  if (id % 499 == 0) return 70000;  // grows the ring now and then
  return 16 + mix(static_cast<uint64_t>(id)) % 100;
}

// An item: its id, then bytes derived from it, so any damage shows.
std::string make_item(int64_t id) {
  std::string s(item_size(id), '\0');
  std::memcpy(s.data(), &id, 8);
  for (size_t i = 8; i < s.size(); ++i)
    s[i] = static_cast<char>(mix(static_cast<uint64_t>(id) * 131 + i) & 0xff);
  return s;
}

bool check_item(const std::string& s, int64_t& id) {
  if (s.size() < 8) return false;
  std::memcpy(&id, s.data(), 8);
  if (id < 0 || id >= static_cast<int64_t>(kProducers * kMaxSeq)) return false;
  if (s.size() != item_size(id)) return false;
  for (size_t i = 8; i < s.size(); ++i)
    if (s[i] != static_cast<char>(mix(static_cast<uint64_t>(id) * 131 + i) & 0xff)) return false;
  return true;
}

int64_t value_of(int64_t id) {
  return static_cast<int64_t>(mix(static_cast<uint64_t>(id) + 7) >> 2);
}

Shared* shared_of(const mp::SharedMemory& shm) {
  return reinterpret_cast<Shared*>(shm.buf().data());
}

void producer(mp::Queue<std::string> in, mp::SharedMemory shm, uint32_t p) {
  Shared* sh = shared_of(shm);
  while (!sh->producers_stop.load()) {
    // Claimed before the put: an item whose producer dies inside put() is uncertain, and no
    // later producer puts it again.
    uint64_t seq = sh->next_seq[p].fetch_add(1);
    if (seq >= kMaxSeq) return;
    in.put(make_item(item_id(p, seq)));
    sh->acked[p][seq].store(1);
  }
}

// The pool task: checks the item, records it in the hosted dict, passes a result on.
int64_t work(std::string item, mp::DictProxy<int64_t, int64_t> dict, mp::Queue<std::string> mid) {
  int64_t id = -1;
  if (!check_item(item, id)) throw std::runtime_error("corrupt item reached a worker");
  dict.set(id, value_of(id));
  mid.put(item);
  return value_of(id);
}

void consumer(mp::Queue<std::string> mid, mp::Queue<std::string> out,
              mp::DictProxy<int64_t, int64_t> dict, mp::SharedMemory shm) {
  Shared* sh = shared_of(shm);
  for (;;) {
    std::string s;
    try {
      s = mid.get(50ms);
    } catch (const mp::Empty&) {
      if (sh->consumers_stop.load()) return;
      continue;
    }
    int64_t id = -1;
    if (!check_item(s, id)) {
      sh->consumer_corrupt.fetch_add(1);
      continue;
    }
    // The worker wrote the dict before it put the item, so the manager must have it.
    if (dict.get(id, -1) != value_of(id)) sh->consumer_dict_mismatch.fetch_add(1);
    out.put(s);
  }
}

// For a hang: the stuck process's threads, to stderr (gdb if there is one, else the kernel stack).
void dump_stacks(pid_t pid) {
  const std::string p = std::to_string(pid);
  std::fprintf(stderr, "stacks of pid %s:\n", p.c_str());
  std::fflush(nullptr);
  (void)!std::system(("timeout 30 gdb -p " + p +
                      " -batch -ex 'thread apply all bt 20' 2>/dev/null | grep -E '^(#|Thread)' >&2"
                      " || cat /proc/" +
                      p + "/stack >&2")
                         .c_str());
}

int open_fds() {
  return count_open_fds();
}

struct Pending {
  int64_t id;
  mp::AsyncResult<int64_t> result;
};

}  // namespace

// The run itself: only in the program that the Chaos test starts (MULTIPROC_CHAOS_METHOD set).
TEST(ChaosRun, Pipeline) {
  const auto method = chaos_method(kChaosRun);
  if (!method) GTEST_SKIP() << "run by the Chaos tests, in a program of its own";
  const std::string method_name(mp::to_string(*method));
  auto ctx = mp::get_context(*method);
  std::mt19937_64 rng(announce_chaos_seed(kChaosRun, *method));

  {
    // What the first Manager and Pool of a program set up for good (not a leak) is there before
    // the descriptors are counted.
    mp::Manager warm(ctx);
    mp::Pool pool(mp::PoolOptions{.processes = 1, .context = ctx});
    (void)pool.apply(value_of, int64_t{1});
    warm.shutdown();
  }
  const int fds_before = open_fds();
  struct Tally {
    std::map<int64_t, int> dispatched, out;
    std::map<int64_t, bool> succeeded;  // false: WorkerLost
    int other_errors = 0, corrupt_in = 0, corrupt_out = 0;
    int kills = 0, worker_kills = 0, producer_kills = 0, consumer_kills = 0;
  } t;
  std::vector<std::pair<uint32_t, uint64_t>> acked_items;
  uint64_t consumer_corrupt = 0, dict_mismatch = 0;
  {
    mp::SharedMemory shm = mp::SharedMemory::create(sizeof(Shared));
    Shared* sh = new (shm.buf().data()) Shared{};
    mp::Manager manager(ctx);
    auto dict = manager.dict<int64_t, int64_t>();
    auto mid = manager.Queue<std::string>(500);
    mp::Queue<std::string> in(500), out;
    mp::Pool pool(mp::PoolOptions{.processes = kWorkers, .context = ctx});

    std::vector<mp::Process> producers, consumers;
    for (uint32_t p = 0; p < kProducers; ++p) {
      producers.emplace_back(ctx, producer, in, shm, p);
      producers.back().start();
    }
    for (int c = 0; c < kConsumers; ++c) {
      consumers.emplace_back(ctx, consumer, mid, out, dict, shm);
      consumers.back().start();
    }

    // The dispatcher: `in` to the pool, results collected as they finish. Bounded in flight, so
    // that a kill finds work under way rather than a long backlog.
    std::atomic<bool> dispatch_stop{false};
    std::deque<Pending> pending;
    auto settle = [&](Pending& p) {
      try {
        int64_t v = std::move(p.result).get(60s);
        if (v != value_of(p.id)) ++t.other_errors;
        t.succeeded[p.id] = true;
      } catch (const mp::WorkerLost&) {
        t.succeeded[p.id] = false;
      } catch (const std::exception& e) {
        std::fprintf(stderr, "item %lld: %s\n", static_cast<long long>(p.id), e.what());
        ++t.other_errors;
      }
    };
    std::thread dispatcher([&] {
      for (;;) {
        while (!pending.empty() && (pending.front().result.ready() || pending.size() > 64)) {
          settle(pending.front());
          pending.pop_front();
        }
        std::string s;
        try {
          s = in.get(20ms);
        } catch (const mp::Empty&) {
          if (dispatch_stop.load()) break;
          continue;
        }
        int64_t id = -1;
        if (!check_item(s, id)) {
          ++t.corrupt_in;
          continue;
        }
        if (t.dispatched[id]++ == 0) pending.push_back({id, pool.apply_async(work, s, dict, mid)});
      }
      for (auto& p : pending) settle(p);
    });

    // The parent drains `out` meanwhile, so that nothing waits on it.
    std::atomic<bool> drain_stop{false};
    std::thread drainer([&] {
      for (;;) {
        std::string s;
        try {
          s = out.get(20ms);
        } catch (const mp::Empty&) {
          if (drain_stop.load()) return;
          continue;
        }
        int64_t id = -1;
        if (check_item(s, id))
          ++t.out[id];
        else
          ++t.corrupt_out;
      }
    });

    // The killer.
    const auto until = std::chrono::steady_clock::now() + 60s;  // slack for a loaded machine
    while (t.kills < kKills && std::chrono::steady_clock::now() < until) {
      std::this_thread::sleep_for(std::chrono::microseconds(20000 + rng() % 100000));
      switch (rng() % 3) {
        case 0: {
          auto pids = pool.worker_pids();
          if (pids.empty()) break;
          pid_t victim = pids[rng() % pids.size()];
          if (kill(victim, SIGKILL) == 0) ++t.worker_kills, ++t.kills;
          break;
        }
        case 1: {
          size_t i = rng() % kProducers;
          if (!producers[i].is_alive()) break;
          producers[i].kill();
          EXPECT_TRUE(producers[i].join(30s)) << "a SIGKILLed producer did not end";
          ++t.producer_kills, ++t.kills;
          producers[i] = mp::Process(ctx, producer, in, shm, static_cast<uint32_t>(i));
          producers[i].start();
          break;
        }
        default: {
          size_t i = rng() % kConsumers;
          consumers[i].kill();
          EXPECT_TRUE(consumers[i].join(30s)) << "a SIGKILLed consumer did not end";
          ++t.consumer_kills, ++t.kills;
          consumers[i] = mp::Process(ctx, consumer, mid, out, dict, shm);
          consumers[i].start();
          break;
        }
      }
    }

    // Wind down, every wait bounded: producers stop, the dispatcher empties `in` and settles every
    // task, the consumers empty `mid`, the drainer empties `out`.
    sh->producers_stop.store(1);
    // EXPECT, not ASSERT: the dispatcher and drainer threads must be joined before leaving.
    for (auto& p : producers)
      if (!p.join(30s)) {
        ADD_FAILURE() << "a producer hung";
        dump_stacks(p.pid());
        p.kill();
      }
    dispatch_stop.store(true);
    dispatcher.join();
    if (!eventually([&] { return mid.qsize() == 0; }, 30s)) {
      ADD_FAILURE() << "mid never drained: " << mid.qsize() << " items left";
      for (auto& c : consumers) dump_stacks(c.pid());
    }
    sh->consumers_stop.store(1);
    for (auto& c : consumers)
      if (!c.join(30s)) {
        ADD_FAILURE() << "a consumer hung";
        dump_stacks(c.pid());
        c.kill();
      }
    EXPECT_TRUE(eventually([&] { return out.qsize() == 0; }, 30s)) << "out never drained";
    drain_stop.store(true);
    drainer.join();

    for (uint32_t p = 0; p < kProducers; ++p)
      for (uint64_t s = 0; s < std::min<uint64_t>(sh->next_seq[p].load(), kMaxSeq); ++s)
        if (sh->acked[p][s].load()) acked_items.emplace_back(p, s);
    consumer_corrupt = sh->consumer_corrupt.load();
    dict_mismatch = sh->consumer_dict_mismatch.load();
    // Every task that returned wrote the dict; one that died may or may not have.
    size_t ok_count = 0;
    for (auto& kv : t.succeeded) ok_count += kv.second;
    const size_t dict_size = dict.size();
    EXPECT_GE(dict_size, ok_count);
    EXPECT_LE(dict_size, t.dispatched.size());
    pool.close();
    pool.join();
    manager.shutdown();
    shm.unlink();
  }

  // The accounting.
  EXPECT_GE(t.kills, 100);
  EXPECT_EQ(t.corrupt_in + t.corrupt_out + static_cast<int>(consumer_corrupt), 0);
  EXPECT_EQ(dict_mismatch, 0u);
  EXPECT_EQ(t.other_errors, 0);
  uint64_t acked_total = 0, missing_in = 0, lost = 0, missing_out = 0;
  for (auto [p, s] : acked_items) {
    int64_t id = item_id(p, s);
    ++acked_total;
    auto d = t.dispatched.find(id);
    if (d == t.dispatched.end()) {
      ++missing_in;
      continue;
    }
    auto ok = t.succeeded.find(id);
    if (ok == t.succeeded.end()) continue;  // counted in other_errors
    if (!ok->second)
      ++lost;
    else if (!t.out.count(id))
      ++missing_out;
  }
  for (auto& [id, n] : t.dispatched) EXPECT_EQ(n, 1) << "item " << id << " got twice from `in`";
  for (auto& [id, n] : t.out) EXPECT_EQ(n, 1) << "item " << id << " processed " << n << " times";
  EXPECT_EQ(missing_in, 0u) << "acknowledged items lost in `in`";
  EXPECT_LE(missing_out, static_cast<uint64_t>(t.consumer_kills))
      << "more results lost than consumers killed";
  EXPECT_GT(acked_total, 1000u);  // real traffic flowed
  EXPECT_EQ(open_fds(), fds_before) << "descriptors leaked";
  if (open_fds() != fds_before)
    std::system(("ls -l /proc/" + std::to_string(getpid()) + "/fd").c_str());
  std::printf(
      "chaos %s: %d kills (%d workers, %d producers, %d consumers); %llu acknowledged, "
      "%llu WorkerLost, %llu lost with a killed consumer\n",
      method_name.c_str(), t.kills, t.worker_kills, t.producer_kills, t.consumer_kills,
      static_cast<unsigned long long>(acked_total), static_cast<unsigned long long>(lost),
      static_cast<unsigned long long>(missing_out));
}

class Chaos : public StartMethodTest {};

TEST_P(Chaos, PipelineAccountsForEveryItemUnderRandomSigkills) {
  run_chaos_program(kChaosRun, method());
}

MP_ALL_START_METHODS(Chaos);

// Found by the chaos run: the main thread's cached connection to a manager's server (one per
// server, per thread, src/managers/manager.cpp) outlives the Manager, so every Manager a thread
// has called through leaves a socket open until that thread ends.
TEST(ChaosFound, ManagerLeavesNoDescriptorAfterShutdown) {
  auto use_a_manager = [] {
    mp::Manager manager;
    auto dict = manager.dict<int64_t, int64_t>();
    dict.set(1, 2);
    EXPECT_EQ(dict.get(1), 2);
    manager.shutdown();
  };
  use_a_manager();  // whatever the first Manager sets up for good
  const int before = count_open_fds();
  use_a_manager();
  EXPECT_EQ(count_open_fds(), before);
}
