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
//! [`tune`] therefore fixes the threshold at program start (setting it turns the dynamic
//! rise off). Mapping every large block afresh costs page faults, though: alone, a fixed
//! threshold made that checkpointed step 1.3-1.45x slower. glibc's `glibc.malloc.hugetlb=1`
//! tunable (glibc 2.35+) asks for transparent huge pages on those mappings, which takes the
//! faults down 512-fold and the step time back to the dynamic threshold's (5.65 s against
//! 5.7-6.3 s, 1073 MiB). Tunables are read when a process starts, so [`tune`] re-executes
//! the program once with the tunable added to `GLIBC_TUNABLES`.
//!
//! `MVDRIVE_MMAP_THRESHOLD` overrides the threshold: a size in bytes, or `glibc` for glibc's
//! own dynamic behaviour, no huge pages and no re-execution (what the benchmark compares
//! against).

/// The default fixed mmap threshold, bytes.
pub const DEFAULT_MMAP_THRESHOLD: usize = 64 << 10;

/// The environment variable that overrides [`DEFAULT_MMAP_THRESHOLD`].
pub const ENV: &str = "MVDRIVE_MMAP_THRESHOLD";

/// What [`tune`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Tuning {
    /// The mmap threshold was fixed at this many bytes.
    Fixed(usize),
    /// glibc's dynamic threshold was left alone.
    Glibc,
}

/// The tuning an `MVDRIVE_MMAP_THRESHOLD` value asks for (`None`: unset).
pub fn parse(value: Option<&str>) -> Result<Tuning, String> {
    match value.map(str::trim) {
        None | Some("") => Ok(Tuning::Fixed(DEFAULT_MMAP_THRESHOLD)),
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

/// Applies `MVDRIVE_MMAP_THRESHOLD` (default: a fixed 64 KiB threshold, with huge pages).
/// Call it first in `main`, before any thread or tensor exists: it may replace the process
/// (re-executing it with `GLIBC_TUNABLES` extended); if that fails, it goes on without.
pub fn tune() -> Result<Tuning, String> {
    let tuning = parse(std::env::var(ENV).ok().as_deref())?;
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    if let Tuning::Fixed(bytes) = tuning {
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
        let bytes = i32::try_from(bytes).unwrap_or(i32::MAX);
        // SAFETY: mallopt only changes malloc's parameters; called before other threads run.
        unsafe {
            libc::mallopt(libc::M_MMAP_THRESHOLD, bytes);
        }
    }
    Ok(tuning)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_threshold_setting_is_read_and_checked() {
        assert_eq!(parse(None), Ok(Tuning::Fixed(DEFAULT_MMAP_THRESHOLD)));
        assert_eq!(parse(Some("glibc")), Ok(Tuning::Glibc));
        assert_eq!(parse(Some("1MiB")), Ok(Tuning::Fixed(1 << 20)));
        for bad in ["0", "64MiB", "lots"] {
            let e = parse(Some(bad)).unwrap_err();
            assert!(e.contains(ENV) && e.contains(bad), "{e}");
        }
    }
}
