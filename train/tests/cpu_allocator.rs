//! The caching CPU allocator (`run/allocator.rs`, `run/cpu_allocator.cpp`), installed in
//! this test binary's own process: freed blocks are kept and handed out again, mapped
//! memory never exceeds the most that was live at once, small blocks go to malloc, and
//! tensors and autograd work through it.

use mvdrive_train::run::allocator::{caching_stats, install_caching, trim};
use tch::{Device, Kind, Tensor};

const MIB: i64 = 1 << 20;

/// A float tensor of `bytes` (a multiple of 4) filled with `value`.
fn filled(bytes: i64, value: f64) -> Tensor {
    Tensor::full([bytes / 4], value, (Kind::Float, Device::Cpu))
}

/// `train info` run with `var` set to `value` (or unset): success, stdout, stderr.
fn train_info(var: &str, value: Option<&str>) -> (bool, String, String) {
    let mut c = std::process::Command::new(env!("CARGO_BIN_EXE_train"));
    c.arg("info");
    match value {
        Some(v) => c.env(var, v),
        None => c.env_remove(var),
    };
    let o = c.output().unwrap();
    let text = |b: &[u8]| String::from_utf8_lossy(b).into_owned();
    (o.status.success(), text(&o.stdout), text(&o.stderr))
}

// One test: the allocator and its counters are global to the process.
#[test]
fn the_caching_allocator_reuses_bounds_and_returns_memory() {
    assert!(caching_stats().is_none(), "not installed yet");
    assert!(install_caching(64 << 10));
    assert!(!install_caching(1 << 20), "a second install is refused");
    let start = caching_stats().expect("installed");
    assert_eq!(start.live, 0);

    // A 1 MiB tensor maps a block; freed, it stays mapped; the next one of the same size
    // takes it (a hit) with no new mapping, and reads back what was written.
    let a = filled(MIB, 1.0);
    let s1 = caching_stats().unwrap();
    assert_eq!(s1.live, MIB as u64);
    assert_eq!(s1.misses, start.misses + 1);
    drop(a);
    let s2 = caching_stats().unwrap();
    assert_eq!((s2.live, s2.mapped), (0, s1.mapped));
    let b = filled(MIB, 2.0);
    let s3 = caching_stats().unwrap();
    assert_eq!(s3.hits, s2.hits + 1);
    assert_eq!(s3.mapped, s2.mapped);
    assert_eq!(
        b.sum(Kind::Double).double_value(&[]),
        2.0 * (MIB / 4) as f64
    );
    // A slightly smaller request fits the same kept block (under a third wasted).
    drop(b);
    let c = filled(MIB - 64 * 1024, 3.0);
    assert_eq!(caching_stats().unwrap().hits, s3.hits + 1);
    drop(c);

    // Small tensors (under the 64 KiB minimum) are malloc's, not counted.
    let small = filled(4096, 1.0);
    assert_eq!(caching_stats().unwrap().live, 0);
    drop(small);

    // The bound: with 1 MiB kept free and 1 MiB the most ever live, an 8 MiB request
    // would map 9 MiB where at most 8 are live: the free block is unmapped first.
    let d = filled(8 * MIB, 1.0);
    let s4 = caching_stats().unwrap();
    assert_eq!(s4.live, 8 * MIB as u64);
    assert_eq!(s4.mapped, 8 * MIB as u64, "{s4:?}");
    assert!(s4.unmapped >= MIB as u64);
    assert!(s4.peak_mapped <= s4.peak_live.max(s1.mapped) + MIB as u64);
    drop(d);

    // Autograd through the allocator: the gradient of sum(x * w) with respect to w is x.
    let x = Tensor::randn([256, 256], (Kind::Float, Device::Cpu));
    let w = Tensor::randn([256, 256], (Kind::Float, Device::Cpu)).set_requires_grad(true);
    (&x * &w).sum(Kind::Float).backward();
    assert!(w.grad().allclose(&x, 0.0, 0.0, false));
    drop((x, w));

    // Nothing live: trim hands every kept block back.
    assert_eq!(caching_stats().unwrap().live, 0);
    trim();
    let end = caching_stats().unwrap();
    assert_eq!((end.live, end.mapped), (0, 0), "{end:?}");
}

/// The `train` binary installs the allocator at start unless told `glibc`, and a bad
/// setting is a one-line error naming the variable.
#[test]
fn the_train_binary_chooses_its_allocator_from_the_environment() {
    let info = |value: Option<&str>| train_info("MVDRIVE_CPU_ALLOCATOR", value);
    let (ok, out, _) = info(None);
    assert!(ok && out.contains("cpu allocator:  caching"), "{out}");
    let (ok, out, _) = info(Some("caching:64KiB"));
    assert!(ok && out.contains("cpu allocator:  caching"), "{out}");
    let (ok, out, _) = info(Some("glibc"));
    assert!(
        ok && out.contains("cpu allocator:  libtorch's own"),
        "{out}"
    );
    assert_refused("MVDRIVE_CPU_ALLOCATOR", "caching:1GiB");
}

/// `MVDRIVE_CONV_BACKWARD` chooses how weight-heavy convolutions back-propagate (`train
/// info` says which); anything else is a one-line error naming the variable.
#[test]
fn the_train_binary_chooses_its_convolution_backward_from_the_environment() {
    let info = |value: Option<&str>| train_info("MVDRIVE_CONV_BACKWARD", value);
    for value in [None, Some("auto"), Some(" AUTO ")] {
        let (ok, out, _) = info(value);
        assert!(
            ok && out.contains("conv backward:  ATen's kernels"),
            "{value:?}: {out}"
        );
    }
    let (ok, out, _) = info(Some("onednn"));
    assert!(
        ok && out.contains("conv backward:  oneDNN for every"),
        "{out}"
    );
    assert_refused("MVDRIVE_CONV_BACKWARD", "fast");
}

/// `train info` with `var=value` fails with a one-line error quoting both.
fn assert_refused(var: &str, value: &str) {
    let (ok, _, err) = train_info(var, Some(value));
    assert!(!ok, "{var}={value} is refused");
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(err.contains(&format!("{var}=`{value}`")), "{err}");
}
