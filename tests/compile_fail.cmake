# Compile-time checks: each tests/compile_fail/*.cpp is compiled on its own (-fsyntax-only) by one
# ctest entry, compile_fail.<name>. A file with "// expect-error: REGEX" lines must FAIL to compile,
# and the compiler's output must match every REGEX (so it fails for the stated reason and names
# the type); a file without such lines is a positive control and must compile. An unexpected
# success is a failure. "// expect-first-error: REGEX" lines must match the FIRST line of the
# output that contains "error:" (what a user reads first). A "// variants: a b c" line makes one
# entry per variant, compile_fail.<name>.<variant>, compiled with -DVARIANT_<variant>.
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
  file(STRINGS "${SOURCE}" first_expectations REGEX "^// expect-first-error: ")
  set(variant_flags "")
  if(VARIANT)
    set(variant_flags "-DVARIANT_${VARIANT}")
  endif()
  # LC_ALL=C: plain ASCII quotes in the diagnostics, whatever the caller's locale.
  execute_process(
    COMMAND ${CMAKE_COMMAND} -E env LC_ALL=C
            "${COMPILER}" -std=c++20 -fsyntax-only ${variant_flags} ${include_flags} "${SOURCE}"
    RESULT_VARIABLE result
    OUTPUT_VARIABLE output
    ERROR_VARIABLE output)

  if(NOT expectations AND NOT first_expectations)
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
  if(first_expectations)
    string(REGEX MATCH "[^\n]*error:[^\n]*" first_error "${output}")
    foreach(line IN LISTS first_expectations)
      string(REGEX REPLACE "^// expect-first-error: " "" regex "${line}")
      if(NOT first_error MATCHES "${regex}")
        message(FATAL_ERROR "${SOURCE} ${VARIANT}: the first error line does not match '${regex}':\n"
                            "${first_error}\n\nwhole output:\n${output}")
      endif()
      message(STATUS "${SOURCE} ${VARIANT}: first error line matches '${regex}'")
    endforeach()
  endif()
  return()
endif()

file(GLOB MULTIPROC_COMPILE_FAIL_SOURCES CONFIGURE_DEPENDS
     ${CMAKE_CURRENT_LIST_DIR}/compile_fail/*.cpp)
foreach(src IN LISTS MULTIPROC_COMPILE_FAIL_SOURCES)
  get_filename_component(name ${src} NAME_WE)
  file(STRINGS ${src} variants_line REGEX "^// variants: ")
  set(variants "")
  if(variants_line)
    string(REGEX REPLACE "^// variants: " "" variants "${variants_line}")
    separate_arguments(variants)
  endif()
  if(NOT variants)
    set(variants "-")
  endif()
  foreach(variant IN LISTS variants)
    set(test_name compile_fail.${name})
    set(variant_arg "")
    if(NOT variant STREQUAL "-")
      set(test_name compile_fail.${name}.${variant})
      set(variant_arg -DVARIANT=${variant})
    endif()
    add_test(NAME ${test_name}
             COMMAND ${CMAKE_COMMAND}
                     -DCOMPILER=${CMAKE_CXX_COMPILER}
                     -DSOURCE=${src}
                     ${variant_arg}
                     "-DINCLUDES=${PROJECT_SOURCE_DIR}/include|$<JOIN:$<TARGET_PROPERTY:cereal::cereal,INTERFACE_INCLUDE_DIRECTORIES>,|>"
                     -P ${CMAKE_CURRENT_LIST_FILE})
    set_tests_properties(${test_name} PROPERTIES TIMEOUT 120 LABELS compile-fail)
  endforeach()
endforeach()
