# Small programs that tests run as separate processes (misuse that must fail cleanly).
file(GLOB TEST_PROGRAMS CONFIGURE_DEPENDS ${CMAKE_CURRENT_SOURCE_DIR}/programs/*.cpp)
foreach(src ${TEST_PROGRAMS})
  get_filename_component(name ${src} NAME_WE)
  add_executable(program_${name} ${src})
  target_link_libraries(program_${name} PRIVATE multiproc::multiproc)
endforeach()
foreach(method spawn forkserver)
  foreach(variant never child)
    set(extra "")
    if(variant STREQUAL "child")
      set(extra "--init")
    endif()
    add_test(NAME no_init.${method}.${variant}
             COMMAND /usr/bin/python3 ${CMAKE_CURRENT_SOURCE_DIR}/support/check_no_init.py
                     $<TARGET_FILE:program_no_init> ${method} ${extra})
    set_tests_properties(no_init.${method}.${variant} PROPERTIES TIMEOUT 120)
  endforeach()
endforeach()
