//! How `train` asks glibc's malloc to hand memory back, which decides its resident memory on
//! the CPU (libtorch's CPU tensors come from `posix_memalign`).
//!
//! glibc serves a large block with its own `mmap` and returns it to the system on `free`,
//! but only above the *mmap threshold*, and that threshold is dynamic: each time a mapped
//! block is freed, it rises to that block's size (up to 32 MiB). After the first freed
//! activation of a training step, later activations of up to that size come from the heap,
//! where freed blocks stay resident and fragment. Gradient checkpointing frees and
//! reallocates activations of every size all through backward, so it suffers most: measured
//! on R(2+1)D-18 (batch 4, 8 x 112x112, `make bench-memory`), checkpointing's peak above
//! baseline was 1526 MiB with the dynamic threshold and 1075 MiB with a fixed 64 KiB one.
//!
//! A fixed threshold (setting it turns the dynamic rise off) avoids that. Mapping every large block afresh costs page faults, though: alone, a fixed
//! threshold made that checkpointed step 1.3-1.45x slower. glibc's `glibc.malloc.hugetlb=1`
//! tunable (glibc 2.35+) asks for transparent huge pages on those mappings, which takes the
//! faults down 512-fold and the step time back to the dynamic threshold's (5.65 s against
//! 5.7-6.3 s, 1073 MiB). Tunables are read when a process starts, so [`tune`] re-executes
//! the program once at start with the tunable added to `GLIBC_TUNABLES`.
//!
//! The fixed threshold costs time where tensors are small and memory is not the point (the
//! demo's 64x64 R(2+1)D: 25.5 -> 36 s per epoch), so by default it is set only when a
//! [`crate::run::trainer::Trainer`] is built with gradient checkpointing on: a user who asks
//! for checkpointing asks for memory. The huge-page tunable is harmless without it (26.7 s).
//!
//! `MVDRIVE_MMAP_THRESHOLD`: unset, the above; a size (`1MiB`), that fixed threshold for
//! every run; `glibc`, glibc's own dynamic behaviour, no huge pages and no re-execution
//! (what the benchmark compares against).

use std::sync::OnceLock;

/// The fixed mmap threshold set for checkpointing, bytes.
pub const DEFAULT_MMAP_THRESHOLD: usize = 64 << 10;

/// The environment variable that overrides the default.
pub const ENV: &str = "MVDRIVE_MMAP_THRESHOLD";

/// What `MVDRIVE_MMAP_THRESHOLD` asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Tuning {
    /// Unset: [`DEFAULT_MMAP_THRESHOLD`] once checkpointing is on.
    Checkpointing,
    /// This fixed threshold for every run, bytes.
    Fixed(usize),
    /// glibc's dynamic threshold, left alone.
    Glibc,
}

static TUNING: OnceLock<Tuning> = OnceLock::new();

/// The tuning an `MVDRIVE_MMAP_THRESHOLD` value asks for (`None`: unset).
pub fn parse(value: Option<&str>) -> Result<Tuning, String> {
    match value.map(str::trim) {
        None | Some("") => Ok(Tuning::Checkpointing),
        Some(v) if v.eq_ignore_ascii_case("glibc") => Ok(Tuning::Glibc),
        Some(v) => mvdrive_common::bytes::parse_bytes(v)
            .ok()
            .and_then(|b| usize::try_from(b).ok())
            .filter(|b| (4096..=(32 << 20)).contains(b))
            .map(Tuning::Fixed)
            .ok_or_else(|| {
                format!("{ENV}=`{v}`: give a size from 4 KiB to 32 MiB (e.g. 64KiB), or `glibc`")
            }),
    }
}

/// The glibc tunable that asks for transparent huge pages on malloc's mappings.
const HUGETLB: &str = "glibc.malloc.hugetlb=1";

fn set_threshold(bytes: usize) {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        let bytes = i32::try_from(bytes).unwrap_or(i32::MAX);
        // SAFETY: mallopt only changes malloc's parameters (under malloc's own lock).
        unsafe {
            libc::mallopt(libc::M_MMAP_THRESHOLD, bytes);
        }
    }
    #[cfg(not(all(target_os = "linux", target_env = "gnu")))]
    let _ = bytes;
}

/// Reads `MVDRIVE_MMAP_THRESHOLD`, re-executes the program with the huge-page tunable when
/// it is not glibc's own behaviour (if that fails, it goes on without), and fixes the
/// threshold now when a size was given. Call it first in `main`, before any thread exists.
pub fn tune() -> Result<Tuning, String> {
    let tuning = parse(std::env::var(ENV).ok().as_deref())?;
    let _ = TUNING.set(tuning);
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    if tuning != Tuning::Glibc {
        let tunables = std::env::var("GLIBC_TUNABLES").unwrap_or_default();
        if !tunables.contains("glibc.malloc.hugetlb") {
            use std::os::unix::process::CommandExt;
            let joined = if tunables.is_empty() {
                HUGETLB.to_string()
            } else {
                format!("{tunables}:{HUGETLB}")
            };
            let mut args = std::env::args_os();
            let argv0 = args.next();
            // exec only returns on failure: then run as we are.
            let _ = std::process::Command::new("/proc/self/exe")
                .arg0(argv0.unwrap_or_else(|| "train".into()))
                .args(args)
                .env("GLIBC_TUNABLES", joined)
                .exec();
        }
    }
    if let Tuning::Fixed(bytes) = tuning {
        set_threshold(bytes);
    }
    Ok(tuning)
}

/// Called when training with gradient checkpointing starts: fixes the threshold at
/// [`DEFAULT_MMAP_THRESHOLD`] unless `MVDRIVE_MMAP_THRESHOLD` said otherwise.
pub fn for_checkpointing() {
    let tuning =
        *TUNING.get_or_init(|| parse(std::env::var(ENV).ok().as_deref()).unwrap_or(Tuning::Glibc));
    if tuning == Tuning::Checkpointing {
        set_threshold(DEFAULT_MMAP_THRESHOLD);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_threshold_setting_is_read_and_checked() {
        assert_eq!(parse(None), Ok(Tuning::Checkpointing));
        assert_eq!(parse(Some("glibc")), Ok(Tuning::Glibc));
        assert_eq!(parse(Some("1MiB")), Ok(Tuning::Fixed(1 << 20)));
        for bad in ["0", "64MiB", "lots"] {
            let e = parse(Some(bad)).unwrap_err();
            assert!(e.contains(ENV) && e.contains(bad), "{e}");
        }
    }
}
