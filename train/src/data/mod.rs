//! From the cache to the device: which clips ([`sampler`]), their bytes ([`loader`]), and
//! the model input ([`input`]).

pub mod augment;
pub mod input;
pub mod loader;
pub mod sampler;
