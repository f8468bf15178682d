// User-defined hosted types (CPython's BaseManager.register and _TestMyManager): a registered
// class's exposed methods through a typed proxy, exceptions crossing as errors, a factory with
// arguments, the same class under two typeids with two exposed sets, proxies used in children,
// objects by name; under fork, spawn and forkserver (the server is started with each).
#include <gtest/gtest.h>

#include <unistd.h>
#include <memory>
#include <optional>
#include <stdexcept>
#include <string>
#include <vector>

#include <multiproc/managers.hpp>

#include "start_methods.hpp"

using namespace std::chrono_literals;

namespace {

// CPython's FooBar: f() answers, g() raises, _h() is private unless a proxy exposes it.
class Foo {
 public:
  std::string f() const { return "f()"; }
  void g() { throw std::invalid_argument("g() raised"); }
  void k() { throw 42; }  // not a std::exception
  std::string h() const { return "_h()"; }
};
using FooProxy = mp::Proxy<Foo, &Foo::f, &Foo::g, &Foo::k>;
using BarProxy = mp::Proxy<Foo, &Foo::f, &Foo::h>;

class Counter {
 public:
  explicit Counter(int start) : n_(start) {}
  void add(int k) { n_ += k; }
  int get() const { return n_; }
  std::vector<int> history(int times) const { return std::vector<int>(times, n_); }

 private:
  int n_;
};

// A proxy class with named calls: the least a user writes to get c.add(1).
struct CounterProxy : mp::Proxy<Counter, &Counter::add, &Counter::get, &Counter::history> {
  using Proxy::Proxy;
  void add(int k) { call<&Counter::add>(k); }
  int get() const { return call<&Counter::get>(); }
};

std::unique_ptr<Counter> make_counter(int start) {
  if (start < 0) throw std::invalid_argument("a counter starts at 0 or more");
  return std::make_unique<Counter>(start);
}

mp::Registry registry() {
  mp::Registry r;
  r.add<FooProxy>("Foo");
  r.add<BarProxy>("Bar");
  r.add<CounterProxy, &make_counter>("Counter");
  return r;
}

void add_in_child(CounterProxy c, int times) {
  for (int i = 0; i < times; ++i) c.add(1);
}

class RegisteredTypes : public StartMethodTest {};

TEST_P(RegisteredTypes, ExposedMethodsAndExceptions) {
  mp::Manager m(ctx(), registry());
  auto foo = m.make<FooProxy>("Foo");
  auto bar = m.make<BarProxy>("Bar");
  EXPECT_EQ(foo.call<&Foo::f>(), "f()");
  try {
    foo.call<&Foo::g>();
    FAIL() << "g() did not raise";
  } catch (const mp::ProcessError& e) {
    EXPECT_NE(std::string(e.what()).find("g() raised"), std::string::npos) << e.what();
  }
  try {
    foo.call<&Foo::k>();
    FAIL() << "k() did not raise";
  } catch (const mp::ProcessError& e) {
    EXPECT_NE(std::string(e.what()).find("not a std::exception"), std::string::npos) << e.what();
  }
  EXPECT_EQ(foo.call<&Foo::f>(), "f()");  // the connection and the server go on
  EXPECT_EQ(bar.call<&Foo::f>(), "f()");
  EXPECT_EQ(bar.call<&Foo::h>(), "_h()");
  // foo.call<&Foo::h>() and bar.call<&Foo::g>() do not compile: not exposed by those proxies.
  EXPECT_NE(foo.id(), bar.id());
  m.shutdown();
  EXPECT_THROW(foo.call<&Foo::f>(), mp::ProcessError);
}

TEST_P(RegisteredTypes, FactoryArgumentsAndChildren) {
  mp::Manager m(ctx(), registry());
  auto c = m.make<CounterProxy>("Counter", 10);
  EXPECT_EQ(c.get(), 10);
  std::vector<mp::Process> ps;
  for (int i = 0; i < 3; ++i) ps.emplace_back(ctx(), add_in_child, c, 5);
  for (auto& p : ps) p.start();
  for (auto& p : ps) {
    ASSERT_TRUE(p.join(30s));
    EXPECT_EQ(p.exitcode(), 0);
  }
  EXPECT_EQ(c.get(), 25);
  EXPECT_EQ(c.call<&Counter::history>(2), std::vector<int>({25, 25}));
  // The factory's exception comes back, and nothing is made.
  EXPECT_THROW(m.make<CounterProxy>("Counter", -1), mp::ProcessError);
  EXPECT_EQ(m.make<CounterProxy>("Counter", 0).get(), 0);
}

TEST_P(RegisteredTypes, WrongTypeidOrProxyIsRefused) {
  mp::Manager m(ctx(), registry());
  EXPECT_THROW(m.make<FooProxy>("Nothing"), mp::ProcessError);
  EXPECT_THROW(m.make<FooProxy>("Bar"), mp::ProcessError);  // Bar is registered with BarProxy
  EXPECT_THROW(m.make<CounterProxy>("Counter", std::string("x")), mp::ProcessError);
  mp::Manager plain(ctx());
  EXPECT_THROW(plain.make<FooProxy>("Foo"), mp::ProcessError);
}

TEST_P(RegisteredTypes, ByName) {
  mp::Manager m(ctx(), registry());
  auto a = m.make_named<CounterProxy>("Counter", "hits", 1);
  auto b = m.make_named<CounterProxy>("Counter", "hits", 99);  // found, not made again
  EXPECT_EQ(a.id(), b.id());
  b.add(1);
  EXPECT_EQ(a.get(), 2);
  EXPECT_THROW(m.make_named<BarProxy>("Bar", "hits"), mp::ProcessError);
}

MP_ALL_START_METHODS(RegisteredTypes);

}  // namespace

// --- lifetimes (CPython's incref/decref) --------------------------------------------------------

namespace {

int read_value(mp::ValueProxy<int> v) {
  return v.get();
}

class ProxyLifetime : public StartMethodTest {};

TEST_P(ProxyLifetime, AnUnnamedObjectIsFreedWithItsLastProxy) {
  mp::Manager m(ctx(), registry());
  ASSERT_EQ(m.number_of_objects(), 0u);
  {
    auto d = m.dict<std::string, int>();
    auto copy = d;
    d = {};
    copy.set("x", 1);
    auto c = m.make<CounterProxy>("Counter", 1);
    auto l = m.Lock();
    l.acquire();
    EXPECT_EQ(m.number_of_objects(), 3u);
  }
  EXPECT_EQ(m.number_of_objects(), 0u);
  // Named objects stay: anyone may ask for them by name later.
  { m.dict<std::string, int>("kept").set("x", 1); }
  EXPECT_EQ(m.number_of_objects(), 1u);
  auto kept = m.dict<std::string, int>("kept");
  EXPECT_EQ(kept.get("x"), 1);
}

TEST_P(ProxyLifetime, AProxyThatLeftItsProcessKeepsTheObject) {
  mp::Manager m(ctx());
  auto outer = m.list<mp::ValueProxy<int>>();
  {
    auto v = m.Value<int>(7);
    mp::Process p(ctx(), read_value, v);  // leaves this process: pinned for the server's life
    p.start();
    ASSERT_TRUE(p.join(30s));
    EXPECT_EQ(p.exitcode(), 0);
    auto w = m.Value<int>(8);
    outer.append(w);  // stored in another hosted object: pinned too
  }
  EXPECT_EQ(m.number_of_objects(), 3u);
  EXPECT_EQ(outer.get(0).get(), 8);
}

TEST_P(ProxyLifetime, AnUnnamedQueueIsFreedWithItsLastHandle) {
  mp::Manager m(ctx());
  std::string segment;
  {
    auto q = m.Queue<int>();
    q.put(1);
    EXPECT_EQ(q.get(10s), 1);
    segment = "/dev/shm/" + (q.name()[0] == '/' ? q.name().substr(1) : q.name());
    EXPECT_EQ(::access(segment.c_str(), F_OK), 0) << segment;
  }
  EXPECT_NE(::access(segment.c_str(), F_OK), 0) << segment;
  EXPECT_EQ(m.number_of_objects(), 0u);
}

MP_ALL_START_METHODS(ProxyLifetime);

// Refused at compile time, as the values' static_assert says.
static_assert(mp::detail::holds_queue<mp::Queue<int>>::value);
static_assert(mp::detail::holds_queue<std::vector<std::pair<int, mp::JoinableQueue<int>>>>::value);
static_assert(mp::detail::holds_queue<std::optional<mp::LifoQueue<int>>>::value);
static_assert(!mp::detail::holds_queue<std::vector<mp::DictProxy<int, int>>>::value);
static_assert(!mp::detail::holds_queue<std::string>::value);

}  // namespace
