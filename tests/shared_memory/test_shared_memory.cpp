// SharedMemory, ShareableList and SharedMemoryManager: CPython's _TestSharedMemory semantics
// (basics, across processes under fork, spawn and forkserver, ShareableList, the manager, and the
// resource tracker removing what a SIGKILLed creator left).
#include <fcntl.h>
#include <signal.h>
#include <spawn.h>
#include <sys/mman.h>
#include <sys/wait.h>
#include <unistd.h>
#include <atomic>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <numeric>
#include <stdexcept>
#include <string>
#include <vector>

#include <multiproc/detail/segment.hpp>
#include <multiproc/shared_memory.hpp>

#include "start_methods.hpp"

extern char** environ;

namespace {

bool shm_exists(const std::string& name) {
  return access(("/dev/shm/" + name).c_str(), F_OK) == 0;
}

// A name of this test run; unlinked at scope end whatever happens (a failed test leaves nothing).
struct TestName {
  std::string name;
  TestName() {
    static std::atomic<int> counter{0};
    const char* prefix = std::getenv("MULTIPROC_SHM_PREFIX");
    name = std::string(prefix && *prefix ? prefix : "mp") + "test_shm_" + std::to_string(getpid()) +
           "_" + std::to_string(counter++);
  }
  ~TestName() { shm_unlink(("/" + name).c_str()); }
};

void fill_block(mp::SharedMemory shm, int value) {
  std::memset(shm.buf().data(), value, shm.size());
}

void fill_block_by_name(std::string name, int value) {
  mp::SharedMemory shm(name);
  std::memset(shm.buf().data(), value, shm.size());
}

void fill_from_queue(mp::Queue<mp::SharedMemory> q, int value) {
  mp::SharedMemory shm = q.get(std::chrono::seconds(30));
  std::memset(shm.buf().data(), value, shm.size());
}

int64_t sum_slice(mp::SharedMemory shm, size_t begin, size_t end) {
  auto* v = reinterpret_cast<const int64_t*>(shm.buf().data());
  return std::accumulate(v + begin, v + end, int64_t{0});
}

// Python's _TestSharedMemory._test_shareablelist_... child: edits the list it was given.
void edit_list(mp::ShareableList sl) {
  sl.set(0, int64_t{sl.get<int64_t>(0) + 1});
  sl.set(1, "howdy");
  sl.set(-1, nullptr);
}

}  // namespace

// ---- SharedMemory ----------------------------------------------------------------------------

TEST(SharedMemory, Basics) {
  TestName n;
  mp::SharedMemory shm(n.name, true, 512);
  EXPECT_EQ(shm.name(), n.name);
  EXPECT_EQ(shm.size(), 512u);
  EXPECT_EQ(shm.buf().size(), 512u);
  EXPECT_TRUE(shm_exists(n.name));
  for (std::byte b : shm.buf()) ASSERT_EQ(b, std::byte{0});  // a new block is zeroed
  shm.buf()[0] = std::byte{42};
  shm.buf()[511] = std::byte{7};

  // Attach by name (size ignored) and by "/name": the same bytes, both ways.
  mp::SharedMemory also(n.name);
  mp::SharedMemory slash("/" + n.name, false, 4);
  EXPECT_EQ(also.size(), 512u);
  EXPECT_EQ(slash.name(), n.name);
  EXPECT_EQ(also.buf()[0], std::byte{42});
  EXPECT_EQ(slash.buf()[511], std::byte{7});
  also.buf()[1] = std::byte{9};
  EXPECT_EQ(shm.buf()[1], std::byte{9});

  // Creating an existing name fails and leaves the block alone.
  EXPECT_THROW(mp::SharedMemory(n.name, true, 512), mp::FileExistsError);
  EXPECT_EQ(shm.buf()[0], std::byte{42});

  // close() drops this handle's view only; idempotent.
  also.close();
  also.close();
  EXPECT_FALSE(also.is_open());
  EXPECT_THROW(also.buf(), mp::ProcessError);
  EXPECT_EQ(shm.buf()[1], std::byte{9});

  // unlink removes the name; mapped views stay valid; a second unlink and an attach fail.
  shm.unlink();
  EXPECT_FALSE(shm_exists(n.name));
  EXPECT_EQ(slash.buf()[0], std::byte{42});
  EXPECT_THROW(shm.unlink(), mp::FileNotFoundError);
  EXPECT_THROW(mp::SharedMemory{n.name}, mp::FileNotFoundError);
}

TEST(SharedMemory, ClearErrors) {
  TestName n;
  EXPECT_THROW(mp::SharedMemory(n.name, true, 0), std::invalid_argument);
  EXPECT_THROW(mp::SharedMemory(n.name, true, -1), std::invalid_argument);
  EXPECT_THROW(mp::SharedMemory(n.name, false, -5), std::invalid_argument);
  EXPECT_THROW(mp::SharedMemory::create(0), std::invalid_argument);
  EXPECT_FALSE(shm_exists(n.name));
  EXPECT_THROW(mp::SharedMemory("", false), std::invalid_argument);
  EXPECT_THROW(mp::SharedMemory("a/b", true, 8), std::invalid_argument);
  EXPECT_THROW(mp::SharedMemory(std::string(300, 'x'), true, 8), std::invalid_argument);
  try {
    mp::SharedMemory missing(n.name);
    FAIL() << "attached to a missing block";
  } catch (const mp::FileNotFoundError& e) {
    EXPECT_NE(std::string(e.what()).find(n.name), std::string::npos) << e.what();
  }
  // FileExistsError and FileNotFoundError are ProcessErrors: a broad catch sees them.
  EXPECT_THROW(mp::SharedMemory{n.name}, mp::ProcessError);
  mp::SharedMemory empty;
  EXPECT_THROW(empty.buf(), mp::ProcessError);
  EXPECT_THROW(empty.unlink(), mp::ProcessError);
}

TEST(SharedMemory, GeneratedNames) {
  mp::SharedMemory a = mp::SharedMemory::create(100);
  mp::SharedMemory b("", true, 100);
  EXPECT_FALSE(a.name().empty());
  EXPECT_NE(a.name(), b.name());
  EXPECT_EQ(a.name().find('/'), std::string::npos);
  EXPECT_TRUE(shm_exists(a.name()));
  EXPECT_EQ(a.size(), 100u);
  a.unlink();
  b.unlink();
  EXPECT_FALSE(shm_exists(a.name()));
  EXPECT_FALSE(shm_exists(b.name()));
}

// Python's test_shared_memory_recreate: a generated name that exists already (someone else's) is
// skipped, never opened.
namespace {
std::string g_taken_name;
int g_names_drawn = 0;
std::string taken_then_fresh() {
  return ++g_names_drawn == 1 ? "/" + g_taken_name : "/" + g_taken_name + "_fresh";
}
}  // namespace

TEST(SharedMemory, GeneratedNameThatExistsIsSkipped) {
  TestName taken;
  mp::SharedMemory other(taken.name, true, 16);
  other.buf()[0] = std::byte{77};
  g_taken_name = taken.name;
  g_names_drawn = 0;
  mp::detail::set_segment_name_source_for_testing(taken_then_fresh);
  std::unique_ptr<mp::SharedMemory> fresh;
  try {
    fresh = std::make_unique<mp::SharedMemory>(mp::SharedMemory::create(4096));
  } catch (...) {
    mp::detail::set_segment_name_source_for_testing(nullptr);
    throw;
  }
  mp::detail::set_segment_name_source_for_testing(nullptr);
  EXPECT_EQ(g_names_drawn, 2);
  EXPECT_EQ(fresh->name(), taken.name + "_fresh");
  EXPECT_EQ(fresh->size(), 4096u);
  EXPECT_EQ(other.buf()[0], std::byte{77});
  EXPECT_EQ(mp::SharedMemory(taken.name).size(), 16u);  // untouched
  fresh->unlink();
}

// Python's test_shared_memory_pickle_unpickle: a handle crosses as its name; once the block is
// unlinked, decoding it fails with FileNotFoundError.
TEST(SharedMemory, EncodedHandleAttachesByName) {
  mp::SharedMemory shm = mp::SharedMemory::create(64);
  shm.buf()[5] = std::byte{3};
  std::string bytes;
  mp::detail::dump(bytes, shm);
  mp::SharedMemory copy = mp::detail::load<mp::SharedMemory>(bytes);
  EXPECT_EQ(copy.name(), shm.name());
  EXPECT_EQ(copy.size(), 64u);
  EXPECT_NE(copy.buf().data(), shm.buf().data());  // a mapping of its own
  EXPECT_EQ(copy.buf()[5], std::byte{3});
  shm.unlink();
  EXPECT_THROW(mp::detail::load<mp::SharedMemory>(bytes), mp::FileNotFoundError);
  mp::SharedMemory empty;
  std::string none;
  EXPECT_THROW(mp::detail::dump(none, empty), mp::ProcessError);
}

TEST(SharedMemory, CopiesShareTheMappingAndCloseIndependently) {
  mp::SharedMemory a = mp::SharedMemory::create(64);
  mp::SharedMemory b = a;
  EXPECT_EQ(a.buf().data(), b.buf().data());
  a.close();
  b.buf()[3] = std::byte{5};  // b's view outlives a's close
  mp::SharedMemory c(b.name());
  EXPECT_EQ(c.buf()[3], std::byte{5});
  b.unlink();
}

TEST(SharedMemory, IsTransferable) {
  static_assert(mp::is_transferable_v<mp::SharedMemory>);
  static_assert(mp::is_transferable_v<mp::ShareableList>);
}

class SharedMemoryAcrossProcesses : public StartMethodTest {};

// Python's test_shared_memory_across_processes: the child attaches by name, and receives the
// handle itself, and writes what the parent then reads.
TEST_P(SharedMemoryAcrossProcesses, ByNameAndByHandle) {
  TestName n;
  mp::SharedMemory shm(n.name, true, 4096);
  {
    mp::Process p(ctx(), fill_block_by_name, n.name, 0x11);
    p.start();
    p.join();
    ASSERT_EQ(p.exitcode(), 0);
  }
  for (std::byte b : shm.buf()) ASSERT_EQ(b, std::byte{0x11});
  {
    mp::Process p(ctx(), fill_block, shm, 0x22);
    p.start();
    p.join();
    ASSERT_EQ(p.exitcode(), 0);
  }
  for (std::byte b : shm.buf()) ASSERT_EQ(b, std::byte{0x22});
  shm.unlink();
}

TEST_P(SharedMemoryAcrossProcesses, AsQueueItem) {
  mp::SharedMemory shm = mp::SharedMemory::create(1000);
  mp::Queue<mp::SharedMemory> q;
  mp::Process p(ctx(), fill_from_queue, q, 0x33);
  p.start();
  q.put(shm);
  p.join();
  EXPECT_EQ(p.exitcode(), 0);
  for (std::byte b : shm.buf()) ASSERT_EQ(b, std::byte{0x33});
  shm.unlink();
}

TEST_P(SharedMemoryAcrossProcesses, PoolWorkersReadInPlace) {
  constexpr size_t kCount = 100000;
  mp::SharedMemory shm = mp::SharedMemory::create(kCount * sizeof(int64_t));
  auto* v = reinterpret_cast<int64_t*>(shm.buf().data());
  std::iota(v, v + kCount, int64_t{0});
  mp::Pool pool(mp::PoolOptions{.processes = 2, .context = ctx()});
  auto first = pool.apply_async(sum_slice, shm, size_t{0}, kCount / 2);
  auto second = pool.apply_async(sum_slice, shm, kCount / 2, kCount);
  EXPECT_EQ(first.get() + second.get(), int64_t{kCount} * (kCount - 1) / 2);
  pool.close();
  pool.join();
  shm.unlink();
}

TEST_P(SharedMemoryAcrossProcesses, ShareableListEditedByChild) {
  mp::ShareableList sl{int64_t{41}, "hello", 2.5, true};
  mp::Process p(ctx(), edit_list, sl);
  p.start();
  p.join();
  EXPECT_EQ(p.exitcode(), 0);
  EXPECT_EQ(sl.get<int64_t>(0), 42);
  EXPECT_EQ(sl.get<std::string>(1), "howdy");
  EXPECT_EQ(sl.get(3), mp::ShareableItem(nullptr));
  sl.shm().unlink();
}

MP_ALL_START_METHODS(SharedMemoryAcrossProcesses);

// ---- ShareableList ---------------------------------------------------------------------------

// Python's test_shared_memory_ShareableList_basics.
TEST(ShareableList, Basics) {
  const mp::Bytes raw{std::byte{0}, std::byte{1}, std::byte{255}};
  mp::ShareableList sl{
      "howdy", mp::Bytes{std::byte{'H'}, std::byte{'i'}}, int64_t{-7}, 3.25, true, nullptr, 123,
      raw};
  ASSERT_EQ(sl.size(), 8u);
  EXPECT_EQ(sl.get<std::string>(0), "howdy");
  EXPECT_EQ(sl.get<mp::Bytes>(1), (mp::Bytes{std::byte{'H'}, std::byte{'i'}}));
  EXPECT_EQ(sl.get<int64_t>(2), -7);
  EXPECT_EQ(sl.get<double>(3), 3.25);
  EXPECT_EQ(sl.get<bool>(4), true);
  EXPECT_EQ(sl.get(5), mp::ShareableItem(nullptr));
  EXPECT_EQ(sl.get<int64_t>(6), 123);
  EXPECT_EQ(sl.get<mp::Bytes>(-1), raw);
  EXPECT_THROW(sl.get<double>(0), std::invalid_argument);

  // Index semantics: negative from the end, out of range throws.
  EXPECT_EQ(sl.get<int64_t>(-2), 123);
  EXPECT_THROW(sl.get(8), std::out_of_range);
  EXPECT_THROW(sl.get(-9), std::out_of_range);
  EXPECT_THROW(sl.set(8, 1), std::out_of_range);

  // operator[] reads and writes; any type fits a slot with room for it.
  sl[2] = 99;
  EXPECT_EQ(sl[2].get<int64_t>(), 99);
  sl[3] = "8 chars!";  // a number's slot holds 8 bytes
  EXPECT_EQ(sl.get<std::string>(3), "8 chars!");
  EXPECT_THROW(sl.set(3, "9 chars!!"), std::invalid_argument);
  sl[4] = 1.5f;
  EXPECT_EQ(sl.get<double>(4), 1.5);
  sl[5] = false;
  EXPECT_EQ(sl[5], mp::ShareableItem(false));

  // A string slot keeps the room it was created with: 8 * (5 / 8 + 1) = 8 bytes for "howdy".
  sl.set(0, "hi");
  EXPECT_EQ(sl.get<std::string>(0), "hi");
  sl.set(0, std::string("12345678"));
  EXPECT_EQ(sl.get<std::string>(0), "12345678");
  EXPECT_THROW(sl.set(0, "123456789"), std::invalid_argument);
  EXPECT_EQ(sl.get<std::string>(0), "12345678");  // unchanged by the refused set
  sl.set(0, std::string("a\0b", 3));              // NULs are kept, trailing or not
  EXPECT_EQ(sl.get<std::string>(0), std::string("a\0b", 3));

  // count / index: by type and value.
  mp::ShareableList counts{1, 2, 1, 1.0, true, "1", 1};
  EXPECT_EQ(counts.count(int64_t{1}), 3u);
  EXPECT_EQ(counts.count(1.0), 1u);
  EXPECT_EQ(counts.count(int64_t{5}), 0u);
  EXPECT_EQ(counts.index(int64_t{2}), 1u);
  EXPECT_EQ(counts.index(true), 4u);
  EXPECT_EQ(counts.index("1"), 5u);
  EXPECT_THROW(counts.index(int64_t{5}), std::invalid_argument);

  // Attach by name: the same items, and changes show both ways.
  mp::ShareableList again(sl.name());
  EXPECT_EQ(again.items(), sl.items());
  again.set(6, -1);
  EXPECT_EQ(sl.get<int64_t>(6), -1);

  sl.shm().unlink();
  counts.shm().unlink();
  EXPECT_FALSE(shm_exists(sl.name()));
  EXPECT_THROW(mp::ShareableList::attach(sl.name()), mp::FileNotFoundError);
  EXPECT_THROW(mp::ShareableList(sl.name()), mp::FileNotFoundError);
}

TEST(ShareableList, EmptyAndNamed) {
  mp::ShareableList empty(std::vector<mp::ShareableItem>{});
  EXPECT_EQ(empty.size(), 0u);
  EXPECT_EQ(mp::ShareableList(empty.name()).size(), 0u);
  empty.shm().unlink();

  TestName n;
  mp::ShareableList named({"a", "b"}, n.name);
  EXPECT_EQ(named.name(), n.name);
  EXPECT_THROW(mp::ShareableList({1}, n.name), mp::FileExistsError);
  named.shm().unlink();
}

TEST(ShareableList, AttachingToAnotherBlockIsRefused) {
  mp::SharedMemory raw = mp::SharedMemory::create(4096);
  std::memset(raw.buf().data(), 0x5a, raw.size());
  EXPECT_THROW(mp::ShareableList::attach(raw.name()), mp::ProcessError);
  mp::SharedMemory tiny = mp::SharedMemory::create(3);
  EXPECT_THROW(mp::ShareableList::attach(tiny.name()), mp::ProcessError);
  raw.unlink();
  tiny.unlink();
}

// ---- SharedMemoryManager ---------------------------------------------------------------------

// Python's test_shared_memory_SharedMemoryManager_basics and _reuses_resource_tracker.
TEST(SharedMemoryManager, ShutdownUnlinksEverything) {
  std::vector<std::string> names;
  {
    mp::SharedMemoryManager smm;
    mp::SharedMemory a = smm.SharedMemory(128);
    mp::SharedMemory b = smm.SharedMemory(4096);
    mp::ShareableList sl = smm.ShareableList({"howdy", 1, 2.5});
    mp::ShareableList empty = smm.ShareableList(std::vector<mp::ShareableItem>{});
    names = {a.name(), b.name(), sl.name(), empty.name()};
    for (const auto& n : names) EXPECT_TRUE(shm_exists(n)) << n;
    EXPECT_EQ(a.size(), 128u);
    EXPECT_EQ(sl.get<std::string>(0), "howdy");
    b.unlink();  // unlinked by hand: shutdown skips it
    smm.shutdown();
    for (const auto& n : names) EXPECT_FALSE(shm_exists(n)) << n;
    // Handles stay usable until closed; the manager makes nothing more.
    a.buf()[0] = std::byte{1};
    EXPECT_EQ(sl.get<double>(2), 2.5);
    EXPECT_THROW(smm.SharedMemory(8), mp::ProcessError);
    EXPECT_THROW(smm.ShareableList({1}), mp::ProcessError);
    smm.shutdown();  // idempotent
  }
  {
    mp::SharedMemoryManager smm;  // destruction shuts down
    names = {smm.SharedMemory(64).name(), smm.ShareableList({1, 2}).name()};
    for (const auto& n : names) EXPECT_TRUE(shm_exists(n)) << n;
  }
  for (const auto& n : names) EXPECT_FALSE(shm_exists(n)) << n;
}

// A fork child's copy of a manager owns nothing (Python's Finalize checks the pid).
TEST(SharedMemoryManager, ForkChildCopyUnlinksNothing) {
  mp::SharedMemoryManager smm;
  mp::SharedMemory a = smm.SharedMemory(64);
  const pid_t pid = fork();
  ASSERT_GE(pid, 0);
  if (pid == 0) {
    smm.shutdown();
    _exit(0);
  }
  int status = 0;
  ASSERT_EQ(waitpid(pid, &status, 0), pid);
  EXPECT_TRUE(shm_exists(a.name()));
  smm.shutdown();
  EXPECT_FALSE(shm_exists(a.name()));
}

// ---- the resource tracker --------------------------------------------------------------------

// Runs only when re-executed by CreatorKilledBlocksAreRemoved: a program of its own (own tracker)
// creates a tracked and an untracked block, says so on the descriptor it was given, and waits.
TEST(SharedMemoryTrackerHelper, CreateAndWait) {
  const char* tracked = std::getenv("MP_SHM_TEST_TRACKED");
  const char* untracked = std::getenv("MP_SHM_TEST_UNTRACKED");
  const char* fd = std::getenv("MP_SHM_TEST_FD");
  if (!tracked || !untracked || !fd) GTEST_SKIP() << "helper of CreatorKilledBlocksAreRemoved";
  mp::SharedMemory a(tracked, true, 4096);
  mp::SharedMemory b(untracked, true, 4096, /*track=*/false);
  const int out = std::atoi(fd);
  ASSERT_EQ(write(out, "R", 1), 1);
  for (;;) pause();
}

// Python's test_shared_memory_cleaned_after_process_termination: a creator killed with SIGKILL
// leaves its tracked block to the resource tracker, which removes it; an untracked one stays.
TEST(SharedMemoryTracker, CreatorKilledBlocksAreRemoved) {
  TestName tracked, untracked;
  int fds[2];
  ASSERT_EQ(pipe(fds), 0);
  fcntl(fds[0], F_SETFD, FD_CLOEXEC);
  std::vector<std::string> env_strings;
  for (char** e = environ; *e; ++e) env_strings.emplace_back(*e);
  env_strings.push_back("MP_SHM_TEST_TRACKED=" + tracked.name);
  env_strings.push_back("MP_SHM_TEST_UNTRACKED=" + untracked.name);
  env_strings.push_back("MP_SHM_TEST_FD=" + std::to_string(fds[1]));
  std::vector<char*> envp;
  for (auto& s : env_strings) envp.push_back(s.data());
  envp.push_back(nullptr);
  std::string filter = "--gtest_filter=SharedMemoryTrackerHelper.CreateAndWait";
  char self[] = "/proc/self/exe";
  char* argv[] = {self, filter.data(), nullptr};
  pid_t pid = -1;
  ASSERT_EQ(posix_spawn(&pid, "/proc/self/exe", nullptr, nullptr, argv, envp.data()), 0);
  close(fds[1]);
  char c = 0;
  const ssize_t got = read(fds[0], &c, 1);
  close(fds[0]);
  kill(pid, SIGKILL);
  int status = 0;
  waitpid(pid, &status, 0);
  ASSERT_EQ(got, 1) << "the helper did not create its blocks";
  EXPECT_TRUE(WIFSIGNALED(status));
  EXPECT_TRUE(eventually([&] { return !shm_exists(tracked.name); }))
      << "the tracker left " << tracked.name;
  EXPECT_TRUE(shm_exists(untracked.name)) << "an untracked block must outlive its creator";
}
