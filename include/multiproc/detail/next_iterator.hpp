// NextIterator<Source>: the input iterator over a source's next() (internal). A result object
// whose next() returns std::optional<T> (a value, or std::nullopt at the end) becomes a range:
//
//   iterator begin() { return iterator(this); }        using iterator = NextIterator<Self>;
//   std::default_sentinel_t end() { return {}; }
//
// Pool's imap, ThreadPool's imap and the executor's map and as_completed all iterate this way;
// begin() already fetches the first item, so it blocks (and may throw) as next() does.
#pragma once

#include <cstddef>
#include <iterator>
#include <optional>
#include <type_traits>
#include <utility>

namespace multiproc::detail {

// kMutable: *it is a value_type& that the caller may change (as_completed's futures); otherwise a
// const reference.
template <class Source, bool kMutable = false>
class NextIterator {
 public:
  using iterator_category = std::input_iterator_tag;
  using value_type = typename decltype(std::declval<Source&>().next())::value_type;
  using difference_type = std::ptrdiff_t;
  using reference = std::conditional_t<kMutable, value_type&, const value_type&>;

  NextIterator() = default;
  explicit NextIterator(Source* s) : s_(s) { ++*this; }

  reference operator*() const { return *cur_; }
  NextIterator& operator++() {
    cur_ = s_->next();
    return *this;
  }
  void operator++(int) { ++*this; }
  bool operator==(std::default_sentinel_t) const { return !cur_.has_value(); }

 private:
  Source* s_ = nullptr;
  mutable std::optional<value_type> cur_;  // mutable: operator* is const, its item may not be
};

}  // namespace multiproc::detail
