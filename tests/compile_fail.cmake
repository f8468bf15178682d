# Compile-time checks: each tests/compile_fail/*.cpp is compiled on its own (-fsyntax-only) by one
# ctest entry, compile_fail.<name>. A file with "// expect-error: REGEX" lines must FAIL to compile,
# and the compiler's output must match every REGEX (so it fails for the stated reason and names
# the type); a file without such lines is a positive control and must compile. An unexpected
# success is a failure.
#
# This file has two roles. Included from tests/CMakeLists.txt, it adds the tests. Run as
# `cmake -DCOMPILER=... -DSOURCE=... -DINCLUDES=a|b -P compile_fail.cmake`, it performs one check;
# every test runs it that way, so the checking logic lives in one place.

if(CMAKE_SCRIPT_MODE_FILE)
  string(REPLACE "|" ";" include_dirs "${INCLUDES}")
  set(include_flags "")
  foreach(dir IN LISTS include_dirs)
    if(dir)
      list(APPEND include_flags "-I${dir}")
    endif()
  endforeach()

  file(STRINGS "${SOURCE}" expectations REGEX "^// expect-error: ")
  # LC_ALL=C: plain ASCII quotes in the diagnostics, whatever the caller's locale.
  execute_process(
    COMMAND ${CMAKE_COMMAND} -E env LC_ALL=C
            "${COMPILER}" -std=c++20 -fsyntax-only ${include_flags} "${SOURCE}"
    RESULT_VARIABLE result
    OUTPUT_VARIABLE output
    ERROR_VARIABLE output)

  if(NOT expectations)
    if(NOT result EQUAL 0)
      message(FATAL_ERROR "${SOURCE} is a positive control and must compile, but did not:\n${output}")
    endif()
    message(STATUS "${SOURCE}: compiles, as it must")
    return()
  endif()

  if(result EQUAL 0)
    message(FATAL_ERROR "${SOURCE} must NOT compile, but it did")
  endif()
  foreach(line IN LISTS expectations)
    string(REGEX REPLACE "^// expect-error: " "" regex "${line}")
    if(NOT output MATCHES "${regex}")
      message(FATAL_ERROR
        "${SOURCE} failed to compile, but its diagnostics do not match '${regex}':\n${output}")
    endif()
    message(STATUS "${SOURCE}: diagnostics match '${regex}'")
  endforeach()
  return()
endif()

file(GLOB MULTIPROC_COMPILE_FAIL_SOURCES CONFIGURE_DEPENDS
     ${CMAKE_CURRENT_LIST_DIR}/compile_fail/*.cpp)
foreach(src IN LISTS MULTIPROC_COMPILE_FAIL_SOURCES)
  get_filename_component(name ${src} NAME_WE)
  add_test(NAME compile_fail.${name}
           COMMAND ${CMAKE_COMMAND}
                   -DCOMPILER=${CMAKE_CXX_COMPILER}
                   -DSOURCE=${src}
                   "-DINCLUDES=${PROJECT_SOURCE_DIR}/include|$<JOIN:$<TARGET_PROPERTY:cereal::cereal,INTERFACE_INCLUDE_DIRECTORIES>,|>"
                   -P ${CMAKE_CURRENT_LIST_FILE})
  set_tests_properties(compile_fail.${name} PROPERTIES TIMEOUT 120 LABELS compile-fail)
endforeach()
