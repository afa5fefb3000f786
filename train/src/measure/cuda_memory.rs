//! GPU memory in use, for the progress bar: `cudaMemGetInfo` from the CUDA runtime that
//! libtorch already loaded (looked up at run time, so CPU-only builds need no CUDA).

use std::ffi::{c_int, c_void, CString};

type MemGetInfo = unsafe extern "C" fn(*mut usize, *mut usize) -> c_int;

/// Bytes in use on the current CUDA device (total - free), or `None` without CUDA.
pub fn used_bytes() -> Option<u64> {
    if !tch::Cuda::is_available() {
        return None;
    }
    for name in ["libcudart.so.13", "libcudart.so.12", "libcudart.so"] {
        let lib = CString::new(name).ok()?;
        // SAFETY: dlopen/dlsym with valid C strings; the symbol has cudaMemGetInfo's
        // documented signature, and both out-pointers point to live locals.
        unsafe {
            let handle: *mut c_void =
                libc::dlopen(lib.as_ptr(), libc::RTLD_NOW | libc::RTLD_NOLOAD);
            let handle = if handle.is_null() {
                libc::dlopen(lib.as_ptr(), libc::RTLD_NOW)
            } else {
                handle
            };
            if handle.is_null() {
                continue;
            }
            let sym = CString::new("cudaMemGetInfo").ok()?;
            let f = libc::dlsym(handle, sym.as_ptr());
            if f.is_null() {
                continue;
            }
            let f: MemGetInfo = std::mem::transmute::<*mut c_void, MemGetInfo>(f);
            let (mut free, mut total) = (0usize, 0usize);
            if f(&mut free, &mut total) == 0 {
                return Some(total.saturating_sub(free) as u64);
            }
        }
    }
    None
}
