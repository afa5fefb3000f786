// Back-propagation from a tensor with a given gradient (`out.backward(grad)`), which tch
// does not expose: gradient checkpointing hands each recomputed segment the gradient of
// its output. See train/src/optim/recompute.rs.
#include <ATen/core/Tensor.h>

#include <cstring>
#include <exception>

extern "C" {

/// Runs `out->backward(*grad)`. Returns 0, or 1 with the error message in `err`
/// (truncated to `err_len - 1` bytes and NUL-terminated).
int mvdrive_backward_with_grad(const at::Tensor* out, const at::Tensor* grad, char* err,
                               size_t err_len) {
  try {
    out->backward(*grad);
    return 0;
  } catch (const std::exception& e) {
    if (err_len > 0) {
      std::strncpy(err, e.what(), err_len - 1);
      err[err_len - 1] = '\0';
    }
    return 1;
  }
}

}  // extern "C"
