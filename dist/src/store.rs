//! A rendezvous store served by the process that launches the ranks (torchrun's "agent
//! store"): the ranks, rank 0 too, join it as clients (`TORCHELASTIC_USE_AGENT_STORE=True`).
//! Binding port 0 lets the kernel choose a free port atomically, so two launches on one
//! machine never race for the same one.

use std::ffi::{c_char, c_int, c_longlong, c_void};
use std::ptr::NonNull;
use std::time::Duration;

use crate::group::{message, ERR_LEN};
use crate::DistError;

mod ffi {
    use super::*;
    extern "C" {
        pub fn mvd_store_serve(
            host: *const c_char,
            port: c_int,
            timeout_ms: c_longlong,
            bound: *mut c_int,
            err: *mut c_char,
            err_len: usize,
        ) -> *mut c_void;
        pub fn mvd_store_free(s: *mut c_void);
    }
}

/// A c10d `TCPStore` served by this process until it is dropped.
#[derive(Debug)]
pub struct Store {
    raw: NonNull<c_void>,
    port: u16,
}

// The store's server runs on its own thread; this handle only keeps it alive.
unsafe impl Send for Store {}
unsafe impl Sync for Store {}

impl Store {
    /// Serves a store on `port` of every local address (0: a free port the kernel picks; see
    /// [`Store::port`]). `timeout` bounds the clients' waits on its keys.
    pub fn serve(port: u16, timeout: Duration) -> Result<Store, DistError> {
        let mut bound: c_int = 0;
        let mut err = vec![0u8; ERR_LEN];
        let raw = unsafe {
            ffi::mvd_store_serve(
                c"127.0.0.1".as_ptr(),
                port as c_int,
                timeout.as_millis().min(i64::MAX as u128) as c_longlong,
                &mut bound,
                err.as_mut_ptr() as *mut c_char,
                ERR_LEN,
            )
        };
        let raw = NonNull::new(raw).ok_or_else(|| DistError::Serve {
            port,
            msg: message(&err),
            hint: if port == 0 {
                ""
            } else {
                "; is another run using it? Choose another MASTER_PORT, or unset it for a free one"
            },
        })?;
        let port = u16::try_from(bound).map_err(|_| DistError::Serve {
            port,
            msg: format!("c10d reports port {bound}"),
            hint: "",
        })?;
        Ok(Store { raw, port })
    }

    /// The port the store listens on.
    pub fn port(&self) -> u16 {
        self.port
    }
}

impl Drop for Store {
    fn drop(&mut self) {
        unsafe { ffi::mvd_store_free(self.raw.as_ptr()) }
    }
}
