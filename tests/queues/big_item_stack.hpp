// A check shared by the queue test programs: get() of a big plain item delivers it into the
// caller's object, not into a copy of its own that is copied again on return (GCC 12 does not
// elide that copy for a named value declared inside an `if constexpr` branch: a second memcpy
// of every item). A thread whose stack holds one 1 MiB item, and not two, gets it. In a forked
// child, since a stack overflow kills it; the stack ends at an inaccessible region, so
// overflowing it faults at once.
#pragma once

#include <gtest/gtest.h>

#include <pthread.h>
#include <sys/mman.h>
#include <sys/wait.h>
#include <unistd.h>

#include <array>
#include <cstddef>
#include <vector>

namespace big_item_stack {

// Under ThreadSanitizer the getter died of SIGSEGV (CI's Debug build with TSan): its frames and
// the runtime's use of the thread's stack outgrow the headroom below, so there the test would
// measure the sanitizer, not the copy. The plain and ASan runs check it.
#if defined(__SANITIZE_THREAD__)
inline constexpr bool kUnderTsan = true;
#elif defined(__has_feature)
#if __has_feature(thread_sanitizer)
inline constexpr bool kUnderTsan = true;
#else
inline constexpr bool kUnderTsan = false;
#endif
#else
inline constexpr bool kUnderTsan = false;
#endif

constexpr size_t kBigItem = size_t{1} << 20;
struct BigItem {
  std::array<char, kBigItem> b;
};

template <class Q>
void* get_big_item(void* q) {
  const BigItem item = static_cast<Q*>(q)->get();
  return reinterpret_cast<void*>(item.b[0] == 'x' && item.b[kBigItem - 1] == 'y' ? 1 : 2);
}

// Q: a queue type of BigItem (default-constructible, put(const BigItem&), get()).
template <class Q>
void expect_get_needs_stack_for_one_copy() {
  if (kUnderTsan)
    GTEST_SKIP() << "under ThreadSanitizer the getter's frames outgrow the test's stack";
  const pid_t pid = fork();
  ASSERT_GE(pid, 0);
  if (pid == 0) {
    Q q;
    std::vector<char> bytes(kBigItem, 'z');
    bytes.front() = 'x';
    bytes.back() = 'y';
    q.put(*reinterpret_cast<const BigItem*>(bytes.data()));
    constexpr size_t kGuard = size_t{8} << 20, kStack = kBigItem + (size_t{256} << 10);
    char* region = static_cast<char*>(
        mmap(nullptr, kGuard + kStack, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0));
    if (region == MAP_FAILED || mprotect(region + kGuard, kStack, PROT_READ | PROT_WRITE) != 0)
      _exit(3);
    pthread_attr_t attr;
    pthread_attr_init(&attr);
    pthread_attr_setstack(&attr, region + kGuard, kStack);
    pthread_t t;
    if (pthread_create(&t, &attr, get_big_item<Q>, &q) != 0) _exit(4);
    void* result = nullptr;
    pthread_join(t, &result);
    _exit(result == reinterpret_cast<void*>(1) ? 0 : 5);
  }
  int status = 0;
  ASSERT_EQ(waitpid(pid, &status, 0), pid);
  EXPECT_TRUE(WIFEXITED(status)) << "the getter died of signal " << WTERMSIG(status);
  if (WIFEXITED(status)) {
    EXPECT_EQ(WEXITSTATUS(status), 0);
  }
}

}  // namespace big_item_stack
