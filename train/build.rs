//! torch-sys sets no rpath, so the `train` binary would not find libtorch at run time
//! without LD_LIBRARY_PATH. torch-sys exports its lib folder as DEP_TCH_LIBTORCH_LIB
//! (visible because torch-sys is a direct dependency).
fn main() {
    if let Ok(lib) = std::env::var("DEP_TCH_LIBTORCH_LIB") {
        println!("cargo:rustc-link-arg=-Wl,-rpath={lib}");
    }
    // With the `cuda` feature, keep libtorch_cuda on the link line even though no symbol
    // of it is referenced directly; otherwise CUDA is never available (tch-rs #980).
    if std::env::var("CARGO_FEATURE_CUDA").is_ok() {
        println!("cargo:rustc-link-arg=-Wl,--no-as-needed");
        println!("cargo:rustc-link-arg=-ltorch_cuda");
        println!("cargo:rustc-link-arg=-ltorch");
    }
    println!("cargo:rerun-if-changed=build.rs");
}
