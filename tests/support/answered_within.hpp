// answered_within(): a watchdog for tests of calls that used to hang. A call that hangs cannot be
// interrupted (and its threads cannot be joined), so a test whose answer is not ready within the
// limit says what it was waiting for and ends the test program; the resource tracker then ends
// whatever workers it had started.
#pragma once

#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <future>

template <class T>
void answered_within(std::future<T>& answer, std::chrono::seconds limit, const char* what) {
  if (answer.wait_for(limit) != std::future_status::ready) {
    std::fprintf(stderr, "FAILED: still waiting after %llds: %s\n",
                 static_cast<long long>(limit.count()), what);
    std::_Exit(1);
  }
}
