# The installed package's redis component: find_package(multiproc COMPONENTS redis) and link
# multiproc::redis (hiredis found again through pkg-config).
if(TARGET multiproc_redis AND NOT BUILD_SHARED_LIBS)
  add_test(NAME install.find_package_redis
           COMMAND ${CMAKE_COMMAND} -DKIND=static -DBUILD_KIND=static -DFIND_PACKAGE_ONLY=ON
                   -DBUILD_DIR=${PROJECT_BINARY_DIR}
                   -DSOURCE_DIR=${CMAKE_CURRENT_SOURCE_DIR}/redis/install_consumer
                   -DWORK_DIR=${CMAKE_CURRENT_BINARY_DIR}/install_test_redis
                   -DCXX=${CMAKE_CXX_COMPILER}
                   -P ${CMAKE_CURRENT_SOURCE_DIR}/support/install_test.cmake)
  set_tests_properties(install.find_package_redis PROPERTIES TIMEOUT 600 LABELS "install;no-sanitizer")
endif()
