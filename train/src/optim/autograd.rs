//! Two autograd calls that tch does not expose, through a small C++ shim (`autograd.cpp`,
//! compiled by `build.rs` against libtorch's headers).

use tch::Tensor;

extern "C" {
    fn mvdrive_backward_with_grad(
        out: *const torch_sys::C_tensor,
        grad: *const torch_sys::C_tensor,
        err: *mut std::ffi::c_char,
        err_len: usize,
    ) -> i32;
    fn mvdrive_clear_grad(t: *const torch_sys::C_tensor);
}

/// Back-propagates from `out` with `grad` as its gradient (`out.backward(grad)` in
/// PyTorch). Panics, like tch's `backward`, if autograd fails (shapes are ours, not the
/// user's: `grad` is the gradient autograd computed for this very output).
pub fn backward_with_grad(out: &Tensor, grad: &Tensor) {
    let mut err = [0 as std::ffi::c_char; 512];
    // SAFETY: both pointers are live at::Tensor handles owned by tch for the whole call;
    // `err` is a writable buffer of the length passed.
    let rc = unsafe {
        mvdrive_backward_with_grad(out.as_ptr(), grad.as_ptr(), err.as_mut_ptr(), err.len())
    };
    if rc != 0 {
        // SAFETY: the shim NUL-terminates the message within the buffer.
        let msg = unsafe { std::ffi::CStr::from_ptr(err.as_ptr()) };
        panic!(
            "backward of a recomputed segment: {}",
            msg.to_string_lossy()
        );
    }
}

/// Sets the gradient of `t` to none (undefined), freeing it, as PyTorch's
/// `zero_grad(set_to_none=True)` does: the next backward allocates it again when it has
/// something to write, so between steps (and through the next forward) no gradient
/// memory is held.
pub fn clear_grad(t: &Tensor) {
    // SAFETY: `t` is a live at::Tensor handle owned by tch for the whole call.
    unsafe { mvdrive_clear_grad(t.as_ptr()) }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tch::{Device, Kind};

    #[test]
    fn backward_with_a_gradient_and_clearing_it() {
        let w = Tensor::from_slice(&[1.0f32, 2.0, 3.0]).set_requires_grad(true);
        let out = &w * &w;
        backward_with_grad(&out, &Tensor::from_slice(&[1.0f32, 10.0, 100.0]));
        // d(w^2)/dw * grad = 2w * grad.
        let g: Vec<f32> = Vec::try_from(w.grad()).unwrap();
        assert_eq!(g, [2.0, 40.0, 600.0]);
        clear_grad(&w);
        assert!(!w.grad().defined());
        // The next backward starts afresh instead of accumulating onto the old gradient.
        (&w * 2.0).sum(Kind::Float).backward();
        let g: Vec<f32> = Vec::try_from(w.grad()).unwrap();
        assert_eq!(g, [2.0, 2.0, 2.0]);
        // Clearing a tensor that never had a gradient is harmless.
        let plain = Tensor::zeros([2], (Kind::Float, Device::Cpu));
        clear_grad(&plain);
        assert!(!plain.grad().defined());
    }
}
