# `cmake --install` the package into a scratch prefix, then configure, build and run a consumer
# project against it, through find_package(multiproc) and through pkg-config: once with a static
# libmultiproc and once with a shared one (the kind this tree did not build is built afresh).
if(BUILD_SHARED_LIBS)
  set(MULTIPROC_BUILD_KIND shared)
else()
  set(MULTIPROC_BUILD_KIND static)
endif()
foreach(kind static shared)
  add_test(NAME install.find_package.${kind}
           COMMAND ${CMAKE_COMMAND} -DKIND=${kind} -DBUILD_KIND=${MULTIPROC_BUILD_KIND}
                   -DBUILD_DIR=${PROJECT_BINARY_DIR} -DPROJECT_DIR=${PROJECT_SOURCE_DIR}
                   -DSOURCE_DIR=${CMAKE_CURRENT_SOURCE_DIR}/install_consumer
                   -DWORK_DIR=${CMAKE_CURRENT_BINARY_DIR}/install_test_${kind}
                   -DCXX=${CMAKE_CXX_COMPILER} -DLAUNCHER=${CMAKE_CXX_COMPILER_LAUNCHER}
                   -P ${CMAKE_CURRENT_SOURCE_DIR}/support/install_test.cmake)
  set_tests_properties(install.find_package.${kind} PROPERTIES TIMEOUT 900
                       LABELS "install;no-sanitizer")
endforeach()
