# After programs whose children were SIGKILLed holding queues, pools and locks, nothing of theirs
# is left in /dev/shm once the program tree is gone.
add_test(NAME leak_check.queue_kill
         COMMAND sh ${CMAKE_CURRENT_SOURCE_DIR}/support/leak_check.sh $<TARGET_FILE:test_queue_kill>)
add_test(NAME leak_check.pool
         COMMAND sh ${CMAKE_CURRENT_SOURCE_DIR}/support/leak_check.sh $<TARGET_FILE:test_pool>
                 --gtest_filter=*WorkerDeath*:*TenKills*:*Terminate*)
set_tests_properties(leak_check.queue_kill leak_check.pool PROPERTIES TIMEOUT 600 LABELS leak-check)
