//! Where `train`'s CPU tensors get their memory, which decides its resident memory and much
//! of the cost of gradient checkpointing on the CPU.
//!
//! libtorch's own CPU allocator is `posix_memalign`, i.e. glibc's malloc. glibc serves a
//! large block with its own `mmap` and returns it on `free`, but only above the *mmap
//! threshold*, and that threshold rises to the size of each mapped block that is freed (up
//! to 32 MiB). After the first freed activation of a step, activations come from the heap,
//! where freed blocks stay resident and fragment: gradient checkpointing, which frees and
//! reallocates activations of every size all through backward, lost most of its saving to
//! it. Fixing the threshold low returns the blocks, but then every block is mapped afresh
//! and page-faulted on each step, which cost up to 2.6x the step time on small tensors.
//!
//! So by default `train` installs a caching allocator of its own (`cpu_allocator.cpp`,
//! registered with `c10::SetCPUAllocator`), the CPU counterpart of PyTorch's CUDA caching
//! allocator: blocks of [`DEFAULT_MIN_BYTES`] and more are mapped with `mmap` (from 2 MiB,
//! aligned and advised as transparent huge pages), kept when freed, and handed out again
//! to a request of about the same size (at most a third wasted), so a training step, which
//! repeats the last one's allocations, neither faults nor fragments. The cache is bounded:
//! mapped bytes never exceed the most that was ever live at once, because a miss that would
//! go above it first unmaps free blocks, least recently freed first. Smaller blocks go to
//! malloc as before. Figures: docs/architecture.md, "Where checkpointing's memory went".
//!
//! `MVDRIVE_CPU_ALLOCATOR` chooses: unset or `caching` (the above), `caching:SIZE` (a
//! different smallest cached block, 4 KiB to 64 MiB), or `glibc` (libtorch's own, what the
//! benchmark compares against).

/// The smallest block the caching allocator maps and keeps, bytes. Smaller ones (biases,
/// norms, small activations) go to malloc: 16-256 KiB measured alike on the transformer.
pub const DEFAULT_MIN_BYTES: usize = 256 << 10;

/// The environment variable that chooses the allocator.
pub const ENV: &str = "MVDRIVE_CPU_ALLOCATOR";

/// What `MVDRIVE_CPU_ALLOCATOR` asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Choice {
    /// The caching allocator, caching blocks of this many bytes and more.
    Caching { min_bytes: usize },
    /// libtorch's own (glibc malloc), left alone.
    Glibc,
}

/// The allocator an `MVDRIVE_CPU_ALLOCATOR` value asks for (`None`: unset).
pub fn parse(value: Option<&str>) -> Result<Choice, String> {
    let bad = |v: &str| {
        format!("{ENV}=`{v}`: give `caching`, `caching:SIZE` (4KiB to 64MiB, e.g. caching:64KiB) or `glibc`")
    };
    match value.map(str::trim) {
        None | Some("") => Ok(Choice::Caching {
            min_bytes: DEFAULT_MIN_BYTES,
        }),
        Some(v) if v.eq_ignore_ascii_case("glibc") => Ok(Choice::Glibc),
        Some(v) if v.eq_ignore_ascii_case("caching") => Ok(Choice::Caching {
            min_bytes: DEFAULT_MIN_BYTES,
        }),
        Some(v) => {
            let size = v
                .split_once(':')
                .filter(|(name, _)| name.eq_ignore_ascii_case("caching"))
                .ok_or_else(|| bad(v))?
                .1;
            mvdrive_common::bytes::parse_bytes(size)
                .ok()
                .and_then(|b| usize::try_from(b).ok())
                .filter(|b| (4096..=(64 << 20)).contains(b))
                .map(|min_bytes| Choice::Caching { min_bytes })
                .ok_or_else(|| bad(v))
        }
    }
}

extern "C" {
    fn mvdrive_cpu_allocator_install(min_bytes: u64) -> i32;
    fn mvdrive_cpu_allocator_stats(out: *mut u64) -> i32;
    fn mvdrive_cpu_allocator_trim();
}

/// Reads `MVDRIVE_CPU_ALLOCATOR` and installs the caching allocator unless it says
/// `glibc`. Call it first in `main`, before any tensor exists.
pub fn tune() -> Result<Choice, String> {
    let choice = parse(std::env::var(ENV).ok().as_deref())?;
    if std::env::var_os("MVDRIVE_MMAP_THRESHOLD").is_some() {
        eprintln!(
            "note: MVDRIVE_MMAP_THRESHOLD is no longer read: train caches its CPU memory itself ({ENV}=glibc turns that off)"
        );
    }
    if let Choice::Caching { min_bytes } = choice {
        install_caching(min_bytes);
    }
    Ok(choice)
}

/// Makes the caching allocator libtorch's CPU allocator from now on, caching blocks of
/// `min_bytes` and more. Returns false if it was already installed (the first call's
/// `min_bytes` stays). Tensors allocated before keep their own allocator's deleter.
pub fn install_caching(min_bytes: usize) -> bool {
    // SAFETY: the shim only registers a heap object that is never freed.
    unsafe { mvdrive_cpu_allocator_install(min_bytes as u64) == 0 }
}

/// The caching allocator's counters, bytes unless named otherwise.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct CachingStats {
    /// Bytes of cached blocks in use by tensors now.
    pub live: u64,
    /// Bytes mapped now (in use or kept free).
    pub mapped: u64,
    /// The most bytes in use at once.
    pub peak_live: u64,
    /// The most bytes mapped at once.
    pub peak_mapped: u64,
    /// Requests served by a kept block (count).
    pub hits: u64,
    /// Requests that mapped a fresh block (count).
    pub misses: u64,
    /// Bytes unmapped so far (evictions and trims).
    pub unmapped: u64,
}

/// The caching allocator's counters, or `None` when it is not installed.
pub fn caching_stats() -> Option<CachingStats> {
    let mut o = [0u64; 7];
    // SAFETY: `o` has the 7 slots the function fills.
    let rc = unsafe { mvdrive_cpu_allocator_stats(o.as_mut_ptr()) };
    (rc == 0).then_some(CachingStats {
        live: o[0],
        mapped: o[1],
        peak_live: o[2],
        peak_mapped: o[3],
        hits: o[4],
        misses: o[5],
        unmapped: o[6],
    })
}

/// Unmaps every free block the caching allocator keeps (nothing when not installed).
pub fn trim() {
    // SAFETY: takes the allocator's own lock; no pointer crosses.
    unsafe { mvdrive_cpu_allocator_trim() }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_allocator_setting_is_read_and_checked() {
        let default = Choice::Caching {
            min_bytes: DEFAULT_MIN_BYTES,
        };
        assert_eq!(parse(None), Ok(default));
        assert_eq!(parse(Some("caching")), Ok(default));
        assert_eq!(parse(Some("glibc")), Ok(Choice::Glibc));
        assert_eq!(
            parse(Some("caching:64KiB")),
            Ok(Choice::Caching {
                min_bytes: 64 << 10
            })
        );
        for bad in [
            "caching:0",
            "caching:1GiB",
            "jemalloc",
            "1MiB",
            "caching:lots",
        ] {
            let e = parse(Some(bad)).unwrap_err();
            assert!(e.contains(ENV) && e.contains(bad), "{e}");
        }
    }
}
