// Connections (CPython's _TestConnection, _TestListener, _TestListenerClient, _TestPoll, the
// auth-failure tests of OtherTest, TestWait), each process test under fork, spawn and forkserver.
#include <gtest/gtest.h>

#include <signal.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <unistd.h>
#include <chrono>
#include <cstring>
#include <map>
#include <string>
#include <thread>
#include <vector>

#include <multiproc/connection.hpp>

#include "start_methods.hpp"

using namespace std::chrono_literals;

namespace {

// --- child tasks --------------------------------------------------------------------------------

// Echoes every message back until an empty one or EOF (CPython's _echo). Under fork the child
// also inherits the parent's end, so the parent's close() alone is no EOF: the empty message is
// what ends it, as in CPython.
void echo(mp::Connection conn) {
  for (;;) {
    std::string m;
    try {
      m = conn.recv_bytes();
    } catch (const mp::EOFError&) {
      return;
    }
    if (m.empty()) return;
    conn.send_bytes(m);
  }
}

void send_authkey(mp::Connection conn) {
  conn.send(mp::current_process().authkey);
}

void client_sends(std::string address, std::string key, std::string text) {
  mp::Connection c = mp::Client(address, key);
  c.send(text);
  c.recv<int>();  // wait for the listener's answer before closing
}

// CPython's inheritance case: a fork child uses the parent's connection from its memory.
mp::Connection g_inherited;
void send_on_inherited() {
  g_inherited.send(std::string("inherited"));
}

int send_square(mp::Connection c, int x) {
  c.send(x * x);
  return x;
}

void sleep_then_send(mp::Connection c, int ms, int value) {
  std::this_thread::sleep_for(std::chrono::milliseconds(ms));
  c.send(value);
}

std::string private_socket_path() {
  static int n = 0;
  char templ[] = "/tmp/multiproc-test-conn-XXXXXX";
  std::string dir = ::mkdtemp(templ);
  return dir + "/s" + std::to_string(n++);
}

void remove_socket(const std::string& path) {
  ::unlink(path.c_str());
  ::rmdir(path.substr(0, path.rfind('/')).c_str());
}

// --- in one process -----------------------------------------------------------------------------

TEST(Connection, SendRecvValuesAndBytes) {
  auto [a, b] = mp::Pipe();
  a.send(std::vector<int>{1, 2, 3});
  EXPECT_EQ(b.recv<std::vector<int>>(), (std::vector<int>{1, 2, 3}));
  std::map<std::string, double> m{{"x", 1.5}};
  b.send(m);
  EXPECT_EQ(a.recv<decltype(m)>(), m);
  a.send_bytes("abc");
  EXPECT_EQ(b.recv_bytes(), "abc");
  a.send_bytes("");
  EXPECT_EQ(b.recv_bytes(), "");
  std::string big(3 << 20, 'z');
  std::thread t([&] { a.send_bytes(big); });  // larger than the socket buffer
  EXPECT_EQ(b.recv_bytes(), big);
  t.join();
}

TEST(Connection, RecvOfAnotherTypeIsAClearError) {
  auto [a, b] = mp::Pipe();
  a.send(42);
  try {
    b.recv<std::string>();
    FAIL() << "no error";
  } catch (const mp::ProcessError& e) {
    EXPECT_NE(std::string(e.what()).find("another type"), std::string::npos) << e.what();
  }
  a.send_bytes("raw");
  EXPECT_THROW(b.recv<int>(), mp::ProcessError);
}

TEST(Connection, PollAndTimeouts) {
  auto [a, b] = mp::Pipe();
  EXPECT_FALSE(b.poll());
  EXPECT_FALSE(b.poll(50ms));
  auto t0 = std::chrono::steady_clock::now();
  EXPECT_THROW(b.recv_bytes(100ms), mp::TimeoutError);
  EXPECT_GE(std::chrono::steady_clock::now() - t0, 90ms);
  a.send_bytes("x");
  EXPECT_TRUE(b.poll());
  EXPECT_TRUE(b.poll(std::nullopt));
  EXPECT_EQ(b.recv_bytes(), "x");
  EXPECT_FALSE(b.poll());
  // Several messages sent at once are read one at a time (_TestPoll.test_boundaries).
  a.send_bytes("first");
  a.send_bytes("second");
  EXPECT_EQ(b.recv_bytes(), "first");
  EXPECT_TRUE(b.poll());
  EXPECT_EQ(b.recv_bytes(), "second");
}

TEST(Connection, EofAfterPeerCloses) {
  auto [a, b] = mp::Pipe();
  a.send(1);
  a.close();
  EXPECT_TRUE(a.closed());
  EXPECT_TRUE(b.poll());
  EXPECT_EQ(b.recv<int>(), 1);
  EXPECT_TRUE(b.poll());  // EOF counts as ready
  EXPECT_THROW(b.recv_bytes(), mp::EOFError);
  EXPECT_THROW(b.send(2), mp::ProcessError);  // no SIGPIPE
  EXPECT_THROW(a.send(1), mp::ProcessError);  // closed handle
  EXPECT_THROW(a.fileno(), mp::ProcessError);
}

TEST(Connection, OneWayPipe) {
  auto [r, w] = mp::Pipe(false);
  EXPECT_TRUE(r.readable());
  EXPECT_FALSE(r.writable());
  EXPECT_TRUE(w.writable());
  EXPECT_FALSE(w.readable());
  w.send(std::string("hello"));
  EXPECT_EQ(r.recv<std::string>(), "hello");
  EXPECT_THROW(r.send(1), mp::ProcessError);
  EXPECT_THROW(w.recv_bytes(), mp::ProcessError);
}

TEST(Connection, CopiesShareOneSocket) {
  auto [a, b] = mp::Pipe();
  mp::Connection a2 = a;
  a2.send(7);
  EXPECT_EQ(b.recv<int>(), 7);
  a2.close();
  EXPECT_TRUE(a.closed());
}

TEST(Connection, OversizedOrTruncatedFrameClosesTheConnection) {
  {
    auto [a, b] = mp::Pipe();
    b.max_message_size(1024);
    a.send_bytes(std::string(2048, 'x'));
    try {
      b.recv_bytes();
      FAIL() << "no error";
    } catch (const mp::ProcessError& e) {
      EXPECT_NE(std::string(e.what()).find("limit"), std::string::npos) << e.what();
    }
    EXPECT_TRUE(b.closed());
  }
  {
    // A header that announces 2^62 bytes: refused before anything is allocated.
    auto [a, b] = mp::Pipe();
    uint64_t huge = uint64_t{1} << 62;
    ASSERT_EQ(::write(a.fileno(), &huge, sizeof huge), 8);
    EXPECT_THROW(b.recv_bytes(), mp::ProcessError);
    EXPECT_TRUE(b.closed());
  }
  {
    // A stream that ends inside a frame.
    auto [a, b] = mp::Pipe();
    uint64_t len = 100;
    ASSERT_EQ(::write(a.fileno(), &len, sizeof len), 8);
    ASSERT_EQ(::write(a.fileno(), "abc", 3), 3);
    a.close();
    try {
      b.recv_bytes();
      FAIL() << "no error";
    } catch (const mp::EOFError&) {
      FAIL() << "a truncated frame is not a clean EOF";
    } catch (const mp::ProcessError& e) {
      EXPECT_NE(std::string(e.what()).find("inside a frame"), std::string::npos) << e.what();
    }
  }
}

TEST(Connection, ProcessAuthkeyIs32RandomBytes) {
  EXPECT_EQ(mp::process_authkey().size(), 32u);
  EXPECT_EQ(&mp::process_authkey(), &mp::process_authkey());
}

TEST(Connection, TravelsThroughAnotherConnection) {
  auto [a, b] = mp::Pipe();
  auto [x, y] = mp::Pipe();
  a.send(x);
  mp::Connection x2 = b.recv<mp::Connection>();
  x2.send(std::string("via"));
  EXPECT_EQ(y.recv<std::string>(), "via");
}

// --- Listener and Client ------------------------------------------------------------------------

TEST(Listener, DefaultAddressIsAPrivateUnixSocket) {
  std::string dir;
  {
    mp::Listener l;
    ASSERT_EQ(l.address().rfind("unix:/", 0), 0u) << l.address();
    std::string path = l.address().substr(5);
    dir = path.substr(0, path.rfind('/'));
    struct stat st {};
    ASSERT_EQ(::stat(dir.c_str(), &st), 0);
    EXPECT_EQ(st.st_mode & 0777, 0700u);
    ASSERT_EQ(::stat(path.c_str(), &st), 0);
    EXPECT_EQ(st.st_mode & 0077, 0u);
  }
  struct stat st {};
  EXPECT_NE(::stat(dir.c_str(), &st), 0) << "the directory is removed with the listener";
}

TEST(Listener, RefusesAbstractAndMalformedAddresses) {
  EXPECT_THROW(mp::Listener("unix:@abstract"), mp::ProcessError);
  EXPECT_THROW(mp::Listener(std::string("unix:\0x", 7)), mp::ProcessError);
  EXPECT_THROW(mp::Listener("unix:relative"), mp::ProcessError);
  EXPECT_THROW(mp::Listener("nonsense"), mp::ProcessError);
  EXPECT_THROW(mp::Listener("127.0.0.1:99999"), mp::ProcessError);
}

TEST(Listener, MultipleBindFails) {
  std::string path = private_socket_path();
  {
    mp::Listener l("unix:" + path);
    EXPECT_THROW(mp::Listener("unix:" + path), mp::ProcessError);
  }
  remove_socket(path);
}

TEST(Listener, ClientToNothingFailsAtOnce) {
  EXPECT_THROW(mp::Client("unix:/nonexistent-dir-multiproc/sock"), mp::ProcessError);
  mp::Listener l("127.0.0.1:0");
  std::string addr = l.address();
  l.close();
  EXPECT_THROW(mp::Client(addr), mp::ProcessError);
}

TEST(Listener, AcceptTimesOut) {
  mp::Listener l;
  EXPECT_THROW(l.accept(50ms), mp::TimeoutError);
}

TEST(Listener, WrongKeyIsAnAuthenticationErrorOnBothSides) {
  for (std::string address : {std::string(""), std::string("127.0.0.1:0")}) {
    mp::Listener l(address, std::string("right key"));
    std::thread client([&] {
      EXPECT_THROW(mp::Client(l.address(), std::string("wrong key")), mp::AuthenticationError);
    });
    EXPECT_THROW(l.accept(), mp::AuthenticationError);
    client.join();
  }
}

TEST(Listener, KeyOnOneSideOnlyFails) {
  mp::Listener l("", std::string("key"));
  std::thread client([&] {
    try {
      mp::Connection c = mp::Client(l.address());
      c.send_bytes("hello");  // a client that skips the handshake
      c.recv_bytes(5s);
    } catch (const mp::ProcessError&) {
    }
  });
  EXPECT_THROW(l.accept(), mp::AuthenticationError);
  client.join();
}

TEST(Listener, HostileClientsDoNotStopTheListener) {
  mp::Listener l("", std::string("key"));
  std::string path = l.address().substr(5);
  auto raw = [&](const std::string& bytes) {
    int fd = ::socket(AF_UNIX, SOCK_STREAM, 0);
    sockaddr_un sa{};
    sa.sun_family = AF_UNIX;
    std::strcpy(sa.sun_path, path.c_str());
    EXPECT_EQ(::connect(fd, reinterpret_cast<sockaddr*>(&sa), sizeof sa), 0);
    EXPECT_EQ(::write(fd, bytes.data(), bytes.size()), static_cast<ssize_t>(bytes.size()));
    return fd;
  };
  uint64_t huge = uint64_t{1} << 40;
  std::vector<std::string> attacks = {
      std::string("garbage before the handshake"),
      std::string(reinterpret_cast<const char*>(&huge), 8),  // an oversized frame
      std::string("\x05\x00\x00\x00\x00\x00\x00\x00"
                  "ab",
                  10),  // truncated, then EOF
  };
  for (auto& a : attacks) {
    int fd = raw(a);
    ::shutdown(fd, SHUT_WR);
    EXPECT_THROW(l.accept(), mp::AuthenticationError);
    ::close(fd);
  }
  std::thread good([&] { mp::Client(l.address(), std::string("key")).send(5); });
  EXPECT_EQ(l.accept().recv<int>(), 5);
  good.join();
}

class ListenerClient : public StartMethodTest {};

TEST_P(ListenerClient, ChildConnectsOverUnixAndTcp) {
  for (std::string address : {std::string(""), std::string("127.0.0.1:0")}) {
    std::string key = "secret";
    mp::Listener l(address, key);
    mp::Process p(ctx(), client_sends, l.address(), key, std::string("hello from a child"));
    p.start();
    mp::Connection c = l.accept(20s);
    EXPECT_EQ(c.recv<std::string>(5s), "hello from a child");
    c.send(0);
    ASSERT_TRUE(p.join(20s));
    EXPECT_EQ(p.exitcode(), 0);
  }
}

TEST_P(ListenerClient, ChildWithTheWrongKeyGetsAuthenticationError) {
  mp::Listener l("", std::string("secret"));
  mp::Process p(ctx(), client_sends, l.address(), std::string("not the key"), std::string("x"));
  p.start();
  EXPECT_THROW(l.accept(20s), mp::AuthenticationError);
  ASSERT_TRUE(p.join(20s));
  EXPECT_EQ(p.exitcode(), 1);  // the child's Client threw AuthenticationError
}

MP_ALL_START_METHODS(ListenerClient);

// --- connections between processes -------------------------------------------------------------

class ConnectionProcess : public StartMethodTest {};

TEST_P(ConnectionProcess, EchoChildGetsItsEndAsAnArgument) {
  auto [parent, child] = mp::Pipe();
  mp::Process p(ctx(), echo, child);
  p.start();
  child.close();  // the child has its own copy
  parent.send(std::vector<std::string>{"a", "b"});
  EXPECT_EQ(parent.recv<std::vector<std::string>>(20s), (std::vector<std::string>{"a", "b"}));
  std::string big(1 << 20, 'q');
  parent.send_bytes(big);
  EXPECT_EQ(parent.recv_bytes(20s), big);
  parent.send_bytes("");
  ASSERT_TRUE(p.join(20s));
  EXPECT_EQ(p.exitcode(), 0);
}

TEST_P(ConnectionProcess, ChildInheritsTheProcessAuthkey) {
  auto [r, w] = mp::Pipe(false);
  mp::Process p(ctx(), send_authkey, w);
  p.start();
  EXPECT_EQ(r.recv<std::string>(20s), mp::process_authkey());
  ASSERT_TRUE(p.join(20s));
}

TEST_P(ConnectionProcess, WaitOverConnectionsAndSentinels) {
  // TestWait.test_wait: each child sends after a different delay; wait() reports them as ready.
  std::vector<mp::Connection> readers;
  std::vector<mp::Process> procs;
  for (int i = 0; i < 3; ++i) {
    auto [r, w] = mp::Pipe(false);
    procs.emplace_back(ctx(), sleep_then_send, w, 100 * i, i);
    procs.back().start();
    readers.push_back(r);
  }
  std::vector<int> got;
  std::vector<mp::Connection> left = readers;
  while (!left.empty()) {
    auto ready = mp::wait(left, 20s);
    ASSERT_FALSE(ready.empty());
    for (auto& c : ready) {
      got.push_back(c.recv<int>());
      std::erase_if(left, [&](const mp::Connection& x) { return x.fileno() == c.fileno(); });
    }
  }
  std::sort(got.begin(), got.end());
  EXPECT_EQ(got, (std::vector<int>{0, 1, 2}));
  // Sentinels, mixed with a connection that stays silent.
  auto [silent, other] = mp::Pipe();
  std::vector<mp::Waitable> objs{silent};
  for (auto& p : procs) objs.push_back(p.sentinel());
  std::set<int> ended;
  while (ended.size() < procs.size()) {
    auto ready = mp::wait(objs, 20s);
    ASSERT_FALSE(ready.empty());
    for (auto& w : ready) {
      ASSERT_TRUE(std::holds_alternative<int>(w)) << "the silent connection is not ready";
      ended.insert(std::get<int>(w));
    }
    std::erase_if(objs, [&](const mp::Waitable& w) {
      return std::holds_alternative<int>(w) && ended.count(std::get<int>(w));
    });
  }
  for (auto& p : procs) EXPECT_TRUE(p.join(20s));
}

TEST_P(ConnectionProcess, AsPoolTaskArguments) {
  auto [r, w] = mp::Pipe(false);
  mp::Pool pool(mp::PoolOptions{.processes = 2, .context = ctx()});
  std::vector<std::tuple<mp::Connection, int>> args;
  for (int i = 0; i < 4; ++i) args.emplace_back(w, i);
  EXPECT_EQ(pool.starmap(send_square, args), (std::vector<int>{0, 1, 2, 3}));
  std::vector<int> got;
  for (int i = 0; i < 4; ++i) got.push_back(r.recv<int>(20s));
  std::sort(got.begin(), got.end());
  EXPECT_EQ(got, (std::vector<int>{0, 1, 4, 9}));
}

TEST_P(ConnectionProcess, ThroughAQueue) {
  mp::Queue<mp::Connection> q;
  auto [r, w] = mp::Pipe(false);
  q.put(w);
  mp::Process p(
      ctx(), [](mp::Queue<mp::Connection> q) { q.get().send(std::string("queued")); }, q);
  p.start();
  EXPECT_EQ(r.recv<std::string>(20s), "queued");
  ASSERT_TRUE(p.join(20s));
}

MP_ALL_START_METHODS(ConnectionProcess);

TEST(Connection, UsableByForkInheritance) {
  auto [r, w] = mp::Pipe(false);
  g_inherited = w;
  mp::Process p(mp::get_context(mp::StartMethod::fork), send_on_inherited);
  p.start();
  EXPECT_EQ(r.recv<std::string>(20s), "inherited");
  ASSERT_TRUE(p.join(20s));
  EXPECT_EQ(p.exitcode(), 0);
  g_inherited = mp::Connection();
}

TEST(Connection, ReceivedOnceOnly) {
  auto [a, b] = mp::Pipe();
  std::string bytes;
  mp::detail::dump(bytes, a);
  mp::Connection first = mp::detail::load<mp::Connection>(bytes);
  EXPECT_FALSE(first.closed());
  EXPECT_THROW(mp::detail::load<mp::Connection>(bytes), mp::ProcessError);
}

TEST(Wait, TimeoutReturnsEmpty) {
  auto [a, b] = mp::Pipe();
  auto t0 = std::chrono::steady_clock::now();
  EXPECT_TRUE(mp::wait(std::vector<mp::Connection>{a, b}, 200ms).empty());
  auto dt = std::chrono::steady_clock::now() - t0;
  EXPECT_GE(dt, 190ms);
  EXPECT_LT(dt, 10s);
  EXPECT_TRUE(mp::wait(std::vector<mp::Connection>{a, b}, 0s).empty());
  a.send(1);
  auto ready = mp::wait(std::vector<mp::Connection>{a, b}, 0s);
  ASSERT_EQ(ready.size(), 1u);
  EXPECT_EQ(ready[0].fileno(), b.fileno());
}

TEST(Wait, IntegerDescriptors) {
  int fds[2];
  ASSERT_EQ(::pipe(fds), 0);
  EXPECT_TRUE(mp::wait(std::vector<int>{fds[0]}, 10ms).empty());
  ASSERT_EQ(::write(fds[1], "x", 1), 1);
  EXPECT_EQ(mp::wait(std::vector<int>{fds[0]}, 1s), (std::vector<int>{fds[0]}));
  ::close(fds[0]);
  ::close(fds[1]);
}

TEST(Connection, HandshakeFunctionsOverAPipe) {
  auto [a, b] = mp::Pipe();
  std::thread t([&, b = b]() mutable {
    mp::answer_challenge(b, "k");
    mp::deliver_challenge(b, "k");
  });
  mp::deliver_challenge(a, "k");
  mp::answer_challenge(a, "k");
  t.join();
}

}  // namespace
