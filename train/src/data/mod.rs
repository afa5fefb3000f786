//! From the cache to the device: which clips ([`sampler`]), their bytes ([`loader`]), and
//! the model input ([`input`]), augmented for training ([`augment`], [`mix`]).

pub mod augment;
pub mod input;
pub mod loader;
pub mod mix;
pub mod sampler;
