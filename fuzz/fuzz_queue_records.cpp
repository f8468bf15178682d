// Fuzz target: a queue's records as a consumer reads them from shared memory (queue_core.cpp,
// item_codec.hpp). Any process of the user can write a queue's rings, so get() must give an item,
// Empty or a ProcessError whatever the bytes, and never crash, hang or read outside the ring.
// Each input gets a fresh Queue<std::string> holding a few items; the first byte picks what the
// rest overwrites: the records from the head on, or the ring's header (head, tail, capacity, the
// next ring's name) and then the records.
#include <algorithm>
#include <cstdint>
#include <cstring>
#include <string>

#include <multiproc/detail/queue_core.hpp>
#include <multiproc/detail/segment.hpp>
#include <multiproc/queues.hpp>

namespace {

namespace d = multiproc::detail;

// The ring consumers read now, named by the queue's control segment.
std::shared_ptr<d::Segment> head_ring_of(const std::string& queue_name) {
  auto ctl = d::Segment::attach(queue_name, d::SegmentKind::queue, true, false);
  auto* q = static_cast<d::QueueData*>(ctl->payload());
  const uint64_t gen = q->head_ring_gen.load();
  const char* name = q->head_ring_name[gen & 1];
  return d::Segment::attach(std::string(name, strnlen(name, d::kMaxSegmentName)),
                            d::SegmentKind::ring, false, false);
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size == 0) return 0;
  multiproc::Queue<std::string> q;
  for (int i = 0; i < 4; ++i) q.put(std::string(8 + 16 * i, static_cast<char>('a' + i)));
  {
    auto ring = head_ring_of(q.name());
    auto* base = static_cast<unsigned char*>(ring->payload());
    auto* r = reinterpret_cast<d::RingData*>(base);
    unsigned char* ring_data = base + d::kRingDataSize;
    const size_t data_size = ring->payload_size() - d::kRingDataSize;
    const uint64_t head_off = r->head.load() & (r->capacity - 1);
    const uint8_t* in = data + 1;
    size_t n = size - 1;
    if (data[0] & 1) {
      const size_t k = std::min<size_t>(n, d::kRingDataSize);
      std::memcpy(base, in, k);
      in += k;
      n -= k;
    }
    std::memcpy(ring_data + head_off, in, std::min<size_t>(n, data_size - head_off));
  }
  for (int i = 0; i < 6; ++i) {
    try {
      (void)q.get_nowait();
    } catch (const multiproc::Empty&) {
    } catch (const multiproc::ProcessError&) {
    }
  }
  return 0;
}
