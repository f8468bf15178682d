# Tests that speak an internal protocol (as a hostile peer would) include its header from src/.
if(TARGET test_forkserver_requests)
  target_include_directories(test_forkserver_requests PRIVATE ${PROJECT_SOURCE_DIR}/src)
endif()
