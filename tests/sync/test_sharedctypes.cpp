// Value and Array: CPython's _TestValue and _TestArray semantics, each process-using body under
// fork, spawn and forkserver.
#include <sys/resource.h>
#include <unistd.h>
#include <cmath>
#include <cstdint>
#include <mutex>
#include <numeric>
#include <string>
#include <thread>
#include <vector>

#include "start_methods.hpp"

using namespace std::chrono_literals;

namespace {

bool shm_exists(const std::string& name) {
  return access(("/dev/shm" + name).c_str(), F_OK) == 0;
}

struct Point {
  double x;
  int32_t y;
  char tag;
};

void increment_under_lock(mp::Value<int64_t> v, int times) {
  for (int i = 0; i < times; ++i) {
    std::lock_guard g(v.get_lock());
    v.set(v.value() + 1);
  }
}

void increment_raw_under_lock(mp::Value<int64_t> v, int times) {
  for (int i = 0; i < times; ++i) {
    std::lock_guard g(v.get_lock());
    ++v.raw();
  }
}

void set_point(mp::Value<Point> p) {
  p.set(Point{2.5, -7, 'q'});
}

// Python's _TestValue._test: each value set to a new one.
void change_values(mp::Value<int> i, mp::Value<double> d, mp::Value<char> c) {
  i.value(i.value() * 2 + 1);
  d.set(d.value() * 2);
  c.set('x');
}

// Python's _TestArray.f: seq[i] += seq[i-1] (a running sum), under the lock.
void running_sum(mp::Array<double> seq) {
  std::lock_guard g(seq.get_lock());
  for (size_t i = 1; i < seq.size(); ++i) seq[i] += seq[i - 1];
}

void add_to_every_slot(mp::Array<int> a, int times) {
  for (int t = 0; t < times; ++t) {
    std::lock_guard g(a.get_lock());
    for (auto& x : a) ++x;
  }
}

void increment_both(mp::Value<int> a, mp::Value<int> b, int times) {
  for (int i = 0; i < times; ++i) {
    std::lock_guard g(a.get_lock());  // also b's lock
    a.set(a.value() + 1);
    b.set(b.value() + 1);
  }
}

mp::Value<int>* g_inherited = nullptr;
void bump_inherited() {
  std::lock_guard g(g_inherited->get_lock());
  g_inherited->set(g_inherited->value() + 10);
}

}  // namespace

// ================================= Value =========================================================

TEST(Value, GetSetRaw) {
  mp::Value<int> v(5);
  EXPECT_EQ(v.value(), 5);
  v.set(6);
  EXPECT_EQ(v.value(), 6);
  v.value(7);
  EXPECT_EQ(v.raw(), 7);
  v.raw() = 8;
  EXPECT_EQ(v.value(), 8);
  mp::Value<double> zero;
  EXPECT_EQ(zero.value(), 0.0);
  mp::Value<int> same = v;
  same.set(9);
  EXPECT_EQ(v.value(), 9);
  EXPECT_TRUE(same == v);
}

TEST(Value, AccessorsDoNotDeadlockUnderTheirOwnLock) {
  mp::Value<int> v(1);
  {
    std::lock_guard g(v.get_lock());
    v.set(v.value() + 1);
  }
  EXPECT_EQ(v.value(), 2);
  // Another thread's accessors wait for the lock.
  v.get_lock().acquire();
  std::thread t([v]() mutable { v.set(100); });
  std::this_thread::sleep_for(30ms);
  EXPECT_EQ(v.raw(), 2);
  v.get_lock().release();
  t.join();
  EXPECT_EQ(v.value(), 100);
}

TEST(Value, StructType) {
  mp::Value<Point> p(Point{1.0, 2, 'a'});
  Point got = p.value();
  EXPECT_EQ(got.x, 1.0);
  EXPECT_EQ(got.y, 2);
  EXPECT_EQ(got.tag, 'a');
}

TEST(Value, SharedLock) {
  mp::Lock lock;
  mp::Value<int> a(0, lock), b(0, lock);
  EXPECT_TRUE(a.get_lock() == b.get_lock());
  EXPECT_TRUE(a.get_lock() == lock);
}

class ValueTest : public StartMethodTest {};

TEST_P(ValueTest, ChildrenIncrementUnderTheLock) {
  const int children = 3, times = 1000;
  mp::Value<int64_t> v(0);
  std::vector<mp::Process> ps;
  for (int i = 0; i < children; ++i)
    ps.emplace_back(ctx(), i % 2 ? increment_raw_under_lock : increment_under_lock, v, times);
  for (auto& p : ps) p.start();
  increment_under_lock(v, times);
  for (auto& p : ps) {
    p.join();
    EXPECT_EQ(p.exitcode(), 0);
  }
  EXPECT_EQ(v.value(), (children + 1) * times);
}

TEST_P(ValueTest, ChangedByAChild) {
  mp::Value<int> i(-1);
  mp::Value<double> d(1.25);
  mp::Value<char> c('a');
  mp::Process p(ctx(), change_values, i, d, c);
  p.start();
  p.join();
  EXPECT_EQ(p.exitcode(), 0);
  EXPECT_EQ(i.value(), -1);
  EXPECT_EQ(d.value(), 2.5);
  EXPECT_EQ(c.value(), 'x');
}

TEST_P(ValueTest, StructSetByAChild) {
  mp::Value<Point> pt;
  mp::Process p(ctx(), set_point, pt);
  p.start();
  p.join();
  Point got = pt.value();
  EXPECT_EQ(got.x, 2.5);
  EXPECT_EQ(got.y, -7);
  EXPECT_EQ(got.tag, 'q');
}

TEST_P(ValueTest, TwoValuesOneLock) {
  mp::Lock lock;
  mp::Value<int> a(0, lock), b(0, lock);
  const int times = 500;
  mp::Process p(ctx(), increment_both, a, b, times);
  p.start();
  increment_both(a, b, times);
  p.join();
  EXPECT_EQ(a.value(), 2 * times);
  EXPECT_EQ(b.value(), 2 * times);
}

MP_ALL_START_METHODS(ValueTest);

TEST(Value, InheritedByFork) {
  mp::Value<int> v(1);
  g_inherited = &v;
  mp::Process p(mp::get_context(mp::StartMethod::fork), bump_inherited);
  p.start();
  p.join();
  g_inherited = nullptr;
  EXPECT_EQ(p.exitcode(), 0);
  EXPECT_EQ(v.value(), 11);
}

// ================================= Array =========================================================

TEST(Array, Basics) {
  mp::Array<int> a(5);
  EXPECT_EQ(a.size(), 5u);
  for (int x : a) EXPECT_EQ(x, 0);  // zero-filled, as Python's
  std::iota(a.begin(), a.end(), 10);
  EXPECT_EQ(a[0], 10);
  EXPECT_EQ(a.at(4), 14);
  EXPECT_THROW(a.at(5), mp::ProcessError);
  EXPECT_EQ(a.to_vector(), (std::vector<int>{10, 11, 12, 13, 14}));
  mp::Array<double> b(std::vector<double>{1.5, 2.5});
  EXPECT_EQ(b.to_vector(), (std::vector<double>{1.5, 2.5}));
  mp::Array<int> empty(size_t{0});
  EXPECT_EQ(empty.size(), 0u);
  EXPECT_TRUE(empty.to_vector().empty());
  EXPECT_EQ(empty.begin(), empty.end());
  {
    std::lock_guard g(a.get_lock());
    EXPECT_EQ(a.to_vector().size(), 5u);  // no deadlock under its own lock
  }
}

TEST(Array, StructElements) {
  mp::Array<Point> a(std::vector<Point>{{1, 2, 'a'}, {3, 4, 'b'}});
  EXPECT_EQ(a[1].y, 4);
  a[1].tag = 'z';
  EXPECT_EQ(a.to_vector()[1].tag, 'z');
}

class ArrayTest : public StartMethodTest {};

TEST_P(ArrayTest, RunningSumOfDoublesInAChild) {
  std::vector<double> seq{681, -50, 2.5, 96, 1.25, 0, 11.5};
  mp::Array<double> arr(seq);
  mp::Process p(ctx(), running_sum, arr);
  p.start();
  p.join();
  EXPECT_EQ(p.exitcode(), 0);
  for (size_t i = 1; i < seq.size(); ++i) seq[i] += seq[i - 1];
  EXPECT_EQ(arr.to_vector(), seq);
}

TEST_P(ArrayTest, ChildrenIncrementEverySlot) {
  const int children = 3, times = 1000;
  mp::Array<int> a(8);
  std::vector<mp::Process> ps;
  for (int i = 0; i < children; ++i) ps.emplace_back(ctx(), add_to_every_slot, a, times);
  for (auto& p : ps) p.start();
  for (auto& p : ps) p.join();
  for (int x : a.to_vector()) EXPECT_EQ(x, children * times);
}

MP_ALL_START_METHODS(ArrayTest);

// ================================= lifetime ======================================================

TEST(SharedCtypes, NoSegmentLeftAfterLastHandle) {
  std::vector<std::string> names;
  {
    mp::Value<int> v(1);
    mp::Array<double> a(100);
    names = {v.name(), v.get_lock().name(), a.name(), a.get_lock().name()};
    for (auto& n : names) EXPECT_TRUE(shm_exists(n)) << n;
    mp::Value<int> copy = v;
  }
  for (auto& n : names) EXPECT_FALSE(shm_exists(n)) << n;
}

TEST(SharedCtypes, WrongElementTypeIsRefused) {
  mp::Value<int> v(1);
  std::string bytes;
  mp::detail::dump(bytes, v);
  EXPECT_THROW(mp::detail::load<mp::Value<float>>(bytes), mp::ProcessError);
  mp::Array<int> a(3);
  bytes.clear();
  mp::detail::dump(bytes, a);
  mp::Array<int> same = mp::detail::load<mp::Array<int>>(bytes);
  EXPECT_TRUE(same == a);
  EXPECT_EQ(same.size(), 3u);
}

// ================================= Sizes =========================================================

TEST(Array, SizeThatWrapsIsRefused) {
  // -1 converts to 2^64-1: 8 * that wraps to a tiny segment whose size() would claim 2^64-1.
  EXPECT_THROW(mp::Array<double>(static_cast<size_t>(-1)), mp::ProcessError);
  EXPECT_THROW(mp::Array<double>(SIZE_MAX / 8 + 1), mp::ProcessError);
  EXPECT_THROW(mp::Array<char>(SIZE_MAX - 10), mp::ProcessError);
  mp::Array<double> fine(3);
  EXPECT_EQ(fine.size(), 3u);
}

struct Huge {
  char bytes[16 << 20];
};

// With an 8 MiB stack (the usual limit), a T{} on the stack would crash the process.
void make_huge_value() {
  rlimit rl{};
  getrlimit(RLIMIT_STACK, &rl);
  rl.rlim_cur = std::min<rlim_t>(rl.rlim_cur, 8 << 20);
  setrlimit(RLIMIT_STACK, &rl);
  mp::Value<Huge> v;
  if (v.raw().bytes[12345] != 0) _exit(3);
  v.raw().bytes[(16 << 20) - 1] = 1;
}

TEST(Value, HugeTypeIsBuiltInSharedMemoryNotOnTheStack) {
  mp::Process p(mp::get_context(mp::StartMethod::fork), make_huge_value);
  p.start();
  p.join(60s);
  EXPECT_EQ(p.exitcode(), 0);
}
