// The same test bodies run against the core shared-memory objects (synchronize.hpp) and against
// manager proxies (CPython's WithManagerTest* classes run the same tests over both): Lock,
// Semaphore, Event, Condition and Barrier, with children started by fork, spawn and forkserver.
// Where the two differ they are not compared here: a proxy's Barrier.wait returns int64_t, the
// core's size_t; the core Lock's owner is a process, the proxy's a connection (per thread).
// dict and list have no core counterpart.
#include <gtest/gtest.h>

#include <chrono>
#include <memory>
#include <mutex>
#include <set>
#include <stdexcept>

#include <multiproc/managers.hpp>
#include <multiproc/synchronize.hpp>

#include "start_methods.hpp"

using namespace std::chrono_literals;

namespace {

// What a body needs, made as core objects...
struct Core {
  explicit Core(const mp::Context&) {}
  mp::Lock Lock() { return mp::Lock(); }
  mp::Semaphore Semaphore(int n) { return mp::Semaphore(n); }
  mp::Event Event() { return mp::Event(); }
  mp::Condition Condition() { return mp::Condition(); }
  mp::Barrier Barrier(int n) { return mp::Barrier(static_cast<size_t>(n)); }
};

// ... or as proxies to objects a manager's server hosts.
struct Proxied {
  explicit Proxied(const mp::Context& ctx) : m(ctx) {}
  mp::AcquirerProxy Lock() { return m.Lock(); }
  mp::AcquirerProxy Semaphore(int n) { return m.Semaphore(n); }
  mp::EventProxy Event() { return m.Event(); }
  mp::ConditionProxy Condition() { return m.Condition(); }
  mp::BarrierProxy Barrier(int n) { return m.Barrier(n); }
  mp::Manager m;
};

void check(bool ok, const char* what) {
  if (!ok) throw std::runtime_error(what);
}

template <class L>
void try_lock_fails(L lock) {
  check(!lock.acquire(false), "acquire(false) of a held lock succeeded");
  check(!lock.acquire(true, 50ms), "acquire(timeout) of a held lock succeeded");
}

template <class L>
void lock_and_release(L lock) {
  check(lock.acquire(true, 30s), "acquire of a free lock failed");
  lock.release();
}

template <class E>
void set_event(E e) {
  e.set();
}

template <class C, class E>
void notify_under_lock(C cond, E flag) {
  std::lock_guard g(cond);
  flag.set();
  cond.notify_all();
}

template <class B>
void barrier_wait(B b) {
  b.wait(30s);
}

template <class S>
void release_one(S s) {
  s.release();
}

template <class K>
class SharedBodies {
 public:
  static void lock(const mp::Context& ctx) {
    K k(ctx);
    auto l = k.Lock();
    ASSERT_TRUE(l.acquire());
    run(ctx, try_lock_fails<decltype(l)>, l);
    l.release();
    run(ctx, lock_and_release<decltype(l)>, l);
    EXPECT_TRUE(l.acquire(false));
    l.release();
  }
  static void semaphore(const mp::Context& ctx) {
    K k(ctx);
    auto s = k.Semaphore(2);
    EXPECT_TRUE(s.acquire());
    EXPECT_TRUE(s.acquire(true, 1s));
    EXPECT_FALSE(s.acquire(false));
    EXPECT_FALSE(s.acquire(true, 20ms));
    run(ctx, release_one<decltype(s)>, s);
    EXPECT_TRUE(s.acquire(false));
  }
  static void event(const mp::Context& ctx) {
    K k(ctx);
    auto e = k.Event();
    EXPECT_FALSE(e.is_set());
    EXPECT_FALSE(e.wait(20ms));
    run(ctx, set_event<decltype(e)>, e);
    EXPECT_TRUE(e.is_set());
    EXPECT_TRUE(e.wait(30s));
    e.clear();
    EXPECT_FALSE(e.is_set());
  }
  static void condition(const mp::Context& ctx) {
    K k(ctx);
    auto cond = k.Condition();
    auto flag = k.Event();
    std::unique_lock g(cond);
    mp::Process p(ctx, notify_under_lock<decltype(cond), decltype(flag)>, cond, flag);
    p.start();
    EXPECT_TRUE(cond.wait_for([&] { return flag.is_set(); }, 30s));
    g.unlock();
    ASSERT_TRUE(p.join(30s));
    EXPECT_EQ(p.exitcode(), 0);
    g.lock();
    EXPECT_FALSE(cond.wait(20ms));  // nobody notifies: a timeout, with the lock back
    g.unlock();
  }
  static void barrier(const mp::Context& ctx) {
    K k(ctx);
    auto b = k.Barrier(3);
    EXPECT_EQ(b.parties(), 3);
    std::vector<std::unique_ptr<mp::Process>> ps;
    for (int i = 0; i < 2; ++i) {
      ps.push_back(std::make_unique<mp::Process>(ctx, barrier_wait<decltype(b)>, b));
      ps.back()->start();
    }
    auto index = static_cast<int64_t>(b.wait(30s));
    EXPECT_GE(index, 0);
    EXPECT_LT(index, 3);
    for (auto& p : ps) {
      ASSERT_TRUE(p->join(30s));
      EXPECT_EQ(p->exitcode(), 0);
    }
    EXPECT_FALSE(b.broken());
    b.abort();
    EXPECT_TRUE(b.broken());
    EXPECT_THROW(b.wait(1s), mp::BrokenBarrierError);
    b.reset();
    EXPECT_FALSE(b.broken());
    EXPECT_EQ(b.n_waiting(), 0);
  }

 private:
  template <class F, class... A>
  static void run(const mp::Context& ctx, F f, const A&... a) {
    mp::Process p(ctx, f, a...);
    p.start();
    ASSERT_TRUE(p.join(30s));
    EXPECT_EQ(p.exitcode(), 0);
  }
};

class WithCore : public StartMethodTest {};
class WithManager : public StartMethodTest {};

TEST_P(WithCore, Lock) {
  SharedBodies<Core>::lock(ctx());
}
TEST_P(WithManager, Lock) {
  SharedBodies<Proxied>::lock(ctx());
}
TEST_P(WithCore, Semaphore) {
  SharedBodies<Core>::semaphore(ctx());
}
TEST_P(WithManager, Semaphore) {
  SharedBodies<Proxied>::semaphore(ctx());
}
TEST_P(WithCore, Event) {
  SharedBodies<Core>::event(ctx());
}
TEST_P(WithManager, Event) {
  SharedBodies<Proxied>::event(ctx());
}
TEST_P(WithCore, Condition) {
  SharedBodies<Core>::condition(ctx());
}
TEST_P(WithManager, Condition) {
  SharedBodies<Proxied>::condition(ctx());
}
TEST_P(WithCore, Barrier) {
  SharedBodies<Core>::barrier(ctx());
}
TEST_P(WithManager, Barrier) {
  SharedBodies<Proxied>::barrier(ctx());
}

MP_ALL_START_METHODS(WithCore);
MP_ALL_START_METHODS(WithManager);

}  // namespace
