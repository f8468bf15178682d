# Chaos and soak tests (issue 14): labelled so that they can be chosen or left out
# (ctest -L chaos, ctest -LE soak), with limits that say how long each may take.
if(TEST test_chaos)
  set_tests_properties(test_chaos PROPERTIES LABELS chaos TIMEOUT 300)
endif()
if(TEST test_chaos_redis)
  set_tests_properties(test_chaos_redis PROPERTIES LABELS chaos TIMEOUT 300)
endif()
# The soak test asserts that resident memory stays flat; under ASan freed memory sits in the
# allocator's quarantine (up to 256 MiB), so RSS grows by design there: no-sanitizer.
if(TEST test_soak)
  set_tests_properties(test_soak PROPERTIES LABELS "soak;no-sanitizer" TIMEOUT 300)
endif()
