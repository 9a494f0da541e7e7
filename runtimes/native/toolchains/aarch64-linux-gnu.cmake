# Cross-compiling runtimes/native for 64-bit Arm Linux (glibc) with Debian's cross compiler:
#   apt-get install g++-aarch64-linux-gnu libc6-dev-arm64-cross
# ExecuTorch comes from its manylinux aarch64 wheel, unpacked, named by -Dexecutorch_DIR (its config file is
# found there directly, so the find-root rules below do not hide it). The programs run on an arm64 board or
# phone shell, or here under `qemu-aarch64 -cpu cortex-a53 -L /usr/aarch64-linux-gnu`.
set(CMAKE_SYSTEM_NAME Linux)
set(CMAKE_SYSTEM_PROCESSOR aarch64)
set(SEQEDGE_CROSS_PREFIX aarch64-linux-gnu-)
set(CMAKE_C_COMPILER ${SEQEDGE_CROSS_PREFIX}gcc)
set(CMAKE_CXX_COMPILER ${SEQEDGE_CROSS_PREFIX}g++)
set(CMAKE_FIND_ROOT_PATH /usr/aarch64-linux-gnu)
set(CMAKE_FIND_ROOT_PATH_MODE_PROGRAM NEVER)
set(CMAKE_FIND_ROOT_PATH_MODE_LIBRARY ONLY)
set(CMAKE_FIND_ROOT_PATH_MODE_INCLUDE ONLY)
set(CMAKE_FIND_ROOT_PATH_MODE_PACKAGE ONLY)
# a JDK on the build machine has x86-64 headers and libraries: no JNI bridge in a cross build
set(SEQEDGE_JNI OFF CACHE BOOL "" FORCE)
