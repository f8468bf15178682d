// Shared-memory segments: names others cannot guess (64 random bits) and that are never shared
// by accident (a name that exists is skipped, not opened); sizes that do not wrap; and a full
// /dev/shm that gives a ProcessError naming /dev/shm and the size, never SIGBUS. The full
// /dev/shm is a 1 MiB tmpfs mounted in a child's own mount namespace.
#include <fcntl.h>
#include <sched.h>
#include <sys/mman.h>
#include <sys/mount.h>
#include <sys/statvfs.h>
#include <sys/wait.h>
#include <unistd.h>
#include <cerrno>
#include <csignal>
#include <cstdio>
#include <cstring>
#include <regex>
#include <set>
#include <string>
#include <vector>

#include <multiproc/detail/segment.hpp>
#include <multiproc/pool.hpp>
#include <multiproc/queues.hpp>
#include <multiproc/sharedctypes.hpp>

#include "start_methods.hpp"

using namespace std::chrono_literals;

namespace {

bool shm_exists(const std::string& name) {
  return access(("/dev/shm" + name).c_str(), F_OK) == 0;
}

// ---- names -------------------------------------------------------------------------------------

TEST(SegmentNames, CarrySixtyFourRandomBits) {
  const char* env = std::getenv("MULTIPROC_SHM_PREFIX");
  const std::string prefix = env && *env && std::strlen(env) <= 16 ? env : "mp";
  const std::regex format("/" + prefix + std::to_string(getpid()) + "_([0-9a-f]{16})");
  std::set<std::string> randoms;
  uint64_t ones = 0, zeros = 0;  // bits seen set / clear, over all names
  for (int i = 0; i < 64; ++i) {
    const std::string name = mp::detail::new_segment_name();
    std::smatch m;
    ASSERT_TRUE(std::regex_match(name, m, format)) << name;
    EXPECT_LT(name.size(), mp::detail::kMaxSegmentName);
    randoms.insert(m[1]);
    const uint64_t bits = std::stoull(m[1], nullptr, 16);
    ones |= bits;
    zeros |= ~bits;
  }
  EXPECT_EQ(randoms.size(), 64u);
  // Every one of the 64 bits varies (chance of a false failure: 64 * 2^-63).
  EXPECT_EQ(ones, ~uint64_t{0});
  EXPECT_EQ(zeros, ~uint64_t{0});
}

// The names the test hook hands out: first one that someone else holds already, then a fresh one.
std::string g_names[2];
int g_calls = 0;
std::string scripted_names() {
  return g_names[std::min(g_calls++, 1)];
}

TEST(SegmentNames, AnExistingNameIsSkippedNotOpened) {
  g_names[0] = mp::detail::new_segment_name();
  g_names[1] = mp::detail::new_segment_name();
  g_calls = 0;
  const int fd = shm_open(g_names[0].c_str(), O_RDWR | O_CREAT | O_EXCL, 0600);
  ASSERT_GE(fd, 0) << std::strerror(errno);
  ASSERT_EQ(ftruncate(fd, 4096), 0);
  close(fd);
  mp::detail::set_segment_name_source_for_testing(scripted_names);
  std::optional<mp::Lock> lock;
  std::string error;
  try {
    lock.emplace();
  } catch (const mp::ProcessError& e) {
    error = e.what();
  }
  mp::detail::set_segment_name_source_for_testing(nullptr);
  const bool other_left_alone = shm_exists(g_names[0]);
  shm_unlink(g_names[0].c_str());
  EXPECT_EQ(error, "");
  EXPECT_EQ(g_calls, 2);
  ASSERT_TRUE(lock.has_value());
  EXPECT_EQ(lock->name(), g_names[1]);
  EXPECT_TRUE(other_left_alone);
  lock->acquire();
  lock->release();
}

// ---- sizes -------------------------------------------------------------------------------------

TEST(SegmentSizes, AHugeSegmentIsRefused) {
  EXPECT_THROW(mp::detail::Segment::create(mp::detail::SegmentKind::blob, SIZE_MAX, false),
               mp::ProcessError);
  EXPECT_THROW(mp::detail::Segment::create(mp::detail::SegmentKind::blob, SIZE_MAX - 100, false),
               mp::ProcessError);
}

// ---- a full /dev/shm ---------------------------------------------------------------------------

constexpr int kSkipped = 77;

bool write_file(const char* path, const std::string& text) {
  const int fd = open(path, O_WRONLY | O_CLOEXEC);
  if (fd < 0) return false;
  const bool ok = write(fd, text.data(), text.size()) == static_cast<ssize_t>(text.size());
  close(fd);
  return ok;
}

// In the child: a mount namespace of its own (and a user namespace when not root) with a 1 MiB
// tmpfs on /dev/shm. Nothing of it is seen outside the child.
bool make_small_dev_shm(std::string& why) {
  const uid_t uid = geteuid();
  const gid_t gid = getegid();
  // Root (with CAP_SYS_ADMIN) needs only a mount namespace; anyone else a user namespace too.
  bool new_user_ns = uid != 0;
  if (unshare(new_user_ns ? CLONE_NEWUSER | CLONE_NEWNS : CLONE_NEWNS) != 0) {
    if (new_user_ns || unshare(CLONE_NEWUSER | CLONE_NEWNS) != 0) {
      why = std::string("unshare: ") + std::strerror(errno);
      return false;
    }
    new_user_ns = true;
  }
  if (new_user_ns) {
    // Files made in the new tmpfs need our ids mapped in the namespace.
    write_file("/proc/self/setgroups", "deny");
    if (!write_file("/proc/self/uid_map", std::to_string(uid) + " " + std::to_string(uid) + " 1") ||
        !write_file("/proc/self/gid_map", std::to_string(gid) + " " + std::to_string(gid) + " 1")) {
      why = std::string("writing the user namespace's id maps: ") + std::strerror(errno);
      return false;
    }
  }
  if (mount(nullptr, "/", nullptr, MS_REC | MS_PRIVATE, nullptr) != 0) {
    why = std::string("making mounts private: ") + std::strerror(errno);
    return false;
  }
  if (mount("tmpfs", "/dev/shm", "tmpfs", MS_NOSUID | MS_NODEV, "size=1m,mode=1777") != 0) {
    why = std::string("mounting a tmpfs on /dev/shm: ") + std::strerror(errno);
    return false;
  }
  struct statvfs st {};
  if (statvfs("/dev/shm", &st) != 0 || st.f_blocks * st.f_frsize > (1 << 20)) {
    why = "/dev/shm is not the 1 MiB tmpfs just mounted";
    return false;
  }
  return true;
}

// Runs body() in a forked child that has a 1 MiB /dev/shm. body returns "" when all is well,
// otherwise what went wrong.
void run_with_small_dev_shm(std::string (*body)()) {
  int pipe_fds[2];
  ASSERT_EQ(pipe2(pipe_fds, O_CLOEXEC), 0);
  const pid_t pid = fork();
  ASSERT_GE(pid, 0);
  if (pid == 0) {
    close(pipe_fds[0]);
    std::string why;
    int code = 0;
    if (!make_small_dev_shm(why)) {
      code = kSkipped;
    } else {
      try {
        why = body();
      } catch (const std::exception& e) {
        why = std::string("unexpected exception: ") + e.what();
      }
      code = why.empty() ? 0 : 1;
    }
    if (write(pipe_fds[1], why.data(), why.size()) < 0) code = 2;
    _exit(code);
  }
  close(pipe_fds[1]);
  std::string message;
  char buf[512];
  for (ssize_t n; (n = read(pipe_fds[0], buf, sizeof buf)) > 0;) message.append(buf, n);
  close(pipe_fds[0]);
  int status = 0;
  ASSERT_EQ(waitpid(pid, &status, 0), pid);
  ASSERT_FALSE(WIFSIGNALED(status)) << "the child was killed by signal " << WTERMSIG(status) << " ("
                                    << strsignal(WTERMSIG(status)) << ")";
  ASSERT_TRUE(WIFEXITED(status));
  if (WEXITSTATUS(status) == kSkipped)
    GTEST_SKIP() << "cannot make a small /dev/shm here: " << message;
  EXPECT_EQ(WEXITSTATUS(status), 0) << message;
}

// "" when `what` names /dev/shm and the size it could not get.
std::string check_full_message(const std::string& what) {
  if (what.find("/dev/shm") == std::string::npos || what.find("bytes") == std::string::npos)
    return "the error does not name /dev/shm and the size: " + what;
  return "";
}

std::string big_put_into_small_dev_shm() {
  mp::Queue<std::vector<char>> q;
  try {
    q.put(std::vector<char>(4 << 20, 'x'));
    return "a 4 MiB put into a 1 MiB /dev/shm succeeded";
  } catch (const mp::ProcessError& e) {
    if (auto bad = check_full_message(e.what()); !bad.empty()) return bad;
  }
  // The queue is still usable.
  q.put(std::vector<char>(100, 'y'));
  if (q.get(5s) != std::vector<char>(100, 'y')) return "the queue lost its item after the error";
  return "";
}

std::string many_puts_without_consumer() {
  mp::Queue<std::vector<char>> q;
  const std::vector<char> item(1000, 'z');
  int put = 0;
  std::string error;
  for (; put < 2000; ++put) {
    try {
      q.put(item);
    } catch (const mp::ProcessError& e) {
      error = e.what();
      break;
    }
  }
  if (error.empty()) return "2,000 puts of 1000 bytes into a 1 MiB /dev/shm all succeeded";
  if (auto bad = check_full_message(error); !bad.empty()) return bad;
  // Every item put before the error is there, and the queue goes on.
  for (int i = 0; i < put; ++i)
    if (q.get(5s) != item) return "item " + std::to_string(i) + " came back damaged";
  q.put(std::vector<char>(10, 'w'));
  if (q.get(5s) != std::vector<char>(10, 'w')) return "the queue is not usable after the error";
  return "";
}

std::string many_locks() {
  std::vector<mp::Lock> locks;
  try {
    for (int i = 0; i < 1000; ++i) locks.emplace_back();
    return "1,000 Locks fit in a 1 MiB /dev/shm";
  } catch (const mp::ProcessError& e) {
    if (auto bad = check_full_message(e.what()); !bad.empty()) return bad;
  }
  for (auto& l : locks) {
    l.acquire();
    l.release();
  }
  return "";
}

int twice(int x) {
  return 2 * x;
}

std::string pool_map() {
  mp::Pool pool(mp::PoolOptions{.processes = 2, .context = mp::get_context(mp::StartMethod::fork)});
  std::vector<int> in(200000, 1);
  try {
    pool.map(twice, in);
    return "a map of 200,000 items through a 1 MiB /dev/shm succeeded";
  } catch (const mp::ProcessError& e) {
    if (auto bad = check_full_message(e.what()); !bad.empty()) return bad;
  }
  // The failed chunks failed their own items only: the pool goes on (it used to keep the failed
  // submission queued, so the next call on the pool failed with the same error or hung).
  try {
    auto small = pool.map(twice, std::vector<int>(100, 1));
    if (small != std::vector<int>(100, 2)) return "a small map after the failed one went wrong";
    if (pool.apply(twice, 4) != 8) return "an apply after the failed map went wrong";
  } catch (const std::exception& e) {
    return std::string("the pool is unusable after a map failed on a full /dev/shm: ") + e.what();
  }
  return "";  // and the pool's destructor ends its workers
}

TEST(FullDevShm, BigPutFailsWithErrorAndQueueGoesOn) {
  run_with_small_dev_shm(big_put_into_small_dev_shm);
}

TEST(FullDevShm, PutsWithoutConsumerFailWithErrorAndQueueGoesOn) {
  run_with_small_dev_shm(many_puts_without_consumer);
}

TEST(FullDevShm, ManyLocksFailWithError) {
  run_with_small_dev_shm(many_locks);
}

TEST(FullDevShm, PoolMapFailsWithError) {
  run_with_small_dev_shm(pool_map);
}

}  // namespace
