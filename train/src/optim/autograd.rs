//! Autograd calls that tch does not expose, through a small C++ shim (`autograd.cpp`,
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
    fn mvdrive_set_onednn_conv(on: i32) -> i32;
}

/// While it lives, the backward of a CPU convolution runs on ATen's own kernels instead of
/// oneDNN's (ATen's global switch, read when each convolution's backward picks its
/// kernel); dropping it restores the previous setting. For a convolution with more
/// weights than unfolded input, oneDNN's backward holds about nine weight-sized buffers
/// and ATen's about one unfolded input (see
/// [`crate::model::backbones::take_weight_heavy_mark`]). The flag is process-wide: a
/// convolution another thread runs meanwhile takes ATen's kernels too.
#[must_use = "the setting lasts only while the guard lives"]
pub struct NativeConvBackward {
    was: i32,
}

/// The environment variable that chooses how the `train` binary back-propagates
/// weight-heavy CPU convolutions: unset or `auto` (on ATen's kernels, see
/// [`NativeConvBackward`]) or `onednn` (oneDNN's, libtorch's default, what the figures
/// compare against).
pub const CONV_BACKWARD_ENV: &str = "MVDRIVE_CONV_BACKWARD";

static NATIVE_CONV_BACKWARD: std::sync::atomic::AtomicBool =
    std::sync::atomic::AtomicBool::new(false);

/// Lets the segment-by-segment backward ([`crate::optim::recompute`], checkpointing on or
/// off) run weight-heavy segments on ATen's kernels (`true`) or not; returns the previous
/// setting. Off until called: the switch it flips is ATen's process-wide flag, so turn it
/// on only where one thread runs every convolution of the process while a step runs, as in
/// the `train` binary, whose loader threads run none (a test binary's parallel tests, for
/// one, do not).
pub fn set_native_conv_backward(on: bool) -> bool {
    NATIVE_CONV_BACKWARD.swap(on, std::sync::atomic::Ordering::Relaxed)
}

/// Reads [`CONV_BACKWARD_ENV`] once, at the `train` binary's start, and sets
/// [`set_native_conv_backward`] from it; an unknown value is an error naming it.
pub fn tune_conv_backward() -> Result<(), String> {
    let native = match std::env::var(CONV_BACKWARD_ENV)
        .ok()
        .as_deref()
        .map(str::trim)
    {
        None | Some("") => true,
        Some(v) if v.eq_ignore_ascii_case("auto") => true,
        Some(v) if v.eq_ignore_ascii_case("onednn") => false,
        Some(v) => {
            return Err(format!(
                "{CONV_BACKWARD_ENV}=`{v}`: give `auto` or `onednn`"
            ))
        }
    };
    set_native_conv_backward(native);
    Ok(())
}

impl NativeConvBackward {
    /// Whether weight-heavy convolutions back-propagate on ATen's kernels
    /// ([`set_native_conv_backward`]).
    pub fn allowed() -> bool {
        NATIVE_CONV_BACKWARD.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Switches oneDNN convolutions off until the guard is dropped.
    pub fn enter() -> NativeConvBackward {
        // SAFETY: flips a flag in ATen's global context; no pointer crosses.
        NativeConvBackward {
            was: unsafe { mvdrive_set_onednn_conv(0) },
        }
    }
}

impl Drop for NativeConvBackward {
    fn drop(&mut self) {
        // SAFETY: as in `enter`.
        unsafe { mvdrive_set_onednn_conv(self.was) };
    }
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
