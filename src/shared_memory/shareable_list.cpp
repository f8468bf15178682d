// ShareableList's layout in its block: a header, one descriptor per slot, then the slots' bytes.
// Descriptors hold offsets from the block's start, never pointers (each process maps the block at
// its own address). Python's struct-format layout is not reproduced: a list is for multiproc
// programs, and a magic number plus a layout version make any other block fail to attach loudly.
#include <multiproc/shared_memory.hpp>

#include <cstring>
#include <stdexcept>
#include <utility>

namespace multiproc {
namespace {

constexpr std::uint64_t kListMagic = 0x5453494c4853504dULL;  // "MPSHLIST"
constexpr std::uint32_t kListLayoutVersion = 1;

struct ListHeader {
  std::uint64_t magic;
  std::uint32_t layout_version;
  std::uint32_t count;
  std::uint64_t data_offset;  // where the first slot's bytes start
  std::uint64_t reserved;
};
static_assert(sizeof(ListHeader) == 32);

// type is ShareableItem's index: 0 None, 1 int64, 2 double, 3 bool, 4 string, 5 bytes.
struct SlotDesc {
  std::uint32_t type;
  std::uint32_t reserved;
  std::uint64_t length;    // bytes used (strings and bytes)
  std::uint64_t offset;    // from the block's start; a multiple of 8
  std::uint64_t capacity;  // fixed at creation
};
static_assert(sizeof(SlotDesc) == 32);
static_assert(std::variant_size_v<ShareableItem> == 6);

constexpr const char* kTypeNames[] = {"None", "int64", "double", "bool", "string", "bytes"};

std::size_t payload_length(const ShareableItem& item) {
  if (auto* s = std::get_if<std::string>(&item)) return s->size();
  if (auto* b = std::get_if<Bytes>(&item)) return b->size();
  return 8;
}

// Python's allocation: 8 bytes for a scalar, 8 * (len / 8 + 1) for a string or bytes.
std::uint64_t slot_capacity(const ShareableItem& item) {
  if (item.index() >= 4) return 8 * (payload_length(item) / 8 + 1);
  return 8;
}

ListHeader& header(const SharedMemory& shm) {
  return *reinterpret_cast<ListHeader*>(shm.buf().data());
}

SlotDesc& slot(const SharedMemory& shm, std::size_t i) {
  return reinterpret_cast<SlotDesc*>(shm.buf().data() + sizeof(ListHeader))[i];
}

void write_slot(const SharedMemory& shm, SlotDesc& d, const ShareableItem& item) {
  std::byte* at = shm.buf().data() + d.offset;
  std::uint64_t length = 0;
  switch (item.index()) {
    case 0:
      break;
    case 1: {
      std::int64_t v = std::get<1>(item);
      std::memcpy(at, &v, 8);
      break;
    }
    case 2: {
      double v = std::get<2>(item);
      std::memcpy(at, &v, 8);
      break;
    }
    case 3:
      *at = std::byte{std::get<3>(item) ? uint8_t{1} : uint8_t{0}};
      break;
    case 4:
      length = std::get<4>(item).size();
      if (length) std::memcpy(at, std::get<4>(item).data(), length);
      break;
    case 5:
      length = std::get<5>(item).size();
      if (length) std::memcpy(at, std::get<5>(item).data(), length);
      break;
  }
  d.length = length;
  d.type = static_cast<std::uint32_t>(item.index());
}

}  // namespace

ShareableList::ShareableList(std::initializer_list<ShareableItem> items, std::string name) {
  create(std::vector<ShareableItem>(items), std::move(name));
}

ShareableList::ShareableList(const std::vector<ShareableItem>& items, std::string name) {
  create(items, std::move(name));
}

void ShareableList::create(const std::vector<ShareableItem>& items, std::string name) {
  if (items.size() > UINT32_MAX) throw std::invalid_argument("ShareableList: too many items");
  const std::uint64_t data_offset = sizeof(ListHeader) + sizeof(SlotDesc) * items.size();
  std::uint64_t total = data_offset;
  for (const ShareableItem& item : items) total += slot_capacity(item);
  shm_ = SharedMemory(std::move(name), true, static_cast<std::int64_t>(total));
  ListHeader& h = header(shm_);
  h.count = static_cast<std::uint32_t>(items.size());
  h.data_offset = data_offset;
  std::uint64_t at = data_offset;
  for (std::size_t i = 0; i < items.size(); ++i) {
    SlotDesc& d = slot(shm_, i);
    d.offset = at;
    d.capacity = slot_capacity(items[i]);
    at += d.capacity;
    write_slot(shm_, d, items[i]);
  }
  // Last: a process attaching by name meanwhile sees no magic and refuses, rather than reading
  // half-written descriptors.
  h.layout_version = kListLayoutVersion;
  __atomic_store_n(&h.magic, kListMagic, __ATOMIC_RELEASE);
}

ShareableList::ShareableList(std::string name) : shm_(std::move(name)) {
  const std::size_t size = shm_.size();
  auto refuse = [&](const char* why) {
    throw ProcessError("shared memory block '" + shm_.name() + "' is not a ShareableList: " + why);
  };
  if (size < sizeof(ListHeader)) refuse("too small");
  const ListHeader& h = header(shm_);
  if (__atomic_load_n(&h.magic, __ATOMIC_ACQUIRE) != kListMagic) refuse("no ShareableList magic");
  if (h.layout_version != kListLayoutVersion) refuse("another layout version");
  if (h.data_offset != sizeof(ListHeader) + sizeof(SlotDesc) * std::uint64_t{h.count} ||
      h.data_offset > size)
    refuse("its header does not match its size");
  for (std::size_t i = 0; i < h.count; ++i) {
    const SlotDesc& d = slot(shm_, i);
    if (d.offset < h.data_offset || d.offset % 8 != 0 || d.capacity < 8 || d.offset > size ||
        d.capacity > size - d.offset)
      refuse("a slot lies outside the block");
  }
}

std::size_t ShareableList::size() const {
  return header(shm_).count;
}

std::size_t ShareableList::position(std::int64_t index) const {
  const auto n = static_cast<std::int64_t>(size());
  const std::int64_t i = index < 0 ? index + n : index;
  if (i < 0 || i >= n)
    throw std::out_of_range("ShareableList index " + std::to_string(index) +
                            " out of range (size " + std::to_string(n) + ")");
  return static_cast<std::size_t>(i);
}

ShareableItem ShareableList::get(std::int64_t index) const {
  const SlotDesc& d = slot(shm_, position(index));
  const std::byte* at = shm_.buf().data() + d.offset;
  // The descriptor is in memory other processes write: check it before trusting it.
  const std::uint32_t type = d.type;
  const std::uint64_t length = std::min<std::uint64_t>(d.length, d.capacity);
  switch (type) {
    case 0:
      return nullptr;
    case 1: {
      std::int64_t v;
      std::memcpy(&v, at, 8);
      return v;
    }
    case 2: {
      double v;
      std::memcpy(&v, at, 8);
      return v;
    }
    case 3:
      return *at != std::byte{0};
    case 4:
      return std::string(reinterpret_cast<const char*>(at), length);
    case 5:
      return Bytes(at, at + length);
  }
  throw ProcessError("ShareableList '" + name() + "': item " + std::to_string(index) +
                     " has an unknown type tag " + std::to_string(type));
}

void ShareableList::set(std::int64_t index, const ShareableItem& value) {
  SlotDesc& d = slot(shm_, position(index));
  const std::size_t need = payload_length(value);
  if (need > d.capacity)
    throw std::invalid_argument("ShareableList: item " + std::to_string(index) + " has room for " +
                                std::to_string(d.capacity) + " bytes, the new " +
                                kTypeNames[value.index()] + " needs " + std::to_string(need) +
                                " (a slot keeps the size it was created with)");
  write_slot(shm_, d, value);
}

std::size_t ShareableList::count(const ShareableItem& value) const {
  std::size_t n = 0;
  for (std::size_t i = 0, e = size(); i < e; ++i)
    if (get(static_cast<std::int64_t>(i)) == value) ++n;
  return n;
}

std::size_t ShareableList::index(const ShareableItem& value) const {
  for (std::size_t i = 0, e = size(); i < e; ++i)
    if (get(static_cast<std::int64_t>(i)) == value) return i;
  throw std::invalid_argument("ShareableList.index: value not in list");
}

std::vector<ShareableItem> ShareableList::items() const {
  std::vector<ShareableItem> out;
  for (std::size_t i = 0, e = size(); i < e; ++i) out.push_back(get(static_cast<std::int64_t>(i)));
  return out;
}

void ShareableList::throw_wrong_type(std::int64_t index, std::size_t held, std::size_t asked) {
  throw std::invalid_argument("ShareableList: item " + std::to_string(index) + " is " +
                              (held < 6 ? kTypeNames[held] : "?") + ", not " +
                              (asked < 6 ? kTypeNames[asked] : "?"));
}

}  // namespace multiproc
