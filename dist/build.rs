//! Compiles the C++ shim (src/shim.cpp) against the libtorch that torch-sys links: its
//! c10d headers come with the torch wheel, gloo's from Debian's `libgloo-dev`
//! (`make setup`). torch-sys exports its lib folder as DEP_TCH_LIBTORCH_LIB.
use std::path::PathBuf;

fn main() {
    println!("cargo:rerun-if-changed=src/shim.cpp");
    println!("cargo:rerun-if-changed=build.rs");
    let Ok(lib) = std::env::var("DEP_TCH_LIBTORCH_LIB") else {
        panic!("mvdrive-dist: torch-sys did not report its libtorch folder (DEP_TCH_LIBTORCH_LIB)");
    };
    let include = PathBuf::from(&lib).join("..").join("include");
    if !std::path::Path::new("/usr/include/gloo/config.h").exists() {
        panic!(
            "mvdrive-dist: gloo's headers are missing (/usr/include/gloo); install them with \
             `make setup` or `apt-get install libgloo-dev`"
        );
    }
    let mut b = cc::Build::new();
    b.cpp(true)
        .file("src/shim.cpp")
        .std("c++17")
        .define("_GLIBCXX_USE_CXX11_ABI", "1")
        .define("USE_C10D_GLOO", None)
        .define("GLOG_USE_GLOG_EXPORT", None)
        .include(&include)
        .include(include.join("torch/csrc/api/include"))
        .warnings(false)
        .flag_if_supported("-Wno-deprecated-declarations");
    if std::env::var("CARGO_FEATURE_NCCL").is_ok() {
        b.define("USE_C10D_NCCL", None);
        // The CUDA toolkit's headers (the wheel's cudart package lacks crt/ and nv/target):
        // CUDA_HOME, else /usr/local/cuda; then the nvidia-* packages next to torch
        // (site-packages/nvidia/*/include: NCCL, cuBLAS, cuSPARSE, ...).
        println!("cargo:rerun-if-env-changed=CUDA_HOME");
        let cuda = std::env::var("CUDA_HOME").unwrap_or_else(|_| "/usr/local/cuda".into());
        let cuda_inc = PathBuf::from(cuda).join("include");
        if cuda_inc.is_dir() {
            b.include(cuda_inc);
        }
        let nvidia = PathBuf::from(&lib).join("../../nvidia");
        if let Ok(dirs) = std::fs::read_dir(&nvidia) {
            for d in dirs.flatten() {
                let inc = d.path().join("include");
                if inc.is_dir() {
                    b.include(&inc);
                }
                if inc.join("cccl").is_dir() {
                    b.include(inc.join("cccl"));
                }
            }
        }
        println!("cargo:rustc-link-lib=torch_cuda");
        println!("cargo:rustc-link-lib=c10_cuda");
    }
    b.compile("mvdrive_c10d");
    println!("cargo:rustc-link-search=native={lib}");
    // This crate's own tests find libtorch without LD_LIBRARY_PATH (torch-sys sets no rpath).
    println!("cargo:rustc-link-arg=-Wl,-rpath={lib}");
    println!("cargo:rustc-link-lib=torch_cpu");
    println!("cargo:rustc-link-lib=c10");
}
