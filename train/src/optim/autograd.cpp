// The autograd calls tch does not expose: `out.backward(grad)` (gradient checkpointing
// hands each recomputed segment the gradient of its output) and setting a gradient to
// none (PyTorch's `zero_grad(set_to_none=True)`). See train/src/optim/autograd.rs.
#include <ATen/Context.h>
#include <ATen/core/Tensor.h>

#include <cstring>
#include <exception>

namespace {

// `msg` into `err`, truncated to `err_len - 1` bytes and NUL-terminated.
void copy_message(const char* msg, char* err, size_t err_len) {
  if (err_len == 0) return;
  std::strncpy(err, msg, err_len - 1);
  err[err_len - 1] = '\0';
}

}  // namespace

extern "C" {

/// Runs `out->backward(*grad)`. Returns 0, or 1 with the error message in `err`
/// (truncated to `err_len - 1` bytes and NUL-terminated).
int mvdrive_backward_with_grad(const at::Tensor* out, const at::Tensor* grad, char* err,
                               size_t err_len) {
  try {
    out->backward(*grad);
    return 0;
  } catch (const std::exception& e) {
    copy_message(e.what(), err, err_len);
  } catch (...) {
    // Nothing may unwind into Rust.
    copy_message("unknown C++ exception", err, err_len);
  }
  return 1;
}

/// Drops the gradient of `t` (it becomes undefined, its memory is freed unless another
/// handle holds it). Cannot fail: `mutable_grad` on a tensor without autograd metadata
/// creates it, and an undefined `t` is left alone.
void mvdrive_clear_grad(const at::Tensor* t) {
  if (t->defined()) t->mutable_grad().reset();
}

/// Lets convolutions whose backward runs from now on use oneDNN (`on` != 0), or not (ATen's
/// own kernels). The choice is ATen's global flag, read when each convolution's backward
/// picks its kernel. Returns the previous setting (0 or 1).
int mvdrive_set_onednn_conv(int on) {
  at::Context& ctx = at::globalContext();
  int was = ctx.userEnabledMkldnn() ? 1 : 0;
  ctx.setUserEnabledMkldnn(on != 0);
  return was;
}

}  // extern "C"
