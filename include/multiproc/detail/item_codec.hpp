// How queue items travel (internal): plain-bytes types straight between the caller's objects and
// shared memory, anything else through serialization.hpp. Shared by every queue kind.
#pragma once

#include <cstring>
#include <ranges>
#include <string>
#include <string_view>
#include <type_traits>
#include <vector>

#include <multiproc/detail/handle.hpp>
#include <multiproc/detail/queue_core.hpp>  // kItemHasRefs
#include <multiproc/errors.hpp>
#include <multiproc/serialization.hpp>

namespace multiproc {

namespace detail {

// Encodes items for QueueCore::put / OrderedQueueCore::put and decodes what their get delivers:
// plain-bytes items are copied from and to the caller's objects, others are encoded first
// (outside the queue's lock) and decoded after.
template <class T>
struct ItemCodec {
  static constexpr bool plain = is_plain_bytes_v<T>;

  // Put side: plain items are copied from the caller's objects; others are encoded first.
  struct Encoded {
    std::string bytes;
    std::vector<size_t> sizes;
    std::vector<size_t> offsets;
  };
  static void fill_plain(void* ctx, size_t i, char* dst) {
    std::memcpy(dst, static_cast<const T* const*>(ctx)[0] + i, sizeof(T));
  }
  static void fill_plain_indirect(void* ctx, size_t i, char* dst) {
    std::memcpy(dst, static_cast<const T* const*>(ctx)[i], sizeof(T));
  }
  static void fill_encoded(void* ctx, size_t i, char* dst) {
    auto* e = static_cast<Encoded*>(ctx);
    std::memcpy(dst, e->bytes.data() + e->offsets[i], e->sizes[i] & ~kItemHasRefs);
  }
  // Encodes items[0..n) for QueueCore::put. An item whose handles took in-flight references
  // carries them in a trailer (kRecordItemRefs), so that a queue destroyed with it inside
  // releases them.
  static void encode_with_refs(Encoded& e, const T* items, size_t n) {
    e.sizes.reserve(n);
    e.offsets.reserve(n);
    for (size_t i = 0; i < n; ++i) {
      const size_t before = e.bytes.size();
      FlightRefLog log;
      dump(e.bytes, items[i]);
      const size_t flag = append_refs_trailer(e.bytes, before, log.entries);
      e.offsets.push_back(before);
      e.sizes.push_back((e.bytes.size() - before) | flag);
    }
  }
  // Items from `from` on were not put after all (timeout): give back their handles' references.
  static size_t release_unput(const Encoded& e, size_t from) {
    for (size_t i = from; i < e.sizes.size(); ++i)
      if (e.sizes[i] & kItemHasRefs)
        release_item_refs(e.bytes.data() + e.offsets[i], e.sizes[i] & ~kItemHasRefs);
    return from;
  }

  // Get side.
  static void deliver_plain_one(void* ctx, const char* src, size_t size) {
    if (size != sizeof(T)) throw ProcessError("queue item has the wrong size for its type");
    std::memcpy(static_cast<void*>(static_cast<T*>(ctx)), src, sizeof(T));
  }
  static void deliver_plain_many(void* ctx, const char* src, size_t size) {
    if (size != sizeof(T)) throw ProcessError("queue item has the wrong size for its type");
    T item;
    std::memcpy(static_cast<void*>(&item), src, sizeof(T));
    static_cast<std::vector<T>*>(ctx)->push_back(item);
  }
  static void deliver_bytes(void* ctx, const char* src, size_t size) {
    auto* e = static_cast<Encoded*>(ctx);
    e->offsets.push_back(e->bytes.size());
    e->sizes.push_back(size);
    e->bytes.append(src, size);
  }
  static T decode(const char* p, size_t size) {
    HandleLoadScope scope;
    return load<T>(std::string_view(p, size));
  }
  static T decode(const Encoded& e, size_t i) {
    return decode(e.bytes.data() + e.offsets[i], e.sizes[i]);
  }
};

// put_many's items as one array: the range's own storage when it is a contiguous range of T,
// else a copy. put(const T* items, size_t n) returns how many it put; returns whether all were.
template <class T, class R, class Put>
bool put_range_of(R&& items, Put&& put) {
  if constexpr (std::ranges::contiguous_range<R> &&
                std::is_same_v<std::ranges::range_value_t<R>, T>) {
    const size_t n = std::ranges::size(items);
    return put(std::ranges::data(items), n) == n;
  } else {
    std::vector<T> tmp(std::ranges::begin(items), std::ranges::end(items));
    return put(tmp.data(), tmp.size()) == tmp.size();
  }
}

}  // namespace detail

}  // namespace multiproc
