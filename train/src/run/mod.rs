//! Running a model: the [`session`] every command shares (device, cache, views, classes,
//! model settings), one training step ([`trainer`]), the loop ([`fit`]), evaluation
//! ([`eval`]), whole recordings ([`predict`], raw videos through [`recordings`]), TorchScript ([`export`]), resume checks ([`resume`]), checkpoint files ([`checkpoint`]) and localisation
//! scoring ([`score`]); how CPU memory is returned to the system ([`allocator`]); the
//! ranks of a multi-process run ([`ranks`]) and the local launcher of `fit --nproc` ([`launcher`]).

pub mod allocator;
pub mod checkpoint;
pub mod eval;
pub mod export;
pub mod fit;
pub mod launcher;
pub mod predict;
pub mod ranks;
pub mod recordings;
pub mod resume;
pub mod score;
pub mod session;
pub mod trainer;
