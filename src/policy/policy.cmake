# Policy layer (issue #4): raw robot observation -> actions, as openpi's Policy.infer.
# Included by the top-level CMakeLists.txt before the libraries are made.
enable_language(CXX)
if(NOT CMAKE_CXX_STANDARD)
  set(CMAKE_CXX_STANDARD 17)
  set(CMAKE_CXX_STANDARD_REQUIRED ON)
endif()

set(PI0_POLICY_DIR ${CMAKE_CURRENT_SOURCE_DIR}/src/policy)
target_sources(pi0_obj PRIVATE
  ${PI0_POLICY_DIR}/image_resize.c
  ${PI0_POLICY_DIR}/tokenizer.cc
  ${PI0_POLICY_DIR}/norm_stats.c
  ${PI0_POLICY_DIR}/policy_config.c
  ${PI0_POLICY_DIR}/adapters.c
  ${PI0_POLICY_DIR}/policy.c)
set_source_files_properties(${PI0_POLICY_DIR}/tokenizer.cc PROPERTIES COMPILE_OPTIONS "-Wall;-Wextra")

# SentencePiece (Debian libsentencepiece-dev, tools/deps/policy.apt). Without it the library
# still builds and the tokenizer calls fail with PI0_ERR_UNSUPPORTED.
find_path(SENTENCEPIECE_INCLUDE_DIR sentencepiece_processor.h)
find_library(SENTENCEPIECE_LIBRARY sentencepiece)
if(SENTENCEPIECE_INCLUDE_DIR AND SENTENCEPIECE_LIBRARY)
  target_compile_definitions(pi0_obj PRIVATE PI0_HAVE_SENTENCEPIECE)
  target_include_directories(pi0_obj PRIVATE ${SENTENCEPIECE_INCLUDE_DIR})
  list(APPEND PI0_LINK_LIBS ${SENTENCEPIECE_LIBRARY})
  set(PI0_HAVE_SENTENCEPIECE ON)
else()
  message(WARNING "pi0: libsentencepiece not found: prompts cannot be tokenized (apt-get install libsentencepiece-dev)")
  set(PI0_HAVE_SENTENCEPIECE OFF)
endif()

# CUDA twin of the resize (src/policy/image_resize_cuda.h; the policy itself uses the CPU path).
if(PI0_WITH_CUDA)
  target_sources(pi0_obj PRIVATE ${PI0_POLICY_DIR}/image_resize_cuda.cu)
endif()

# ---- tests --------------------------------------------------------------------
if(BUILD_TESTING)
  set(PI0_POLICY_TESTS ${CMAKE_CURRENT_SOURCE_DIR}/tests/policy)
  # C unit tests of the policy layer.
  add_executable(test_policy ${PI0_POLICY_TESTS}/test_policy.c)
  target_include_directories(test_policy PRIVATE ${CMAKE_CURRENT_SOURCE_DIR}/src ${CMAKE_CURRENT_SOURCE_DIR}/include
                           ${CMAKE_CURRENT_SOURCE_DIR}/tests/c ${CJSON_INCLUDE_DIR})
  target_link_libraries(test_policy PRIVATE pi0_static)
  add_test(NAME test_policy COMMAND test_policy WORKING_DIRECTORY ${CMAKE_CURRENT_SOURCE_DIR})

  # Helper the pytest parity tests drive (resize, tokenize, infer = `pi0 policy-infer`), so that
  # they also run on sanitized builds where Python cannot load the library.
  add_executable(pi0_policy_tool ${PI0_POLICY_TESTS}/policy_tool.c ${CMAKE_CURRENT_SOURCE_DIR}/tools/cli_policy.c)
  target_include_directories(pi0_policy_tool PRIVATE ${CMAKE_CURRENT_SOURCE_DIR}/src ${CMAKE_CURRENT_SOURCE_DIR}/tools
                             ${CMAKE_CURRENT_SOURCE_DIR}/include ${CJSON_INCLUDE_DIR})
  target_link_libraries(pi0_policy_tool PRIVATE pi0_static)

  if(PI0_WITH_CUDA)
    add_executable(test_resize_cuda ${PI0_POLICY_TESTS}/test_resize_cuda.cu)
    target_include_directories(test_resize_cuda PRIVATE ${CMAKE_CURRENT_SOURCE_DIR}/src ${CMAKE_CURRENT_SOURCE_DIR}/include
                               ${CMAKE_CURRENT_SOURCE_DIR}/tests/c)
    target_link_libraries(test_resize_cuda PRIVATE pi0_static)
    set_target_properties(test_resize_cuda PROPERTIES CUDA_ARCHITECTURES "${PI0_CUDA_ARCH}")
    add_test(NAME test_resize_cuda COMMAND test_resize_cuda)
    set_tests_properties(test_resize_cuda PROPERTIES SKIP_RETURN_CODE 77 LABELS gpu)
  endif()

  find_package(Python3 COMPONENTS Interpreter)
  if(Python3_FOUND)
    # The ctypes tests load libpi0.so into Python: not on sanitized builds.
    if(PI0_SANITIZE)
      set(PI0_POLICY_CTYPES 0)
    else()
      set(PI0_POLICY_CTYPES 1)
    endif()
    add_test(NAME pytest_policy
             COMMAND ${Python3_EXECUTABLE} -m pytest -q -p no:cacheprovider ${PI0_POLICY_TESTS}
             WORKING_DIRECTORY ${CMAKE_CURRENT_SOURCE_DIR})
    set_tests_properties(pytest_policy PROPERTIES TIMEOUT 600 ENVIRONMENT
      "PI0_POLICY_TESTS=1;PI0_CLI=$<TARGET_FILE:pi0_cli>;PI0_POLICY_TOOL=$<TARGET_FILE:pi0_policy_tool>;PI0_LIBRARY=$<TARGET_FILE:pi0_shared>;PI0_POLICY_CTYPES=${PI0_POLICY_CTYPES}")
  endif()
endif()
