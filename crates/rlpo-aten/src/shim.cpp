// C entry points for the ATen ops rlpo needs and tch 0.24 does not bind. Tensors cross as
// `at::Tensor*` (tch's `C_tensor`); every function catches C++ exceptions and returns them as a
// malloc'd message (nullptr on success), freed by rlpo_aten_free.
#include <ATen/core/Tensor.h>
#include <ATen/ops/_foreach_copy.h>
#include <ATen/ops/_foreach_mul.h>
#include <ATen/ops/_foreach_norm.h>
#include <ATen/ops/_fused_adamw.h>
#include <cstdlib>
#include <cstring>
#include <vector>

namespace {
std::vector<at::Tensor> list(at::Tensor* const* ts, size_t n) {
  std::vector<at::Tensor> v;
  v.reserve(n);
  for (size_t i = 0; i < n; i++) v.push_back(*ts[i]);
  return v;
}
char* error(const char* what) {
  size_t len = std::strlen(what);
  char* out = static_cast<char*>(std::malloc(len + 1));
  if (out) std::memcpy(out, what, len + 1);
  return out;
}
template <class F>
char* guard(F f) {
  try {
    f();
    return nullptr;
  } catch (const std::exception& e) {
    return error(e.what());
  } catch (...) {
    return error("unknown C++ exception");
  }
}
}  // namespace

extern "C" {

char* rlpo_aten_fused_adamw(at::Tensor* const* params, at::Tensor* const* grads, at::Tensor* const* exp_avgs,
                            at::Tensor* const* exp_avg_sqs, at::Tensor* const* state_steps, size_t n, double lr,
                            double beta1, double beta2, double weight_decay, double eps) {
  return guard([&] {
    auto p = list(params, n), g = list(grads, n), m = list(exp_avgs, n), v = list(exp_avg_sqs, n),
         s = list(state_steps, n);
    at::_fused_adamw_(p, g, m, v, {}, s, lr, beta1, beta2, weight_decay, eps, /*amsgrad=*/false,
                      /*maximize=*/false);
  });
}

char* rlpo_aten_foreach_copy(at::Tensor* const* dst, at::Tensor* const* src, size_t n) {
  return guard([&] {
    auto d = list(dst, n), s = list(src, n);
    at::_foreach_copy_(d, s, /*non_blocking=*/false);
  });
}

char* rlpo_aten_foreach_mul_scalar(at::Tensor* const* ts, size_t n, double scalar) {
  return guard([&] {
    auto t = list(ts, n);
    at::_foreach_mul_(t, scalar);
  });
}

// The L2 norm of each tensor, written to out[i] as a new at::Tensor* (owned by the caller).
char* rlpo_aten_foreach_norm(at::Tensor* const* ts, size_t n, at::Tensor** out) {
  return guard([&] {
    auto norms = at::_foreach_norm(list(ts, n), 2);
    for (size_t i = 0; i < n; i++) out[i] = new at::Tensor(norms[i]);
  });
}

void rlpo_aten_free(char* p) { std::free(p); }
}
