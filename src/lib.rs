//! End-to-end tests for mvdrive live in `tests/`; this crate has no code of its own.
