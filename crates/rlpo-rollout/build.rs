//! With the `cuda-tests` feature, keep `libtorch_cuda.so` linked into the test binaries (see
//! the shared file for why).

include!("../../build_support/cuda_tests_link.rs");
