# `cmake --install` the package into a scratch prefix, then configure, build and run a consumer
# project that uses find_package(multiproc) (and check the pkg-config file too).
add_test(NAME install.find_package
         COMMAND ${CMAKE_COMMAND} -DBUILD_DIR=${PROJECT_BINARY_DIR}
                 -DSOURCE_DIR=${CMAKE_CURRENT_SOURCE_DIR}/install_consumer
                 -DWORK_DIR=${CMAKE_CURRENT_BINARY_DIR}/install_test
                 -DCXX=${CMAKE_CXX_COMPILER}
                 -P ${CMAKE_CURRENT_SOURCE_DIR}/support/install_test.cmake)
set_tests_properties(install.find_package PROPERTIES TIMEOUT 600 LABELS "install;no-sanitizer")
