// A lock's owner is taken for dead only when the kernel says so: a waiter that cannot open a file
// (at its descriptor limit) must keep waiting for a live owner of a Lock, a Semaphore's units or
// a queue's put lock, and must still take over from an owner that really died.
#include <fcntl.h>
#include <sys/mman.h>
#include <sys/resource.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>
#include <cerrno>
#include <csignal>
#include <thread>
#include <vector>

#include <multiproc/detail/robust_mutex.hpp>
#include <multiproc/queues.hpp>
#include <multiproc/sharedctypes.hpp>

#include "start_methods.hpp"

using namespace std::chrono_literals;

namespace {

// Descriptors opened to use up the limit, and the limit before.
std::vector<int> g_filler_fds;
rlimit g_saved_limit{};

// Leaves this process no free descriptor: every open() fails with EMFILE from here on. Returns
// whether that holds.
bool use_up_fds() {
  getrlimit(RLIMIT_NOFILE, &g_saved_limit);
  rlimit rl = g_saved_limit;
  rl.rlim_cur = std::min<rlim_t>(rl.rlim_cur, 64);
  if (setrlimit(RLIMIT_NOFILE, &rl) != 0) return false;
  g_filler_fds.reserve(64);
  for (int fd; (fd = open("/dev/null", O_RDONLY | O_CLOEXEC)) >= 0;) g_filler_fds.push_back(fd);
  const int fd = open("/proc/self/stat", O_RDONLY);
  return fd < 0 && errno == EMFILE;
}

// Before the task returns: the child's exit (and a sanitizer's runtime) may need descriptors.
void give_back_fds() {
  for (int fd : g_filler_fds) close(fd);
  g_filler_fds.clear();
  setrlimit(RLIMIT_NOFILE, &g_saved_limit);
}

// Result bits a waiter reports.
constexpr int kFdsUsedUp = 1;
constexpr int kTookFromLiveHolder = 2;
constexpr int kGotItAfterRelease = 4;
constexpr int kGotItFromDeadHolder = 8;

void hold_lock(mp::Lock lock, mp::Event held, mp::Event go) {
  lock.acquire();
  held.set();
  go.wait(30s);
  lock.release();
}

void wait_for_lock_at_fd_limit(mp::Lock lock, mp::Value<int> result, mp::Event go) {
  int r = use_up_fds() ? kFdsUsedUp : 0;
  if (lock.acquire(false)) r |= kTookFromLiveHolder;
  // Long enough for several liveness checks (one per ~20 ms of waiting).
  if (lock.acquire(true, 500ms)) r |= kTookFromLiveHolder;
  go.set();  // the holder lets go now
  if (lock.acquire(true, 20s)) {
    r |= kGotItAfterRelease;
    lock.release();
  }
  give_back_fds();
  result.raw() = r;
}

void acquire_lock_and_die(mp::Lock lock) {
  lock.acquire();
  raise(SIGKILL);
}

void take_lock_of_dead_at_fd_limit(mp::Lock lock, mp::Value<int> result) {
  int r = use_up_fds() ? kFdsUsedUp : 0;
  if (lock.acquire(true, 20s) && lock.previous_owner_died()) r |= kGotItFromDeadHolder;
  give_back_fds();
  result.raw() = r;
}

void hold_semaphore(mp::Semaphore sem, mp::Event held, mp::Event go) {
  sem.acquire();
  held.set();
  go.wait(30s);
  sem.release();
}

void wait_for_semaphore_at_fd_limit(mp::Semaphore sem, mp::Value<int> result, mp::Event go) {
  int r = use_up_fds() ? kFdsUsedUp : 0;
  if (sem.acquire(false)) r |= kTookFromLiveHolder;
  if (sem.acquire(true, 500ms)) r |= kTookFromLiveHolder;
  std::this_thread::sleep_for(50ms);  // past the scan interval: a non-blocking try scans again
  if (sem.acquire(false)) r |= kTookFromLiveHolder;
  go.set();
  if (sem.acquire(true, 20s)) r |= kGotItAfterRelease;
  give_back_fds();
  result.raw() = r;
}

// One producer puts big items (each written out of line under the put lock, for milliseconds),
// the other small ones from its descriptor limit.
constexpr int kBigItems = 60;
constexpr size_t kBigInts = 1 << 20;  // 4 MiB
constexpr int kSmallItems = 3000;

void produce_big(mp::Queue<std::vector<int>> q, mp::Event go) {
  go.wait(30s);
  for (int i = 0; i < kBigItems; ++i) {
    std::vector<int> v(kBigInts, 0);
    v[0] = i;
    q.put(v);
  }
}

void produce_small_at_fd_limit(mp::Queue<std::vector<int>> q, mp::Value<int> result, mp::Event go) {
  q.put({kBigItems});  // maps the ring (a descriptor, briefly) while there are some
  int r = use_up_fds() ? kFdsUsedUp : 0;
  go.wait(30s);
  // Now and then: the big producer puts several in a row meanwhile, so it biases the lock to
  // itself, and each small put here revokes that bias, often while a big put is in progress.
  for (int i = 1; i < kSmallItems; ++i) {
    q.put({kBigItems + i});
    std::this_thread::sleep_for(100us);
  }
  give_back_fds();
  result.raw() = r;
}

class OwnerLiveness : public StartMethodTest {};

// Owner words hold current_tid(), a cached id: it must be this thread's own in every thread and
// in a forked child (whose one thread has a new id), even when the cache was filled before the
// fork, in the main thread or in another one.
namespace {
uint32_t kernel_tid() {
  return static_cast<uint32_t>(syscall(SYS_gettid));
}

// 0 when the forked child's current_tid() is its own id, 1 when not, 2 when fork failed.
int fork_and_check_tid() {
  const uint32_t before = mp::detail::current_tid();
  pid_t pid = fork();
  if (pid < 0) return 2;
  if (pid == 0) {
    const bool fresh =
        mp::detail::current_tid() == kernel_tid() && mp::detail::current_tid() != before;
    _exit(fresh ? 0 : 1);
  }
  int status = 0;
  waitpid(pid, &status, 0);
  if (mp::detail::current_tid() != before) return 1;  // the parent's stays
  return WIFEXITED(status) ? WEXITSTATUS(status) : 1;
}
}  // namespace

// A lock whose owner died is free even to a locker whose deadline has already passed (a queue's
// get_nowait() once reported Empty while a killed consumer's lock hid the items: the deadline
// passed during the locker's first spin, before it ever looked at the owner).
TEST(OwnerLivenessDeadline, LockWithAPassedDeadlineTakesOverFromADeadHolder) {
  auto* m = static_cast<mp::detail::RobustMutexData*>(
      mmap(nullptr, sizeof(mp::detail::RobustMutexData), PROT_READ | PROT_WRITE,
           MAP_SHARED | MAP_ANONYMOUS, -1, 0));
  ASSERT_NE(m, MAP_FAILED);
  new (m) mp::detail::RobustMutexData{};
  const pid_t child = fork();
  if (child == 0) {
    mp::detail::robust_lock(*m);
    _exit(0);
  }
  int status = 0;
  ASSERT_EQ(waitpid(child, &status, 0), child);
  ASSERT_NE(m->owner.load(), 0u);
  EXPECT_EQ(mp::detail::robust_lock(*m, mp::detail::Deadline{mp::detail::Deadline::Clock::now()}),
            mp::detail::LockStatus::acquired_owner_died);
  munmap(m, sizeof *m);
}

TEST(CurrentTid, IsThisThreadsIdInThreadsAndForkedChildren) {
  EXPECT_EQ(mp::detail::current_tid(), kernel_tid());
  EXPECT_EQ(mp::detail::current_tid(), kernel_tid());  // cached
  uint32_t in_thread = 0, kernel_in_thread = 1;
  std::thread([&] {
    in_thread = mp::detail::current_tid();
    kernel_in_thread = kernel_tid();
  }).join();
  EXPECT_EQ(in_thread, kernel_in_thread);
  EXPECT_NE(in_thread, mp::detail::current_tid());

  EXPECT_EQ(fork_and_check_tid(), 0);
  int from_thread = -1;
  std::thread([&] { from_thread = fork_and_check_tid(); }).join();
  EXPECT_EQ(from_thread, 0);
}

TEST_P(OwnerLiveness, LockWaiterAtFdLimitDoesNotTakeLockFromLiveHolder) {
  mp::Lock lock;
  mp::Event held, go;
  mp::Value<int> result(0);
  mp::Process holder(ctx(), hold_lock, lock, held, go);
  holder.start();
  ASSERT_TRUE(held.wait(20s));
  mp::Process waiter(ctx(), wait_for_lock_at_fd_limit, lock, result, go);
  waiter.start();
  waiter.join(60s);
  go.set();
  holder.join(60s);
  EXPECT_EQ(waiter.exitcode(), 0);
  EXPECT_EQ(holder.exitcode(), 0);
  ASSERT_TRUE(result.value() & kFdsUsedUp) << "the waiter could not use up its descriptors";
  EXPECT_FALSE(result.value() & kTookFromLiveHolder)
      << "a waiter that could not open /proc took the lock from its live holder";
  EXPECT_TRUE(result.value() & kGotItAfterRelease);
}

TEST_P(OwnerLiveness, LockWaiterAtFdLimitStillTakesOverFromDeadHolder) {
  mp::Lock lock;
  mp::Value<int> result(0);
  mp::Process holder(ctx(), acquire_lock_and_die, lock);
  holder.start();
  holder.join(20s);
  ASSERT_EQ(holder.exitcode(), -SIGKILL);
  mp::Process waiter(ctx(), take_lock_of_dead_at_fd_limit, lock, result);
  waiter.start();
  waiter.join(60s);
  EXPECT_EQ(waiter.exitcode(), 0);
  ASSERT_TRUE(result.value() & kFdsUsedUp);
  EXPECT_TRUE(result.value() & kGotItFromDeadHolder);
}

TEST_P(OwnerLiveness, SemaphoreWaiterAtFdLimitDoesNotTakeUnitsOfLiveHolder) {
  mp::Semaphore sem(1);
  mp::Event held, go;
  mp::Value<int> result(0);
  mp::Process holder(ctx(), hold_semaphore, sem, held, go);
  holder.start();
  ASSERT_TRUE(held.wait(20s));
  mp::Process waiter(ctx(), wait_for_semaphore_at_fd_limit, sem, result, go);
  waiter.start();
  waiter.join(60s);
  go.set();
  holder.join(60s);
  EXPECT_EQ(waiter.exitcode(), 0);
  ASSERT_TRUE(result.value() & kFdsUsedUp);
  EXPECT_FALSE(result.value() & kTookFromLiveHolder)
      << "a waiter that could not open /proc took the units of a live holder";
  EXPECT_TRUE(result.value() & kGotItAfterRelease);
  EXPECT_EQ(sem.recovered_units(), 0u);
}

TEST_P(OwnerLiveness, QueueProducerAtFdLimitLosesNoItem) {
  // Bounded well below the first ring's room, so the small producer never needs a new segment
  // (which would take a descriptor); big items go out of line, not into the ring.
  mp::Queue<std::vector<int>> q(4000);
  mp::Event go;
  mp::Value<int> result(0);
  mp::Process big(ctx(), produce_big, q, go);
  mp::Process small(ctx(), produce_small_at_fd_limit, q, result, go);
  big.start();
  small.start();
  constexpr int kTotal = kBigItems + kSmallItems;
  std::vector<char> seen(kTotal, 0);
  int received = 0, damaged = 0;
  go.set();
  try {
    for (int i = 0; i < kTotal; ++i) {
      const auto v = q.get(10s);
      const bool is_big = v.size() == kBigInts;
      if (v.empty() || v[0] < 0 || v[0] >= kTotal || is_big != (v[0] < kBigItems) ||
          seen[static_cast<size_t>(v[0])]++)
        ++damaged;
      else
        ++received;
    }
  } catch (const mp::Empty&) {
  } catch (const mp::ProcessError& e) {
    ADD_FAILURE() << "get: " << e.what();
  }
  big.join(60s);
  small.join(60s);
  if (big.is_alive()) big.kill();
  if (small.is_alive()) small.kill();
  EXPECT_EQ(big.exitcode(), 0);
  EXPECT_EQ(small.exitcode(), 0);
  ASSERT_TRUE(result.value() & kFdsUsedUp);
  EXPECT_EQ(received, kTotal) << kTotal - received << " items vanished";
  EXPECT_EQ(damaged, 0);
}

MP_ALL_START_METHODS(OwnerLiveness);

}  // namespace
