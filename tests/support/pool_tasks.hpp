// Task functions that the Pool test programs (tests/pool/test_pool.cpp, and
// tests/redis/test_pool_backends.cpp, which runs the same bodies on both pool backends) share:
// plain values, each kind of exception a task can raise, and a slow one; and the checks on them
// that both make. They are inline functions of a header, so that each program that includes it
// holds them itself: spawn and forkserver children find a task by its address in the program
// they run.
#pragma once

#include <chrono>
#include <cstdint>
#include <optional>
#include <ranges>
#include <stdexcept>
#include <string>
#include <thread>

#include <gtest/gtest.h>

#include <multiproc/multiproc.hpp>

inline int64_t sqr(int64_t x) {
  return x * x;
}
inline int add(int a, int b) {
  return a + b;
}
inline void nothing() {}
inline std::string shout(std::string s) {
  return s + "!";
}
inline int raise_value_error(int x) {
  if (x == 5) throw std::invalid_argument("bad five");
  return x;
}
inline int raise_non_std(int) {
  throw 42;
}
// A user's exception type, registered (in the parent) to come back as itself.
struct RecordError : std::runtime_error {
  using std::runtime_error::runtime_error;
};
inline int raise_record_error(int x) {
  if (x == 3) throw RecordError("bad record 3");
  return x;
}
inline int64_t out_of_range_at_13(int64_t x) {
  if (x == 13) throw std::out_of_range("thirteen");
  return x;
}
inline int domain_error_at_2(int a, int b) {
  if (a == 2) throw std::domain_error("two");
  return a + b;
}
inline int slow_identity(int x) {
  std::this_thread::sleep_for(std::chrono::milliseconds(20));
  return x;
}

// The remote details of a task's exception, which every rethrown one carries.
inline const multiproc::RemoteErrorInfo& info_of(const std::exception& e) {
  auto* info = dynamic_cast<const multiproc::RemoteErrorInfo*>(&e);
  if (!info) throw std::logic_error(std::string("no RemoteErrorInfo in ") + e.what());
  return *info;
}

// imap over 0..19, four items a chunk, where item 13 throws: every other item comes back in
// order, and 13 as its own exception type, naming its index and carrying its message.
template <class Pool>
void expect_imap_fails_only_at_13(Pool& pool) {
  auto it = pool.imap(out_of_range_at_13, std::views::iota(int64_t{0}, int64_t{20}), 4);
  for (int64_t i = 0; i < 20; ++i) {
    if (i != 13) {
      EXPECT_EQ(it.next(std::chrono::seconds(30)), i);
      continue;
    }
    try {
      (void)it.next(std::chrono::seconds(30));
      ADD_FAILURE() << "no exception at 13";
    } catch (const std::out_of_range& e) {
      EXPECT_EQ(info_of(e).item_index(), std::optional<size_t>(13));
      EXPECT_EQ(info_of(e).message(), "thirteen");
    }
  }
}
