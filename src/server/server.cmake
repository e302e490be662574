# Policy server (issue #5): `pi0 serve`, an openpi-compatible websocket server (docs/SERVER.md).
# Included by the top-level CMakeLists.txt before the libraries are made. Dependencies
# (tools/deps/server.apt): libwslay-dev (websocket framing), libmsgpack-dev (msgpack-c),
# clang + libclang-rt-dev (libFuzzer targets, tests only).
find_path(WSLAY_INCLUDE_DIR wslay/wslay.h)
find_library(WSLAY_LIBRARY wslay)
find_path(MSGPACK_INCLUDE_DIR msgpack.h)
find_library(MSGPACK_LIBRARY NAMES msgpackc msgpack-c)
set(PI0_WITH_SERVER ON)
if(NOT WSLAY_INCLUDE_DIR OR NOT WSLAY_LIBRARY OR NOT MSGPACK_INCLUDE_DIR OR NOT MSGPACK_LIBRARY)
  # The engine and the CLI still build; `pi0 serve` says what to install.
  message(WARNING "pi0 serve is not built: it needs libwslay-dev and libmsgpack-dev (bash tools/setup.sh)")
  set(PI0_WITH_SERVER OFF)
  return()
endif()

set(PI0_SERVER_DIR ${CMAKE_CURRENT_SOURCE_DIR}/src/server)
add_library(pi0_server STATIC
  ${PI0_SERVER_DIR}/ws_server.c
  ${PI0_SERVER_DIR}/ws_http.c
  ${PI0_SERVER_DIR}/msgpack_numpy.c
  ${PI0_SERVER_DIR}/request_queue.c
  ${PI0_SERVER_DIR}/serve.c
  ${PI0_SERVER_DIR}/log.c)
target_include_directories(pi0_server PUBLIC ${CMAKE_CURRENT_SOURCE_DIR}/include ${CMAKE_CURRENT_SOURCE_DIR}/src
                                      PRIVATE ${WSLAY_INCLUDE_DIR} ${MSGPACK_INCLUDE_DIR})
# pi0_static is defined after this fragment; the name resolves at generate time.
target_link_libraries(pi0_server PUBLIC pi0_static ${WSLAY_LIBRARY} ${MSGPACK_LIBRARY} Threads::Threads)

if(BUILD_TESTING)
  set(PI0_SERVER_TESTS ${CMAKE_CURRENT_SOURCE_DIR}/tests/server)
  # Result lines (load-test latencies, fuzzer executions and findings) are appended here, since
  # ctest hides the output of passing tests: `cat build/server_report.txt` shows them.
  set(PI0_SERVER_REPORT ${CMAKE_BINARY_DIR}/server_report.txt)
  add_test(NAME server_report_reset COMMAND ${CMAKE_COMMAND} -E rm -f ${PI0_SERVER_REPORT})
  set_tests_properties(server_report_reset PROPERTIES FIXTURES_SETUP server_report)
  # C unit tests: the msgpack/numpy codec, the HTTP handshake, the request queue.
  foreach(name test_msgpack_numpy test_ws_http)
    add_executable(${name} ${PI0_SERVER_TESTS}/${name}.c)
    target_include_directories(${name} PRIVATE ${CMAKE_CURRENT_SOURCE_DIR}/tests/c ${MSGPACK_INCLUDE_DIR})
    target_link_libraries(${name} PRIVATE pi0_server)
    add_test(NAME ${name} COMMAND ${name})
  endforeach()

  # The real server with a fake policy, for the protocol tests.
  add_executable(pi0_server_fake ${PI0_SERVER_TESTS}/fake_server.c)
  target_link_libraries(pi0_server_fake PRIVATE pi0_server)

  # pytest: protocol tests (fake policy), the real openpi-client against `pi0 serve`, load,
  # SIGTERM drain, bad input. Runs on the ASan build too (fewer load-test requests there).
  find_package(Python3 COMPONENTS Interpreter)
  if(Python3_FOUND)
    set(_env "PI0_SERVER_TESTS=1" "PI0_CLI=$<TARGET_FILE:pi0_cli>" "PI0_SERVER_FAKE=$<TARGET_FILE:pi0_server_fake>"
             "PI0_SERVER_PYDEPS=${CMAKE_CURRENT_BINARY_DIR}/server_pydeps" "PI0_SERVER_REPORT=${PI0_SERVER_REPORT}")
    if(TARGET pi0_policy_tool)
      list(APPEND _env "PI0_POLICY_TOOL=$<TARGET_FILE:pi0_policy_tool>")
    endif()
    if(PI0_SANITIZE)
      list(APPEND _env "PI0_SERVER_SANITIZED=1")
    endif()
    add_test(NAME pytest_server
             COMMAND ${Python3_EXECUTABLE} -m pytest -q -p no:cacheprovider ${PI0_SERVER_TESTS}
             WORKING_DIRECTORY ${CMAKE_CURRENT_SOURCE_DIR})
    set_tests_properties(pytest_server PROPERTIES TIMEOUT 400 ENVIRONMENT "${_env}" FIXTURES_REQUIRED server_report)
  endif()

  # libFuzzer targets (clang -fsanitize=fuzzer,address,undefined), built and run for a bounded
  # time by ctest on the plain build only (they carry their own sanitizers).
  set(PI0_FUZZ_SECONDS 20 CACHE STRING "Seconds each libFuzzer target runs in ctest")
  set(PI0_FUZZ OFF)
  if(NOT PI0_SANITIZE AND Python3_FOUND)
    find_program(PI0_FUZZ_CLANG NAMES clang clang-14 clang-15 clang-16 clang-17 clang-18 clang-19)
    if(PI0_FUZZ_CLANG)
      set(_probe ${CMAKE_CURRENT_BINARY_DIR}/fuzz_probe.c)
      file(WRITE ${_probe} "#include <stddef.h>\n#include <stdint.h>\nint LLVMFuzzerTestOneInput(const uint8_t *d, size_t n) { (void)d; (void)n; return 0; }\n")
      execute_process(COMMAND ${PI0_FUZZ_CLANG} -fsanitize=fuzzer,address,undefined ${_probe}
                              -o ${CMAKE_CURRENT_BINARY_DIR}/fuzz_probe
                      RESULT_VARIABLE _rc OUTPUT_QUIET ERROR_QUIET)
      if(_rc EQUAL 0)
        set(PI0_FUZZ ON)
      endif()
    endif()
    if(NOT PI0_FUZZ)
      message(WARNING "pi0: no clang with libFuzzer (apt-get install clang libclang-rt-dev): fuzz tests skipped")
    endif()
  endif()
  if(PI0_FUZZ)
    set(_src ${CMAKE_CURRENT_SOURCE_DIR}/src)
    set(_flags -O1 -g -fsanitize=fuzzer,address,undefined -fno-sanitize-recover=undefined -std=gnu11
               -I${CMAKE_CURRENT_SOURCE_DIR}/include -I${_src} -I${CJSON_INCLUDE_DIR} -I${MSGPACK_INCLUDE_DIR})
    set(fuzz_msgpack_numpy_SOURCES ${PI0_SERVER_TESTS}/fuzz/fuzz_msgpack_numpy.c ${PI0_SERVER_DIR}/msgpack_numpy.c)
    set(fuzz_msgpack_numpy_SEEDS msgpack)
    set(fuzz_msgpack_numpy_DICT ${PI0_SERVER_TESTS}/fuzz/msgpack.dict)
    set(fuzz_safetensors_SOURCES ${PI0_SERVER_TESTS}/fuzz/fuzz_safetensors.c ${_src}/io/safetensors.c
                                 ${_src}/util/error.c ${_src}/model/weights.c)
    set(fuzz_safetensors_SEEDS safetensors)
    set(fuzz_safetensors_DICT "")
    set(fuzz_ws_http_SOURCES ${PI0_SERVER_TESTS}/fuzz/fuzz_ws_http.c ${PI0_SERVER_DIR}/ws_http.c
                             ${PI0_SERVER_DIR}/msgpack_numpy.c)
    set(fuzz_ws_http_SEEDS http)
    set(fuzz_ws_http_DICT "")
    set(_fuzzers)
    foreach(f fuzz_msgpack_numpy fuzz_safetensors fuzz_ws_http)
      set(_bin ${CMAKE_CURRENT_BINARY_DIR}/${f})
      add_custom_command(OUTPUT ${_bin}
                         COMMAND ${PI0_FUZZ_CLANG} ${_flags} ${${f}_SOURCES} -o ${_bin}
                                 ${CJSON_LIBRARY} ${MSGPACK_LIBRARY} -lm -lpthread
                         DEPENDS ${${f}_SOURCES} ${PI0_SERVER_DIR}/msgpack_numpy.h ${PI0_SERVER_DIR}/ws_http.h
                         COMMENT "libFuzzer target ${f}" VERBATIM)
      list(APPEND _fuzzers ${_bin})
      set(_secs ${PI0_FUZZ_SECONDS})
      if(f STREQUAL "fuzz_ws_http")
        math(EXPR _secs "${PI0_FUZZ_SECONDS} / 3 + 1")
      endif()
      add_test(NAME ${f}
               COMMAND ${Python3_EXECUTABLE} ${PI0_SERVER_TESTS}/fuzz/run_fuzzer.py ${_bin}
                       ${CMAKE_CURRENT_BINARY_DIR}/${f}_work ${_secs}
                       ${PI0_SERVER_TESTS}/fuzz/seeds/${${f}_SEEDS} "${${f}_DICT}")
      set_tests_properties(${f} PROPERTIES TIMEOUT 300 LABELS fuzz FIXTURES_REQUIRED server_report
                                           ENVIRONMENT "PI0_SERVER_REPORT=${PI0_SERVER_REPORT}")
    endforeach()
    add_custom_target(pi0_fuzzers ALL DEPENDS ${_fuzzers})
  endif()
endif()
