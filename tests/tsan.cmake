# Under ThreadSanitizer (MULTIPROC_SANITIZE=thread: ./run.sh tsan, part of ./run.sh test), the
# tests TSan cannot check, each with its reason. TSan watches the threads of one process: in a
# test with several processes it checks each of them on its own, and is blind to the ordering
# that shared memory (queues, locks) gives between processes; the kill and chaos tests and ASan
# cover that. A whole test program TSan cannot run gets the label no-tsan (ctest -LE no-tsan);
# single tests are left out with a gtest filter in the program's environment, as below.
if(MULTIPROC_SANITIZE MATCHES "thread")
  # RedisPoolTest.*/fork: the pool's workers are forked from a client that has threads (its
  # result loop), and each worker starts threads of its own (its Redis sender). TSan does not
  # support threads started after a multi-threaded fork: it kills the worker (die_after_fork),
  # and the tests see only workers that die.
  if(TEST test_redis_pool)
    set_property(TEST test_redis_pool APPEND PROPERTY ENVIRONMENT "GTEST_FILTER=-RedisPoolTest.*/fork")
  endif()
endif()
