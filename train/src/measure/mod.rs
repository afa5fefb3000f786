//! Measurements: [`probe`] (real steps of one setting in a child process), [`plan`]
//! (settings within a memory budget), [`bench_memory`] and [`bench_loader`] (benchmarks),
//! [`cuda_memory`] (device memory in use).

pub mod bench_loader;
pub mod bench_memory;
pub mod cuda_memory;
pub mod plan;
pub mod probe;

/// `train info`: the libtorch build this binary links and the devices it can see.
pub fn info() {
    println!("mvdrive train {}", env!("CARGO_PKG_VERSION"));
    println!("tch 0.24.0 (libtorch 2.11.0)");
    println!("cuda available: {}", tch::Cuda::is_available());
    println!("cuda devices:   {}", tch::Cuda::device_count());
    let allocator = match crate::run::allocator::caching_stats() {
        Some(_) => format!(
            "caching ({}=glibc turns it off)",
            crate::run::allocator::ENV
        ),
        None => "libtorch's own (glibc malloc)".to_string(),
    };
    println!("cpu allocator:  {allocator}");
    let env = crate::optim::autograd::CONV_BACKWARD_ENV;
    if crate::optim::autograd::NativeConvBackward::allowed() {
        println!("conv backward:  ATen's kernels for weight-heavy convolutions ({env}=onednn turns it off)");
    } else {
        println!("conv backward:  oneDNN for every convolution ({env}=onednn)");
    }
    println!(
        "cpu bfloat16:   {}",
        if crate::optim::precision::cpu_has_bf16_kernels() {
            "fast kernels (AVX-512)"
        } else {
            "slow path (no AVX-512): prefer trainer.precision=32 on this CPU"
        }
    );
    let t = tch::Tensor::from_slice(&[1.0f32, 2.0, 3.0]);
    println!(
        "cpu tensor check: sum([1,2,3]) = {}",
        t.sum(tch::Kind::Float).double_value(&[])
    );
}
