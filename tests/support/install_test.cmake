# Run with cmake -P. Installs multiproc into a scratch prefix, then builds and runs a consumer
# project against it twice: through find_package(multiproc) and through pkg-config.
#   KIND        static or shared: which libmultiproc to install and use
#   BUILD_DIR   a built multiproc tree; installed as is when it built KIND (BUILD_KIND says)
#   PROJECT_DIR multiproc's source, built afresh (library only) when BUILD_DIR is the other kind
#   SOURCE_DIR  the consumer project;  WORK_DIR  scratch;  CXX  the compiler;  LAUNCHER  optional
#   FIND_PACKAGE_ONLY  skip the pkg-config half (a consumer of a component pkg-config lacks)
file(REMOVE_RECURSE ${WORK_DIR})
set(prefix ${WORK_DIR}/prefix)
function(run)
  execute_process(COMMAND ${ARGN} RESULT_VARIABLE rc OUTPUT_VARIABLE out ERROR_VARIABLE err)
  if(NOT rc EQUAL 0)
    message(FATAL_ERROR "failed: ${ARGN}\n${out}\n${err}")
  endif()
  set(last_output "${out}" PARENT_SCOPE)
endfunction()

set(lib_build ${BUILD_DIR})
if(NOT "${BUILD_KIND}" STREQUAL "${KIND}")
  set(shared OFF)
  if("${KIND}" STREQUAL "shared")
    set(shared ON)
  endif()
  set(lib_build ${WORK_DIR}/lib)
  set(launcher "")
  if(LAUNCHER)
    set(launcher -DCMAKE_CXX_COMPILER_LAUNCHER=${LAUNCHER})
  endif()
  run(${CMAKE_COMMAND} -S ${PROJECT_DIR} -B ${lib_build} -DCMAKE_CXX_COMPILER=${CXX} ${launcher}
      -DCMAKE_BUILD_TYPE=Release -DBUILD_SHARED_LIBS=${shared} -DMULTIPROC_BUILD_TESTS=OFF
      -DMULTIPROC_BUILD_EXAMPLES=OFF -DMULTIPROC_BUILD_BENCH=OFF)
  run(${CMAKE_COMMAND} --build ${lib_build} --target multiproc --parallel 2)
endif()
run(${CMAKE_COMMAND} --install ${lib_build} --prefix ${prefix})

set(installed include/multiproc/multiproc.hpp lib/cmake/multiproc/multiprocConfig.cmake
    lib/cmake/multiproc/multiprocConfigVersion.cmake lib/pkgconfig/multiproc.pc)
if("${KIND}" STREQUAL "shared")
  list(APPEND installed lib/libmultiproc.so lib/libmultiproc.so.0.1)
else()
  list(APPEND installed lib/libmultiproc.a)
endif()
foreach(f IN LISTS installed)
  if(NOT EXISTS ${prefix}/${f})
    message(FATAL_ERROR "not installed: ${f}")
  endif()
endforeach()
if("${KIND}" STREQUAL "shared")
  run(readelf -d ${prefix}/lib/libmultiproc.so)
  if(NOT last_output MATCHES "SONAME\\)[^\n]*\\[libmultiproc\\.so\\.0\\.1\\]")
    message(FATAL_ERROR "libmultiproc.so has no SONAME libmultiproc.so.0.1:\n${last_output}")
  endif()
endif()

# pkg-config: no -std flag forced on the user, and what a link needs is listed.
file(STRINGS ${prefix}/lib/pkgconfig/multiproc.pc pc REGEX "^(Cflags|Libs)")
if(pc MATCHES "-std=")
  message(FATAL_ERROR "multiproc.pc forces a -std flag:\n${pc}")
endif()

function(check_consumer exe)
  run(${exe})
  message(STATUS "${last_output}")
  if(NOT last_output MATCHES "consumer: 6")
    message(FATAL_ERROR "${exe} printed: ${last_output}")
  endif()
endfunction()

# 1. find_package, as README's five-line CMakeLists does.
run(${CMAKE_COMMAND} -S ${SOURCE_DIR} -B ${WORK_DIR}/build -DCMAKE_PREFIX_PATH=${prefix}
    -DCMAKE_CXX_COMPILER=${CXX} -DCMAKE_BUILD_TYPE=Release)
run(${CMAKE_COMMAND} --build ${WORK_DIR}/build)
check_consumer(${WORK_DIR}/build/consumer)

# 2. pkg-config, with the user's own -std (and the task library built by hand).
if(FIND_PACKAGE_ONLY)
  return()
endif()
find_program(PKG_CONFIG pkg-config)
if(NOT PKG_CONFIG)
  message(STATUS "pkg-config not found: its half of the test is skipped")
  return()
endif()
execute_process(COMMAND ${CMAKE_COMMAND} -E env PKG_CONFIG_PATH=${prefix}/lib/pkgconfig
                        ${PKG_CONFIG} --cflags --libs multiproc
                OUTPUT_VARIABLE pc_flags RESULT_VARIABLE rc OUTPUT_STRIP_TRAILING_WHITESPACE)
if(NOT rc EQUAL 0)
  message(FATAL_ERROR "pkg-config --cflags --libs multiproc failed")
endif()
separate_arguments(pc_flags UNIX_COMMAND "${pc_flags}")
set(pc_dir ${WORK_DIR}/pkgconfig)
file(MAKE_DIRECTORY ${pc_dir})
run(${CXX} -std=c++20 -O1 -fPIC -shared ${SOURCE_DIR}/tasks.cpp -o ${pc_dir}/libconsumer_tasks.so)
run(${CXX} -std=c++20 -O1 ${SOURCE_DIR}/main.cpp -o ${pc_dir}/consumer ${pc_flags}
    -L${pc_dir} -lconsumer_tasks -Wl,-rpath,${pc_dir} -Wl,-rpath,${prefix}/lib)
check_consumer(${pc_dir}/consumer)
