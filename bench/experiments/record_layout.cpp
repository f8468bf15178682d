// Experiment (not a competitor): does a ring whose records carry their own ready mark move 1 KiB
// items slower than an index ring? The question behind queue_throughput's bytes1k_1to1 fraction
// (issue 15), where multiproc's queue runs at 0.55-0.7 of spsc_ring.
//
// multiproc's queue announces each record with a header word in the ring itself: the producer
// writes the payload, then seals the header (release); the consumer reads the header at its head
// and the payload after it, and never reads the producer's indices. A payload of 512 bytes or
// more starts on a cache line, so a 1 KiB record is 17 lines: the header's line and 16 of payload.
// spsc_ring (bench/common/rings.hpp) announces items through an index and moves 16 lines. This
// program runs rings that differ only there, cut to their core (no locks, no crash-safety
// bookkeeping), between two processes pinned to CPUs 0 and 1 (as BENCH_PLACEMENT=split), taking
// turns so that a change in the machine's state hits all of them alike:
//
//   slots            fixed 1088-byte slots (payload on the slot's second line), an index
//                    published per item and polled by the consumer: spsc_ring's design
//   slots+header     the same, and a header word in the slot's first line, written after the
//                    payload and read before it: one line more per item, nothing else
//   slots+header1st  the same with the header written before the payload (lines in order)
//   records          multiproc's protocol: the producer zeroes the next record's header, writes
//                    the payload, seals this record's header; the consumer polls headers; the
//                    consumer's position (an index) tells the producer its room
//   records-end      records with the ready mark after the payload (each side touches a record's
//                    lines in address order) and unique marks instead of zeroing
//
//   experiment_record_layout [--items N] [--rounds R] [--ring-mib M ...]
//
// Measured 2026-11-30 on this project's 2-vCPU Xeon guest, idle, 5 M items a run, a 4 MiB ring
// (the bench's depth): slots 18.1-18.5 M items/s, slots+header 17.7-18.2, slots+header1st
// 18.5-19.1, records 12.6-16.0, records-end 10.5-18.3. So the layout costs 0-30%, not the 30-45%
// the queue loses: the rest is the queue's own work per item (callgrind, Release: about 230
// instructions per put and 145 per get besides the two copies of 124 each, against a few dozen
// here). With other programs running on the machine every ring here slowed to about 5.7 M/s and
// the layouts' differences vanished: compare runs taken on an idle machine only.
#include <sched.h>
#include <sys/mman.h>
#include <sys/wait.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <new>
#include <string>
#include <string_view>
#include <vector>

namespace {

using u64 = std::uint64_t;
constexpr u64 kItem = 1024;
constexpr u64 kSlot = kItem + 64;  // a record: the header's line, then the payload's 16 lines
constexpr u64 kHeaderAt = 56;      // the header word ends the record's first line

enum class Layout { kSlots, kSlotsHeader, kSlotsHeaderFirst, kRecords, kRecordsSealAtEnd };
constexpr const char* kLayoutNames[] = {"slots", "slots+header", "slots+header1st", "records",
                                        "records-end"};
constexpr int kLayouts = 5;

struct Indices {
  alignas(128) std::atomic<u64> produced{0};  // slots: items published; records: unused
  alignas(128) std::atomic<u64> consumed{0};  // items (slots) or bytes (records) consumed
};

std::atomic_ref<u64> word_at(char* p) {
  return std::atomic_ref<u64>(*reinterpret_cast<u64*>(p));
}

void pin(int cpu) {
  cpu_set_t set;
  CPU_ZERO(&set);
  CPU_SET(cpu, &set);
  sched_setaffinity(0, sizeof set, &set);
}

void relax() {
#if defined(__x86_64__) || defined(__i386__)
  __builtin_ia32_pause();
#endif
}

// An item's copy as the queue and the bench's rings make it: glibc's memcpy. With the size a
// constant the compiler would inline `rep movsq` instead, a different copy that ran these rings
// at half the speed and made their layouts look different where they are not.
void copy_item(char* dst, const char* src) {
  u64 size = kItem;
  asm("" : "+r"(size));  // hides the constant from the compiler
  std::memcpy(dst, src, size);
}

// The producer's item i: stamped with i in its first and last 8 bytes, as the bench's items.
void stamp(char* item, u64 i) {
  std::memcpy(item, &i, 8);
  std::memcpy(item + kItem - 8, &i, 8);
}
bool stamped(const char* item, u64 i) {
  u64 a = 0, b = 0;
  std::memcpy(&a, item, 8);
  std::memcpy(&b, item + kItem - 8, 8);
  return a == i && b == i;
}

void produce(Layout layout, Indices& ix, char* ring, u64 ring_bytes, u64 items) {
  alignas(64) char item[kItem];
  std::memset(item, 1, kItem);
  const u64 slots = ring_bytes / kSlot;
  u64 room_seen = 0;  // consumer's position as last read
  if (layout == Layout::kRecordsSealAtEnd) {
    // The mark after the payload, in the record's last line: the producer writes the record's
    // lines in address order. The mark is the record's number (unique, so no line is zeroed
    // ahead), and a record that would cross the ring's end starts at 0 without a wrap mark:
    // both sides skip the same tail.
    u64 pos = 0;
    for (u64 i = 0; i < items; ++i) {
      stamp(item, i);
      if (pos % ring_bytes + kSlot > ring_bytes) pos += ring_bytes - pos % ring_bytes;
      while (pos + kSlot - room_seen > ring_bytes) {
        room_seen = ix.consumed.load(std::memory_order_acquire);
        if (pos + kSlot - room_seen > ring_bytes) relax();
      }
      char* rec = ring + pos % ring_bytes;
      copy_item(rec, item);
      word_at(rec + kItem).store(i + 1, std::memory_order_release);
      pos += kSlot;
    }
    return;
  }
  if (layout != Layout::kRecords) {
    for (u64 i = 0; i < items; ++i) {
      stamp(item, i);
      while (i + 1 - room_seen > slots) {
        room_seen = ix.consumed.load(std::memory_order_acquire);
        if (i + 1 - room_seen > slots) relax();
      }
      char* slot = ring + (i % slots) * kSlot;
      if (layout == Layout::kSlotsHeaderFirst)
        word_at(slot + kHeaderAt).store(i + 1, std::memory_order_relaxed);
      copy_item(slot + 64, item);
      if (layout == Layout::kSlotsHeader)
        word_at(slot + kHeaderAt).store(i + 1, std::memory_order_relaxed);
      ix.produced.store(i + 1, std::memory_order_release);
    }
    return;
  }
  // records: byte positions; a record that would cross the ring's end is preceded by a wrap
  // mark (header ~0) and starts again at 0.
  u64 pos = 0;
  for (u64 i = 0; i < items; ++i) {
    stamp(item, i);
    u64 off = pos % ring_bytes;
    if (off + kSlot + kSlot > ring_bytes) {
      while (pos + (ring_bytes - off) + kSlot + kSlot - room_seen > ring_bytes) {
        room_seen = ix.consumed.load(std::memory_order_acquire);
        relax();
      }
      word_at(ring + kHeaderAt).store(0, std::memory_order_relaxed);
      word_at(ring + off + kHeaderAt).store(~u64{0}, std::memory_order_release);
      pos += ring_bytes - off;
      off = 0;
    }
    while (pos + kSlot + kSlot - room_seen > ring_bytes) {
      room_seen = ix.consumed.load(std::memory_order_acquire);
      if (pos + kSlot + kSlot - room_seen > ring_bytes) relax();
    }
    char* rec = ring + off;
    word_at(rec + kSlot + kHeaderAt).store(0, std::memory_order_relaxed);  // the next header
    copy_item(rec + 64, item);
    word_at(rec + kHeaderAt).store(kItem, std::memory_order_release);  // the seal
    pos += kSlot;
  }
}

// Returns how many items arrived with wrong stamps.
u64 consume(Layout layout, Indices& ix, char* ring, u64 ring_bytes, u64 items) {
  alignas(64) char item[kItem];
  const u64 slots = ring_bytes / kSlot;
  u64 bad = 0, published_seen = 0, pos = 0;
  for (u64 i = 0; i < items; ++i) {
    if (layout == Layout::kRecordsSealAtEnd) {
      if (pos % ring_bytes + kSlot > ring_bytes) pos += ring_bytes - pos % ring_bytes;
      char* rec = ring + pos % ring_bytes;
      while (word_at(rec + kItem).load(std::memory_order_acquire) != i + 1) relax();
      copy_item(item, rec);
      pos += kSlot;
      ix.consumed.store(pos, std::memory_order_release);
    } else if (layout != Layout::kRecords) {
      while (published_seen == i) {
        published_seen = ix.produced.load(std::memory_order_acquire);
        if (published_seen == i) relax();
      }
      char* slot = ring + (i % slots) * kSlot;
      if ((layout == Layout::kSlotsHeader || layout == Layout::kSlotsHeaderFirst) &&
          word_at(slot + kHeaderAt).load(std::memory_order_acquire) != i + 1)
        ++bad;
      copy_item(item, slot + 64);
      ix.consumed.store(i + 1, std::memory_order_release);
    } else {
      char* rec;
      for (;;) {
        rec = ring + pos % ring_bytes;
        const u64 header = word_at(rec + kHeaderAt).load(std::memory_order_acquire);
        if (header == kItem) break;
        if (header == ~u64{0}) {
          pos += ring_bytes - pos % ring_bytes;
          continue;
        }
        relax();
      }
      copy_item(item, rec + 64);
      pos += kSlot;
      ix.consumed.store(pos, std::memory_order_release);
    }
    if (!stamped(item, i)) ++bad;
  }
  return bad;
}

// One run: a fresh ring (pages touched before the clock starts), the producer forked on CPU 0,
// this process consuming on CPU 1. Returns items/s, or a negative value if an item was wrong.
double run(Layout layout, u64 ring_bytes, u64 items) {
  const u64 map_bytes = 4096 + ring_bytes;
  void* mem = mmap(nullptr, map_bytes, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
  if (mem == MAP_FAILED) {
    std::perror("mmap");
    std::exit(1);
  }
  std::memset(mem, 0, map_bytes);
  auto* ix = new (mem) Indices{};
  char* ring = static_cast<char*>(mem) + 4096;
  const auto start = std::chrono::steady_clock::now();
  const pid_t child = fork();
  if (child < 0) {
    std::perror("fork");
    std::exit(1);
  }
  if (child == 0) {
    pin(0);
    produce(layout, *ix, ring, ring_bytes, items);
    _exit(0);
  }
  pin(1);
  const u64 bad = consume(layout, *ix, ring, ring_bytes, items);
  const double seconds =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  int status = 0;
  waitpid(child, &status, 0);
  munmap(mem, map_bytes);
  if (bad || !WIFEXITED(status) || WEXITSTATUS(status) != 0) return -1;
  return static_cast<double>(items) / seconds;
}

[[noreturn]] void usage(const char* argv0) {
  std::fprintf(stderr, "usage: %s [--items N] [--rounds R] [--ring-mib M ...]\n", argv0);
  std::exit(2);
}

}  // namespace

int main(int argc, char** argv) {
  u64 items = 2'000'000, rounds = 3;
  std::vector<u64> ring_mib;
  for (int i = 1; i < argc; ++i) {
    const std::string_view a = argv[i];
    if (i + 1 >= argc) usage(argv[0]);
    const u64 v = std::strtoull(argv[++i], nullptr, 10);
    if (a == "--items" && v > 0)
      items = v;
    else if (a == "--rounds" && v > 0)
      rounds = v;
    else if (a == "--ring-mib" && v > 0 && v <= 1024)
      ring_mib.push_back(v);
    else
      usage(argv[0]);
  }
  if (ring_mib.empty()) ring_mib = {1, 4};
  bool all_good = true;
  for (u64 mib : ring_mib) {
    std::vector<double> best(kLayouts, 0.0);
    for (u64 r = 0; r < rounds; ++r) {
      for (int l = 0; l < kLayouts; ++l) {
        const double rate = run(static_cast<Layout>(l), mib << 20, items);
        if (rate < 0) all_good = false;
        std::printf("ring %3llu MiB  %-13s round %llu: %.3g items/s\n",
                    static_cast<unsigned long long>(mib), kLayoutNames[l],
                    static_cast<unsigned long long>(r + 1), rate);
        if (rate > best[l]) best[l] = rate;
      }
    }
    for (int l = 0; l < kLayouts; ++l)
      std::printf("ring %3llu MiB  %-13s best:    %.3g items/s (%.2f of slots)\n",
                  static_cast<unsigned long long>(mib), kLayoutNames[l], best[l],
                  best[0] > 0 ? best[l] / best[0] : 0.0);
    std::fflush(stdout);
  }
  if (!all_good) std::fprintf(stderr, "experiment_record_layout: an item arrived damaged\n");
  return all_good ? 0 : 1;
}
