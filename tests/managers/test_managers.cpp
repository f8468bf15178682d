// Manager and proxies (CPython's _TestContainers basics, TestManagerExceptions, the lock and
// event parts of TestSyncManagerTypes, a dead server, hostile clients), under fork, spawn and
// forkserver: the server is started with the test's start method and proxies travel to
// children started with it.
#include <gtest/gtest.h>

#include <signal.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <unistd.h>
#include <chrono>
#include <cstring>
#include <limits>
#include <map>
#include <mutex>
#include <random>
#include <string>
#include <thread>
#include <vector>

#include <multiproc/connection.hpp>
#include <multiproc/managers.hpp>

#include "start_methods.hpp"

using namespace std::chrono_literals;

namespace {

// --- child tasks --------------------------------------------------------------------------------

void fill_dict(mp::DictProxy<std::string, int> d, int n) {
  for (int i = 0; i < n; ++i) d.set("k" + std::to_string(i), i);
}

void add_to_value(mp::ValueProxy<int> v, mp::AcquirerProxy lock, int times) {
  for (int i = 0; i < times; ++i) {
    std::lock_guard g(lock);
    v.set(v.get() + 1);
  }
}

void put_squares(mp::Queue<double> q, int n) {
  for (int i = 0; i < n; ++i) q.put(double(i) * i);
}

void set_event_after(mp::EventProxy e, mp::NamespaceProxy ns) {
  ns.set("who", std::string("child"));
  e.set();
}

void take_lock_and_die(mp::AcquirerProxy lock, mp::Connection done) {
  lock.acquire();
  done.send(1);
  ::kill(::getpid(), SIGKILL);
}

// Calls the proxy while the parent does too: each process must have a connection of its own.
void read_value_often(mp::ValueProxy<int> v, int times) {
  for (int i = 0; i < times; ++i)
    if (v.get() != 7) std::_Exit(3);
}

void use_nested(mp::ListProxy<mp::DictProxy<std::string, int>> l) {
  l.get(0).set("seen", 1);
}

// Another program would do the same: connect by address and key, find objects by name.
void remote_client(std::string address, std::string key) {
  mp::Manager m = mp::Manager::connect(address, key);
  m.dict<std::string, int>("shared").set("child", 1);
  m.Queue<int>("jobs").put(7);
  m.shutdown();  // a connected manager does not own the server: nothing happens
}

void notify_after(mp::ConditionProxy cond, mp::ValueProxy<int> v) {
  std::lock_guard g(cond);
  v.set(1);
  cond.notify_all();
}

void barrier_party(mp::BarrierProxy b, mp::ListProxy<int64_t> out) {
  out.append(b.wait(std::chrono::seconds(30)));
}

int double_it(mp::ValueProxy<int> v) {
  return v.get() * 2;
}

void list_appender(mp::ListProxy<std::string> l, std::string s) {
  l.append(s);
}

// --- tests --------------------------------------------------------------------------------------

class ManagerTest : public StartMethodTest {};

TEST_P(ManagerTest, DictBasics) {
  mp::Manager manager(ctx());
  auto d = manager.dict<std::string, int>();
  EXPECT_EQ(d.size(), 0u);
  d.set("a", 1);
  d.set("b", 2);
  d.set("a", 3);  // overwrite keeps the original position
  EXPECT_EQ(d.get("a"), 3);
  EXPECT_EQ(d.get("zz", -1), -1);
  EXPECT_TRUE(d.contains("b"));
  EXPECT_FALSE(d.contains("c"));
  EXPECT_THROW(d.get("c"), mp::KeyError);
  EXPECT_EQ(d.keys(), (std::vector<std::string>{"a", "b"}));
  EXPECT_EQ(d.values(), (std::vector<int>{3, 2}));
  EXPECT_EQ(d.pop("a"), 3);
  EXPECT_THROW(d.pop("a"), mp::KeyError);
  EXPECT_EQ(d.size(), 1u);
  d.clear();
  EXPECT_EQ(d.size(), 0u);
}

// A forked child inherits the parent's thread with its cached connection to the server; it must
// open its own (two processes on one socket interleave their frames and wait for each other's
// replies: a hang, ended here after a minute).
TEST_P(ManagerTest, ChildrenCallOnConnectionsOfTheirOwn) {
  mp::Manager manager(ctx());
  auto v = manager.Value<int>(7);
  EXPECT_EQ(v.get(), 7);  // this thread's connection is open before the children start
  mp::Process a(ctx(), read_value_often, v, 2000), b(ctx(), read_value_often, v, 2000);
  a.start();
  b.start();
  for (mp::Process* p : {&a, &b}) {
    if (!p->join(60s)) {
      p->kill();
      p->join();
    }
    EXPECT_EQ(p->exitcode(), 0);
  }
  EXPECT_EQ(v.get(), 7);
}

TEST_P(ManagerTest, DictFilledByAChild) {
  mp::Manager manager(ctx());
  auto d = manager.dict<std::string, int>();
  mp::Process p(ctx(), fill_dict, d, 20);
  p.start();
  ASSERT_TRUE(p.join(30s));
  EXPECT_EQ(p.exitcode(), 0);
  EXPECT_EQ(d.size(), 20u);
  EXPECT_EQ(d.get("k7"), 7);
  auto items = d.items();
  ASSERT_EQ(items.size(), 20u);
  EXPECT_EQ(items[0], (std::pair<std::string, int>{"k0", 0}));  // insertion order
}

TEST_P(ManagerTest, ListBasics) {
  mp::Manager manager(ctx());
  auto l = manager.list<std::string>();
  l.append("x");
  l.extend(std::vector<std::string>{"y", "z"});
  EXPECT_EQ(l.size(), 3u);
  EXPECT_EQ(l.get(-1), "z");
  l.set(0, "w");
  EXPECT_EQ(l.copy(), (std::vector<std::string>{"w", "y", "z"}));
  EXPECT_THROW(l.get(3), std::out_of_range);
  EXPECT_EQ(l.pop(), "z");
  mp::Process p(ctx(), list_appender, l, std::string("from child"));
  p.start();
  ASSERT_TRUE(p.join(30s));
  EXPECT_EQ(l.get(2), "from child");
}

TEST_P(ManagerTest, NestedProxies) {
  // A proxy inside a proxy's object (CPython's test_dict_proxy_nested), used from a child.
  mp::Manager manager(ctx());
  auto d = manager.dict<std::string, int>();
  auto l = manager.list<mp::DictProxy<std::string, int>>();
  l.append(d);
  mp::Process p(ctx(), use_nested, l);
  p.start();
  ASSERT_TRUE(p.join(30s));
  EXPECT_EQ(p.exitcode(), 0);
  EXPECT_EQ(d.get("seen"), 1);
  EXPECT_EQ(l.get(0).get("seen"), 1);
}

TEST_P(ManagerTest, ValueAndLockAcrossProcesses) {
  mp::Manager manager(ctx());
  auto v = manager.Value<int>(0);
  auto lock = manager.Lock();
  std::vector<mp::Process> ps;
  for (int i = 0; i < 3; ++i) {
    ps.emplace_back(ctx(), add_to_value, v, lock, 50);
    ps.back().start();
  }
  for (auto& p : ps) {
    ASSERT_TRUE(p.join(60s));
    EXPECT_EQ(p.exitcode(), 0);
  }
  EXPECT_EQ(v.get(), 150);
}

TEST_P(ManagerTest, LockSemantics) {
  mp::Manager manager(ctx());
  auto lock = manager.Lock();
  EXPECT_TRUE(lock.acquire());
  EXPECT_FALSE(lock.acquire(false));
  auto t0 = std::chrono::steady_clock::now();
  EXPECT_FALSE(lock.acquire(true, 100ms));
  EXPECT_GE(std::chrono::steady_clock::now() - t0, 90ms);
  lock.release();
  EXPECT_THROW(lock.release(), mp::ProcessError);
  // Another thread (its own connection) is not held up by one blocked in acquire.
  EXPECT_TRUE(lock.acquire());
  std::thread t([lock]() mutable {
    EXPECT_TRUE(lock.acquire(true, 20s));
    lock.release();
  });
  std::this_thread::sleep_for(50ms);
  auto v = manager.Value<int>(5);
  EXPECT_EQ(v.get(), 5);
  lock.release();
  t.join();
}

TEST_P(ManagerTest, RLockAndSemaphores) {
  mp::Manager manager(ctx());
  auto rlock = manager.RLock();
  EXPECT_TRUE(rlock.acquire());
  EXPECT_TRUE(rlock.acquire());  // re-entrant for its owner
  std::thread other([rlock]() mutable {
    EXPECT_FALSE(rlock.acquire(false));  // another thread is another owner
    EXPECT_THROW(rlock.release(), mp::ProcessError);
  });
  other.join();
  rlock.release();
  rlock.release();
  EXPECT_THROW(rlock.release(), mp::ProcessError);

  auto sem = manager.Semaphore(2);
  EXPECT_TRUE(sem.acquire());
  EXPECT_TRUE(sem.acquire());
  EXPECT_FALSE(sem.acquire(true, 50ms));
  sem.release();
  sem.release();
  sem.release();  // unbounded: allowed
  auto bsem = manager.BoundedSemaphore(1);
  EXPECT_TRUE(bsem.acquire());
  bsem.release();
  EXPECT_THROW(bsem.release(), mp::ProcessError);
}

TEST_P(ManagerTest, ConditionWaitAndNotify) {
  mp::Manager manager(ctx());
  auto cond = manager.Condition();
  auto v = manager.Value<int>(0);
  EXPECT_THROW(cond.wait(10ms), mp::ProcessError);  // not holding the lock
  EXPECT_THROW(cond.notify(), mp::ProcessError);
  std::unique_lock lk(cond);
  EXPECT_FALSE(cond.wait(50ms));  // nobody notifies: timeout, lock held again
  mp::Process p(ctx(), notify_after, cond, v);
  p.start();  // it can only take the lock while we wait
  EXPECT_TRUE(cond.wait_for([&] { return v.get() == 1; }, 30s));
  lk.unlock();
  ASSERT_TRUE(p.join(30s));
}

TEST_P(ManagerTest, BarrierAcrossProcesses) {
  mp::Manager manager(ctx());
  auto b = manager.Barrier(3);
  auto out = manager.list<int64_t>();
  EXPECT_EQ(b.parties(), 3);
  std::vector<mp::Process> ps;
  for (int i = 0; i < 2; ++i) {
    ps.emplace_back(ctx(), barrier_party, b, out);
    ps.back().start();
  }
  out.append(b.wait(30s));
  for (auto& p : ps) ASSERT_TRUE(p.join(30s));
  auto got = out.copy();
  std::sort(got.begin(), got.end());
  EXPECT_EQ(got, (std::vector<int64_t>{0, 1, 2}));
  // A timeout breaks it for everyone until reset().
  EXPECT_THROW(b.wait(50ms), mp::BrokenBarrierError);
  EXPECT_TRUE(b.broken());
  EXPECT_THROW(b.wait(), mp::BrokenBarrierError);
  b.reset();
  EXPECT_FALSE(b.broken());
  b.abort();
  EXPECT_THROW(b.wait(), mp::BrokenBarrierError);
}

TEST_P(ManagerTest, ALockHeldByADeadClientIsReleased) {
  mp::Manager manager(ctx());
  auto lock = manager.Lock();
  auto [r, w] = mp::Pipe(false);
  mp::Process p(ctx(), take_lock_and_die, lock, w);
  p.start();
  EXPECT_EQ(r.recv<int>(30s), 1);
  ASSERT_TRUE(p.join(30s));
  EXPECT_TRUE(lock.acquire(true, 20s));
  lock.release();
}

TEST_P(ManagerTest, EventAndNamespace) {
  mp::Manager manager(ctx());
  auto e = manager.Event();
  auto ns = manager.Namespace();
  EXPECT_FALSE(e.is_set());
  EXPECT_FALSE(e.wait(50ms));
  ns.set("x", 10);
  ns.set("name", std::string("abc"));
  EXPECT_EQ(ns.get<int>("x"), 10);
  EXPECT_EQ(ns.get<std::string>("name"), "abc");
  EXPECT_THROW(ns.get<double>("x"), mp::ProcessError);
  EXPECT_THROW(ns.get<int>("missing"), mp::KeyError);
  EXPECT_TRUE(ns.contains("x"));
  ns.erase("x");
  EXPECT_FALSE(ns.contains("x"));
  mp::Process p(ctx(), set_event_after, e, ns);
  p.start();
  EXPECT_TRUE(e.wait(30s));
  EXPECT_TRUE(e.is_set());
  EXPECT_EQ(ns.get<std::string>("who"), "child");
  e.clear();
  EXPECT_FALSE(e.is_set());
  ASSERT_TRUE(p.join(30s));
}

TEST_P(ManagerTest, QueueIsASharedMemoryQueueKeptAliveByTheServer) {
  mp::Manager manager(ctx());
  mp::QueueProxy<double> q = manager.Queue<double>();
  mp::Process p(ctx(), put_squares, q, 10);
  p.start();
  ASSERT_TRUE(p.join(30s));
  double sum = 0;
  for (int i = 0; i < 10; ++i) sum += q.get(10s);
  EXPECT_EQ(sum, 285.0);
  auto jq = manager.JoinableQueue<int>(2);
  jq.put(1);
  jq.put(2);
  EXPECT_THROW(jq.put(3, 10ms), mp::Full);
  jq.get();
  jq.task_done();
  jq.get();
  jq.task_done();
  EXPECT_TRUE(jq.join(1s));
}

TEST_P(ManagerTest, ProxiesAsPoolArguments) {
  mp::Manager manager(ctx());
  auto v = manager.Value<int>(21);
  mp::Pool pool(mp::PoolOptions{.processes = 2, .context = ctx()});
  auto r = pool.map(double_it, std::vector<mp::ValueProxy<int>>(4, v));
  EXPECT_EQ(r, (std::vector<int>{42, 42, 42, 42}));
}

TEST_P(ManagerTest, ADeadServerMakesEveryCallFailAtOnce) {
  mp::Manager manager(ctx());
  auto d = manager.dict<int, int>();
  auto lock = manager.Lock();
  d.set(1, 1);
  ASSERT_GT(manager.pid(), 0);
  ::kill(manager.pid(), SIGKILL);
  auto t0 = std::chrono::steady_clock::now();
  EXPECT_THROW(d.get(1), mp::ProcessError);
  EXPECT_THROW(d.get(1), mp::ProcessError);  // and again, reconnecting
  EXPECT_THROW(lock.acquire(), mp::ProcessError);
  try {
    d.size();
  } catch (const mp::ProcessError& e) {
    EXPECT_NE(std::string(e.what()).find("manager"), std::string::npos) << e.what();
  }
  EXPECT_LT(std::chrono::steady_clock::now() - t0, 5s);
  manager.shutdown();
}

TEST_P(ManagerTest, ShutdownStopsTheServerAndProxiesFail) {
  mp::Manager manager(ctx());
  auto v = manager.Value<std::string>("x");
  pid_t pid = manager.pid();
  manager.shutdown();
  EXPECT_EQ(manager.pid(), -1);
  EXPECT_NE(::kill(pid, 0) == 0 && ::waitpid(pid, nullptr, WNOHANG) == 0, true);
  EXPECT_THROW(v.get(), mp::ProcessError);
  manager.shutdown();  // idempotent
}

TEST_P(ManagerTest, ServeOnTcpAndConnectFromAnotherProcess) {
  mp::Manager server = mp::Manager::serve("127.0.0.1:0", "remote key", ctx());
  ASSERT_EQ(server.address().rfind("127.0.0.1:", 0), 0u) << server.address();
  EXPECT_NE(server.address(), "127.0.0.1:0");
  auto shared = server.dict<std::string, int>("shared");
  mp::Process p(ctx(), remote_client, server.address(), std::string("remote key"));
  p.start();
  ASSERT_TRUE(p.join(30s));
  EXPECT_EQ(p.exitcode(), 0);
  EXPECT_EQ(shared.get("child"), 1);
  EXPECT_EQ(server.Queue<int>("jobs").get(10s), 7);
  auto again = server.dict<std::string, int>("shared");
  EXPECT_EQ(again.id(), shared.id());                          // the same object
  EXPECT_THROW(server.list<int>("shared"), mp::ProcessError);  // another kind
  EXPECT_GT(server.pid(), 0);  // the client's shutdown() left it running
  EXPECT_THROW(mp::Manager::connect(server.address(), "wrong key"), mp::AuthenticationError);
}

MP_ALL_START_METHODS(ManagerTest);

TEST(ManagerRemote, ConnectToNothingFailsAtOnce) {
  mp::Listener l("127.0.0.1:0");
  std::string addr = l.address();
  l.close();
  EXPECT_THROW(mp::Manager::connect(addr, "key"), mp::ProcessError);
}

// The server's side: a wrong key, garbage, an oversized frame or a malformed request gets that
// connection closed and nothing else; the server goes on serving.
TEST(ManagerServer, HostileClientsNeverStopTheServer) {
  mp::Manager manager;
  auto v = manager.Value<int>(1);
  EXPECT_THROW(mp::Client(manager.address(), std::string("wrong key")), mp::AuthenticationError);
  std::string path = manager.address().substr(5);
  auto raw = [&](const std::string& bytes) {
    int fd = ::socket(AF_UNIX, SOCK_STREAM, 0);
    sockaddr_un sa{};
    sa.sun_family = AF_UNIX;
    std::strcpy(sa.sun_path, path.c_str());
    EXPECT_EQ(::connect(fd, reinterpret_cast<sockaddr*>(&sa), sizeof sa), 0);
    (void)!::write(fd, bytes.data(), bytes.size());
    ::shutdown(fd, SHUT_WR);
    char buf[512];
    while (::read(fd, buf, sizeof buf) > 0) {
    }
    ::close(fd);
  };
  uint64_t huge = uint64_t{1} << 50;
  raw("garbage before the handshake");
  raw(std::string(reinterpret_cast<const char*>(&huge), 8));
  raw(std::string(10000, '\xff'));
  // Authenticated, then an oversized frame and a request that does not decode.
  {
    mp::Connection c = mp::Client(manager.address(), manager.authkey());
    ASSERT_EQ(::write(c.fileno(), &huge, 8), 8);
    EXPECT_THROW(c.recv_bytes(10s), mp::ProcessError);  // the server hung up
  }
  {
    mp::Connection c = mp::Client(manager.address(), manager.authkey());
    c.send_bytes("not a request");
    EXPECT_THROW(c.recv_bytes(10s), mp::ProcessError);
  }
  {
    // Well-formed, but arguments of the wrong shape: an error reply, the connection stays.
    mp::Connection c = mp::Client(manager.address(), manager.authkey());
    std::string req;
    mp::detail::dump(req, std::tuple<uint64_t, std::string, std::string>(v.id(), "set", "\x01"));
    c.send_bytes(req);
    auto [kind, msg] = mp::detail::load<std::tuple<uint8_t, std::string>>(c.recv_bytes(10s));
    EXPECT_NE(kind, 0);
    mp::detail::dump(req = "", std::tuple<uint64_t, std::string, std::string>(99999, "get", ""));
    c.send_bytes(req);
    auto [kind2, msg2] = mp::detail::load<std::tuple<uint8_t, std::string>>(c.recv_bytes(10s));
    EXPECT_NE(kind2, 0);
  }
  EXPECT_EQ(v.get(), 1);
  v.set(2);
  EXPECT_EQ(v.get(), 2);
}

// A seeded stream of mutated requests (bytes flipped, truncated, extended, lengths changed) on
// authenticated connections: whatever the server answers or however it hangs up, it never
// crashes and serves a well-behaved client afterwards.
TEST(ManagerServer, SurvivesMutatedRequests) {
  mp::Manager manager;
  auto d = manager.dict<std::string, int>();
  auto l = manager.list<int>();
  auto v = manager.Value<std::string>("ok");
  auto ns = manager.Namespace();
  d.set("a", 1);
  l.append(1);
  auto req = [](uint64_t id, std::string method, std::string args) {
    std::string out;
    mp::detail::dump(out, std::tuple<uint64_t, std::string, std::string>(id, method, args));
    return out;
  };
  using mp::detail::encode;
  using mp::detail::pack;
  std::vector<std::string> seeds = {
      req(d.id(), "set", pack(encode(std::string("k")), encode(2))),
      req(d.id(), "get", pack(encode(std::string("a")))),
      req(d.id(), "items", ""),
      req(l.id(), "get", pack(int64_t{0})),
      req(l.id(), "extend", pack(std::vector<std::string>{encode(1), encode(2)})),
      req(v.id(), "set", pack(encode(std::string("x")))),
      req(ns.id(), "set", pack(std::string("n"), std::string("i"), encode(3))),
      req(0, "create", pack(std::string("dict"), std::string(), std::string("name"))),
      req(0, "create_queue", pack(uint64_t{4}, false, std::string())),
  };
  std::mt19937_64 rng(12345);
  mp::Connection c = mp::Client(manager.address(), manager.authkey());
  int replies = 0, hangups = 0;
  for (int i = 0; i < 2000; ++i) {
    std::string m = seeds[rng() % seeds.size()];
    switch (rng() % 4) {
      case 0:
        for (int k = 0; k < 3; ++k) m[rng() % m.size()] = static_cast<char>(rng());
        break;
      case 1:
        m.resize(rng() % m.size());
        break;
      case 2:
        for (int k = 0; k < 8; ++k) m.push_back(static_cast<char>(rng()));
        break;
      default: {
        uint64_t huge = rng();  // a length field somewhere in the request
        size_t at = rng() % (m.size() - 7);
        std::memcpy(m.data() + at, &huge, 8);
      }
    }
    try {
      c.send_bytes(m);
      c.recv_bytes(2s);
      ++replies;
    } catch (const mp::ProcessError&) {
      ++hangups;  // the server closed this connection (or a mutated call blocks): start over
      c = mp::Client(manager.address(), manager.authkey());
    }
  }
  EXPECT_GT(replies, 0);
  EXPECT_GT(hangups, 0);
  // (Mutated values are opaque bytes to the server: they may no longer decode as the
  // proxy's type, which is the client's clear error, not the server's problem.)
  EXPECT_EQ(manager.Value<int>(9).get(), 9);
  EXPECT_TRUE(d.contains("a"));
  l.append(5);
  EXPECT_GE(l.size(), 2u);
}

// Arguments at the edges of their types, as a broken client could send them: no wait forever,
// no arithmetic overflow (UBSan builds abort on one), a reply every time.
TEST(ManagerServer, ExtremeArguments) {
  mp::Manager manager;
  auto cond = manager.Condition();
  auto e = manager.Event();
  auto lock = manager.Lock();
  mp::Connection c = mp::Client(manager.address(), manager.authkey());
  auto call = [&](uint64_t id, const std::string& method, const std::string& args) {
    std::string req;
    mp::detail::dump(req, std::tuple<uint64_t, std::string, std::string>(id, method, args));
    c.send_bytes(req);
    return mp::detail::load<std::tuple<uint8_t, std::string>>(c.recv_bytes(10s));
  };
  using mp::detail::pack;
  const double nan = std::numeric_limits<double>::quiet_NaN();
  EXPECT_EQ(std::get<0>(call(cond.id(), "acquire", pack(true, -1.0))), 0);
  EXPECT_EQ(std::get<0>(call(cond.id(), "notify", pack(std::numeric_limits<int64_t>::min()))), 0);
  // A NaN timeout is no number a proxy sends: an error reply (kind 4), and nothing changes.
  EXPECT_EQ(std::get<0>(call(cond.id(), "wait", pack(nan))), 4);
  EXPECT_EQ(std::get<0>(call(cond.id(), "release", {})), 0);  // still held: the wait took nothing
  EXPECT_EQ(std::get<0>(call(e.id(), "wait", pack(nan))), 4);
  EXPECT_EQ(std::get<0>(call(lock.id(), "acquire", pack(true, nan))), 4);
  EXPECT_EQ(std::get<0>(call(lock.id(), "acquire", pack(true, 1e300))), 0);
  EXPECT_EQ(std::get<0>(call(lock.id(), "acquire", pack(false, 1e300))), 0);  // held: no wait
  auto sem = manager.Semaphore(0);
  EXPECT_EQ(std::get<0>(call(sem.id(), "acquire", pack(true, 1e-300))), 0);  // a timeout
}

// A client that sends requests without waiting for replies gets every reply, in order: the
// server reads ahead in one recv and keeps what follows a request for the next.
TEST(ManagerServer, RequestsSentTogetherAreAnsweredInOrder) {
  mp::Manager manager;
  auto v = manager.Value<int>(41);
  mp::Connection c = mp::Client(manager.address(), manager.authkey());
  std::string bytes;
  for (const char* method : {"get", "no-such-method", "get"}) {
    std::string req;
    mp::detail::dump(req, std::tuple<uint64_t, std::string, std::string>(v.id(), method, ""));
    const uint64_t len = req.size();
    bytes.append(reinterpret_cast<const char*>(&len), sizeof len).append(req);
  }
  ASSERT_EQ(::write(c.fileno(), bytes.data(), bytes.size()), static_cast<ssize_t>(bytes.size()));
  for (uint8_t kind : {0, 4, 0}) {
    auto [k, payload] = mp::detail::load<std::tuple<uint8_t, std::string>>(c.recv_bytes(10s));
    EXPECT_EQ(k, kind);
    if (k == 0) {
      EXPECT_EQ(mp::detail::load<int>(mp::detail::load<std::string>(payload)), 41);
    }
  }
}

TEST(ManagerServer, ProxyWithAnotherKeyIsRefused) {
  mp::Manager manager;
  auto v = manager.Value<int>(1);
  std::string bytes;
  mp::detail::dump(bytes, v);
  // Rewrite the key inside a copy of the proxy: the server must refuse it.
  mp::detail::ProxyRef ref{manager.address(), "not the key", v.id(), nullptr};
  EXPECT_THROW(mp::detail::proxy_call(ref, "get", ""), mp::AuthenticationError);
  EXPECT_EQ(mp::detail::load<mp::ValueProxy<int>>(bytes).get(), 1);
}

// The server ends with the program that started it, however that program ends: here the
// program (a forked copy of this test) is killed with SIGKILL.
class ManagerLifetime : public StartMethodTest {};

TEST_P(ManagerLifetime, ServerEndsWhenItsProgramIsKilled) {
  int fds[2];
  ASSERT_EQ(::pipe(fds), 0);
  pid_t prog = ::fork();
  if (prog == 0) {
    ::close(fds[0]);
    pid_t server = -1;
    try {
      mp::Manager manager(ctx());
      server = manager.pid();
      (void)!::write(fds[1], &server, sizeof server);
      ::pause();
    } catch (...) {
      (void)!::write(fds[1], &server, sizeof server);
    }
    _exit(0);
  }
  ::close(fds[1]);
  pid_t server = -1;
  ASSERT_EQ(::read(fds[0], &server, sizeof server), static_cast<ssize_t>(sizeof server));
  ::close(fds[0]);
  ASSERT_GT(server, 0);
  ::kill(prog, SIGKILL);
  ::waitpid(prog, nullptr, 0);
  // The server was the killed program's child (or the fork server's): once it ends it is
  // reaped by init, and kill(pid, 0) fails.
  EXPECT_TRUE(eventually([&] { return ::kill(server, 0) != 0; }));
}

MP_ALL_START_METHODS(ManagerLifetime);

}  // namespace
