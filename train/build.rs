//! torch-sys sets no rpath, so the `train` binary would not find libtorch at run time
//! without LD_LIBRARY_PATH. torch-sys exports its lib folder as DEP_TCH_LIBTORCH_LIB
//! (visible because torch-sys is a direct dependency). It also compiles the C++ that
//! tch does not cover (the CPU allocator; `backward` with a gradient and clearing a gradient) against that
//! libtorch's headers.
fn main() {
    let Ok(lib) = std::env::var("DEP_TCH_LIBTORCH_LIB") else {
        panic!(
            "mvdrive-train: torch-sys did not report its libtorch folder (DEP_TCH_LIBTORCH_LIB)"
        );
    };
    println!("cargo:rustc-link-arg=-Wl,-rpath={lib}");
    let include = std::path::PathBuf::from(&lib).join("..").join("include");
    cc::Build::new()
        .cpp(true)
        .file("src/run/cpu_allocator.cpp")
        .file("src/optim/autograd.cpp")
        .std("c++17")
        .define("_GLIBCXX_USE_CXX11_ABI", "1")
        .include(&include)
        .warnings(false)
        .compile("mvdrive_train_cpp");
    println!("cargo:rustc-link-search=native={lib}");
    println!("cargo:rustc-link-lib=torch_cpu");
    println!("cargo:rustc-link-lib=c10");
    println!("cargo:rerun-if-changed=src/run/cpu_allocator.cpp");
    println!("cargo:rerun-if-changed=src/optim/autograd.cpp");
    // With the `cuda` feature, keep libtorch_cuda on the link line even though no symbol
    // of it is referenced directly; otherwise CUDA is never available (tch-rs #980).
    if std::env::var("CARGO_FEATURE_CUDA").is_ok() {
        println!("cargo:rustc-link-arg=-Wl,--no-as-needed");
        println!("cargo:rustc-link-arg=-ltorch_cuda");
        println!("cargo:rustc-link-arg=-ltorch");
    }
    println!("cargo:rerun-if-changed=build.rs");
}
