// close() and shutdown() as Python has them (issue 10): close() says "this handle puts no more"
// and touches no other handle or process; shutdown(immediate) (Python 3.13) stops the queue for
// everyone, with ShutDown. The process bodies run under fork, spawn and forkserver.
#include <optional>
#include <string>
#include <thread>
#include <type_traits>
#include <vector>

#include <multiproc/ordered_queues.hpp>

#include "start_methods.hpp"

using namespace std::chrono_literals;

static_assert(std::is_same_v<mp::QueueClosed, mp::ShutDown>);

namespace {

template <class Q>
void put_then_close(Q q, int from, int n) {
  for (int i = from; i < from + n; ++i) q.put(i);
  q.close();
}

// Two producers, one after the other, put n items each (0 to n - 1, then n to 2n - 1) and close
// their handles when done. Their exit codes.
template <class Q>
std::vector<std::optional<int>> producers_in_turn(const mp::Context& ctx, Q q, int n) {
  std::vector<std::optional<int>> codes;
  for (int from : {0, n}) {
    mp::Process p(ctx, put_then_close<Q>, q, from, n);
    p.start();
    p.join(30s);
    codes.push_back(p.exitcode());
  }
  return codes;
}

void put_one(mp::Queue<int> q, int v) {
  q.put(v);
}

int get_or_shutdown(mp::Queue<int> q) {
  try {
    return q.get(30s);
  } catch (const mp::ShutDown&) {
    return -1;
  }
}

void report_get(mp::Queue<int> q, mp::Queue<int> out) {
  out.put(get_or_shutdown(q));
}

}  // namespace

class QueueClose : public StartMethodTest {};

// Python's classic: every producer closes its end when done; no producer's items are lost.
TEST_P(QueueClose, EachProducerClosingWhenDoneLosesNothing) {
  mp::Queue<int> q;
  EXPECT_EQ(producers_in_turn(ctx(), q, 50), (std::vector<std::optional<int>>{0, 0}));
  std::vector<int> got;
  for (int i = 0; i < 100; ++i) got.push_back(q.get(5s));
  for (int i = 0; i < 100; ++i) EXPECT_EQ(got[static_cast<size_t>(i)], i);
  EXPECT_FALSE(q.is_shutdown());
}

TEST_P(QueueClose, LifoProducersClosingWhenDoneLoseNothing) {
  mp::LifoQueue<int> q;
  EXPECT_EQ(producers_in_turn(ctx(), q, 10), (std::vector<std::optional<int>>{0, 0}));
  EXPECT_EQ(q.qsize(), 20u);
}

// A closed handle refuses puts (and gets) with a clear error; other handles and processes go on.
TEST_P(QueueClose, CloseAffectsOnlyThisHandle) {
  mp::Queue<int> q;
  mp::Queue<int> out;
  q.close();
  EXPECT_TRUE(q.closed());
  try {
    q.put(1);
    ADD_FAILURE() << "put through a closed handle";
  } catch (const mp::ShutDown&) {
    ADD_FAILURE() << "close() is not shutdown()";
  } catch (const mp::ProcessError& e) {
    EXPECT_NE(std::string(e.what()).find("closed"), std::string::npos) << e.what();
  }
  EXPECT_THROW(q.get_nowait(), mp::ProcessError);
  // The handle that travels to another process is the queue's, not this one's closed state.
  mp::Queue<int> other = q;  // a copy in this process: closed too
  EXPECT_TRUE(other.closed());
  mp::Process p(ctx(), put_one, out, 0);  // `out` stays open
  p.start();
  p.join(30s);
  EXPECT_EQ(out.get(5s), 0);
}

TEST_P(QueueClose, ClosedHandleStillTravelsOpenToOtherProcesses) {
  mp::Queue<int> q;
  mp::Queue<int> keep = q;
  mp::Process p(ctx(), put_one, q, 7);
  q.close();  // before start: the child's handle is its own
  p.start();
  p.join(30s);
  EXPECT_EQ(p.exitcode(), std::optional<int>(0));
  mp::Queue<int> out;
  mp::Process g(ctx(), report_get, q, out);
  g.start();
  EXPECT_EQ(out.get(30s), 7);
  g.join(30s);
}

// shutdown() is the global stop: puts from anywhere throw ShutDown; gets drain, then throw
// ShutDown; a getter blocked on the empty queue in another process wakes.
TEST_P(QueueClose, ShutdownStopsEveryone) {
  mp::Queue<int> q;
  mp::Queue<int> out;
  mp::Process blocked(ctx(), report_get, q, out);
  blocked.start();
  std::this_thread::sleep_for(200ms);
  q.shutdown();
  EXPECT_EQ(out.get(30s), -1);
  blocked.join(30s);
  EXPECT_TRUE(q.is_shutdown());
  EXPECT_THROW(q.put(1), mp::ShutDown);
  mp::Process p(ctx(), put_one, q, 1);
  p.start();
  p.join(30s);
  EXPECT_NE(p.exitcode(), std::optional<int>(0));  // its put threw ShutDown
}

TEST_P(QueueClose, ShutdownDrainsUnlessImmediate) {
  {
    mp::Queue<int> q;
    q.put(1);
    q.put(2);
    q.shutdown();
    EXPECT_EQ(q.get(), 1);
    EXPECT_EQ(q.get(), 2);
    EXPECT_THROW(q.get(), mp::ShutDown);
  }
  {
    mp::JoinableQueue<int> q;
    q.put(1);
    q.put(2);
    q.put(3);
    EXPECT_EQ(q.get(), 1);
    q.shutdown(true);
    EXPECT_THROW(q.get_nowait(), mp::ShutDown);
    EXPECT_EQ(q.qsize(), 0u);
    EXPECT_FALSE(q.join(10ms));  // the item taken is not done yet
    q.task_done();
    EXPECT_TRUE(q.join(5s));  // the discarded ones count as done
  }
  {
    mp::LifoQueue<int> q;
    q.put(1);
    q.put(2);
    q.shutdown(true);
    EXPECT_THROW(q.get_nowait(), mp::ShutDown);
    EXPECT_THROW(q.put(3), mp::ShutDown);
    EXPECT_EQ(q.qsize(), 0u);
  }
}

TEST_P(QueueClose, ImmediateShutdownReleasesHandlesInDiscardedItems) {
  const int before = count_shm_files();
  {
    mp::Queue<mp::Queue<int>> q;
    mp::LifoQueue<mp::Queue<int>> l;
    for (int i = 0; i < 3; ++i) {
      q.put(mp::Queue<int>());
      l.put(mp::Queue<int>());
    }
    q.shutdown(true);
    l.shutdown(true);
    mp::Queue<mp::Queue<int>> keep_q = q;  // the queues live on, their items are gone
    mp::LifoQueue<mp::Queue<int>> keep_l = l;
    EXPECT_EQ(count_shm_files(), before + 4);  // each queue's own two segments
  }
  EXPECT_TRUE(eventually([&] { return count_shm_files() == before; }, 5s));
}

MP_ALL_START_METHODS(QueueClose);
