// The manager server's request handling without sockets (src/managers/dispatch.hpp): what a
// hostile or broken client's requests get. Each test is a regression test for a finding of
// fuzz/fuzz_manager_requests.cpp (its reproducer is in fuzz/corpus/manager_requests/), or a
// property that target relies on. No processes: the same in every start method.
#include <gtest/gtest.h>

#include <sys/socket.h>
#include <unistd.h>

#include <cmath>
#include <cstdint>
#include <limits>
#include <memory>
#include <stdexcept>
#include <string>
#include <thread>
#include <tuple>

#include <cereal/types/string.hpp>
#include <cereal/types/tuple.hpp>

#include <multiproc/managers.hpp>

#include "../../src/managers/dispatch.hpp"
#include "../../src/managers/frames.hpp"

namespace {

namespace d = multiproc::detail;

std::string request(uint64_t id, const std::string& method, const std::string& args = {}) {
  std::string out;
  d::dump(out, std::tuple<uint64_t, std::string, std::string>(id, method, args));
  return out;
}

std::string create(const std::string& kind, const std::string& init = {}) {
  return request(0, "create", d::pack(kind, init, std::string()));
}

class Dispatch : public ::testing::Test {
 protected:
  // Waits capped at 0 s: a test with one thread could never be woken.
  std::shared_ptr<d::ServerState> state = d::make_server_state("key", {}, 0.0);
  d::ClientSession client{state};

  std::string call(const std::string& req, const std::string& method = "call") {
    return d::reply_payload(client.dispatch(req), method);
  }
  uint64_t make(const std::string& kind, const std::string& init = {}) {
    return d::load<uint64_t>(call(create(kind, init)));
  }
};

// A timeout is a number of seconds the client made from a duration; a NaN comes only from a broken
// or hostile client. It used to be read as 0 (an acquire that failed at once, an ok reply); it is
// an error reply now, and the request changes nothing (the condition keeps its lock).
TEST_F(Dispatch, NanTimeoutIsAnErrorReplyAndChangesNothing) {
  const double nan = std::numeric_limits<double>::quiet_NaN();
  const uint64_t lock = make("lock");
  EXPECT_TRUE(d::load<bool>(call(request(lock, "acquire", d::pack(true, -1.0)))));
  EXPECT_THROW(call(request(lock, "acquire", d::pack(true, nan))), multiproc::ProcessError);
  const uint64_t cond = make("condition");
  EXPECT_TRUE(d::load<bool>(call(request(cond, "acquire", d::pack(true, -1.0)))));
  EXPECT_THROW(call(request(cond, "wait", d::pack(nan))), multiproc::ProcessError);
  call(request(cond, "release"));  // still held by this client: its release succeeds
  const uint64_t event = make("event");
  EXPECT_THROW(call(request(event, "wait", d::pack(nan))), multiproc::ProcessError);
  const uint64_t barrier = make("barrier", d::pack(int64_t{2}));
  EXPECT_THROW(call(request(barrier, "wait", d::pack(nan))), multiproc::ProcessError);
  EXPECT_EQ(d::load<int64_t>(call(request(barrier, "n_waiting"))), 0);
  EXPECT_FALSE(d::load<bool>(call(request(barrier, "broken"))));
}

// A huge or infinite timeout waits (here: capped at 0 s) rather than overflowing the clock.
TEST_F(Dispatch, HugeTimeoutsAreWaitsNotErrors) {
  const uint64_t lock = make("lock");
  call(request(lock, "acquire", d::pack(true, -1.0)));
  d::ClientSession other(state);
  for (double t : {1e300, std::numeric_limits<double>::infinity(), -1e300, 0.0})
    EXPECT_FALSE(d::load<bool>(
        d::reply_payload(other.dispatch(request(lock, "acquire", d::pack(true, t))), "acquire")));
}

TEST_F(Dispatch, UnknownObjectMethodOrTypeIsAnErrorReply) {
  EXPECT_THROW(call(request(12345, "get")), multiproc::ProcessError);
  EXPECT_THROW(call(request(0, "no-such-method")), multiproc::ProcessError);
  EXPECT_THROW(call(create("no-such-type")), multiproc::ProcessError);
  EXPECT_THROW(
      call(request(0, "create_user",
                   d::pack(std::string("T"), std::string("S"), std::string(), std::string()))),
      multiproc::ProcessError);
  const uint64_t dict = make("dict");
  EXPECT_THROW(call(request(dict, "no-such-method")), multiproc::ProcessError);
  EXPECT_THROW(call(request(dict, "get", "\x01")), multiproc::ProcessError);  // args truncated
  EXPECT_EQ(d::load<uint64_t>(call(request(0, "number_of_objects"))), 1u);
}

// A frame that is no request: the session throws (the server hangs up on that client only).
TEST_F(Dispatch, AFrameThatIsNoRequestIsRefused) {
  EXPECT_THROW(client.dispatch("\x01\x02"), multiproc::ProcessError);
  EXPECT_THROW(client.dispatch(request(0, "ping") + "x"), multiproc::ProcessError);
  d::ClientSession other(state);
  EXPECT_NO_THROW(d::reply_payload(other.dispatch(request(0, "ping")), "ping"));
}

// A session that ends releases the locks it holds, as a connection that drops does.
TEST_F(Dispatch, AnEndedSessionReleasesItsLocks) {
  const uint64_t lock = make("lock");
  {
    d::ClientSession gone(state);
    EXPECT_TRUE(d::load<bool>(
        d::reply_payload(gone.dispatch(request(lock, "acquire", d::pack(true, -1.0))), "a")));
    EXPECT_FALSE(d::load<bool>(call(request(lock, "acquire", d::pack(false, -1.0)))));
  }
  EXPECT_TRUE(d::load<bool>(call(request(lock, "acquire", d::pack(false, -1.0)))));
}

// A semaphore made with the largest value (or released up to it) cannot count past it: the
// release used to overflow an int64_t (undefined behaviour; UBSan's report in the fuzzer), and
// now is an error reply.
TEST_F(Dispatch, SemaphoreReleaseAtTheLargestValueIsAnError) {
  const uint64_t sem = make("semaphore", d::pack(std::numeric_limits<int64_t>::max()));
  EXPECT_THROW(call(request(sem, "release")), multiproc::ProcessError);
  EXPECT_EQ(d::load<int64_t>(call(request(sem, "get_value"))), std::numeric_limits<int64_t>::max());
}

// The client's side: a reply that is no reply, or of a kind it does not know, is a ProcessError;
// each error kind is the exception its proxy documents.
TEST(ReplyPayload, DamagedOrUnknownRepliesAreProcessErrors) {
  auto reply = [](uint8_t kind, const std::string& payload) {
    std::string out;
    d::dump(out, std::tuple<uint8_t, std::string>(kind, payload));
    return out;
  };
  EXPECT_EQ(d::reply_payload(reply(0, "x"), "m"), "x");
  EXPECT_THROW(d::reply_payload(reply(1, "k"), "m"), multiproc::KeyError);
  EXPECT_THROW(d::reply_payload(reply(2, "i"), "m"), std::out_of_range);
  EXPECT_THROW(d::reply_payload(reply(3, "t"), "m"), multiproc::TimeoutError);
  EXPECT_THROW(d::reply_payload(reply(5, "b"), "m"), multiproc::BrokenBarrierError);
  EXPECT_THROW(d::reply_payload(reply(200, "?"), "m"), multiproc::ProcessError);
  EXPECT_THROW(d::reply_payload("", "m"), multiproc::ProcessError);
  EXPECT_THROW(d::reply_payload(reply(0, "x").substr(0, 5), "m"), multiproc::ProcessError);
}

// The server's and the proxies' frame reader (src/managers/frames.hpp): one recv for a small
// frame, and whatever a client sends past a frame kept for the next.
class Frames : public ::testing::Test {
 protected:
  int fds[2] = {-1, -1};
  void SetUp() override { ASSERT_EQ(::socketpair(AF_UNIX, SOCK_STREAM, 0, fds), 0); }
  void TearDown() override {
    for (int fd : fds)
      if (fd >= 0) ::close(fd);
  }
  void send(const std::string& bytes) {
    ASSERT_EQ(::write(fds[1], bytes.data(), bytes.size()), static_cast<ssize_t>(bytes.size()));
  }
  static std::string frame(const std::string& payload) {
    const uint64_t len = payload.size();
    return std::string(reinterpret_cast<const char*>(&len), sizeof len) + payload;
  }
  void hang_up() {
    ::close(fds[1]);
    fds[1] = -1;
  }
};

TEST_F(Frames, FramesSentTogetherAreReadOneByOne) {
  send(frame("one") + frame("") + frame("three"));
  d::FrameReader in(fds[0]);
  EXPECT_EQ(in.next(100), "one");
  EXPECT_TRUE(in.has_more());
  EXPECT_EQ(in.next(100), "");
  EXPECT_EQ(in.next(100), "three");
  EXPECT_FALSE(in.has_more());
  hang_up();
  EXPECT_THROW(in.next(100), multiproc::EOFError);
}

TEST_F(Frames, AFrameLargerThanOneReadArrivesWhole) {
  const std::string big(100'000, 'x');
  const std::string bytes = frame(big) + frame("next");
  d::FrameReader in(fds[0]);
  std::thread writer([&] {
    for (size_t at = 0; at < bytes.size(); at += 777)
      ASSERT_GT(::write(fds[1], bytes.data() + at, std::min<size_t>(777, bytes.size() - at)), 0);
  });
  EXPECT_EQ(in.next(1'000'000), big);
  EXPECT_EQ(in.next(1'000'000), "next");
  writer.join();
}

TEST_F(Frames, BrokenOrOversizedFramesAreProcessErrors) {
  send(frame("abc").substr(0, 9));  // the length and one byte of three
  hang_up();
  d::FrameReader in(fds[0]);
  EXPECT_THROW(in.next(100), multiproc::ProcessError);
  d::FrameReader partial_length(fds[0]);  // nothing left: EOF between frames
  EXPECT_THROW(partial_length.next(100), multiproc::EOFError);
}

TEST_F(Frames, AFrameOverTheLimitIsRefusedBeforeItsBytesAreRead) {
  send(frame(std::string(101, 'x')));
  d::FrameReader in(fds[0]);
  EXPECT_THROW(in.next(100), multiproc::ProcessError);
}

}  // namespace
