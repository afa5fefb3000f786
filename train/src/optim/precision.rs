//! `trainer.precision`: float32, float16 mixed precision (CUDA autocast + dynamic loss
//! scaling) and bfloat16 mixed precision (a bfloat16 compute copy of the model, float32
//! master weights and optimizer; CPU and CUDA).
//!
//! Lightning's names are accepted: `16` and `bf16` are its (legacy) aliases of `16-mixed`
//! and `bf16-mixed`, and mean the same here.

use tch::nn::VarStore;
use tch::{Device, Kind, Tensor};

use crate::config::ConfigError;
use crate::model::{ModelConfig, ModelError, MultiViewModel};

crate::choice_enum! {
    /// `trainer.precision`. Lightning's legacy aliases `16` and `bf16` mean the mixed ones.
    pub enum Precision for "trainer.precision" {
        /// float32 everywhere (`32`).
        Fp32 => "32",
        /// CUDA autocast float16 with a dynamic loss scaler (`16-mixed`, `16`).
        Fp16Mixed => "16-mixed" | "16",
        /// bfloat16 compute copy of the model, float32 master weights and optimizer
        /// (`bf16-mixed`, `bf16`); works on CPU and CUDA.
        Bf16Mixed => "bf16-mixed" | "bf16",
    }
}

impl Precision {
    /// Checks that this precision runs on `device`: float16 on CPU is an error that offers
    /// bf16.
    pub fn check_device(self, device: Device) -> Result<Precision, ConfigError> {
        if self == Precision::Fp16Mixed && device == Device::Cpu {
            return Err(ConfigError(format!(
                "trainer.precision={} needs CUDA: float16 autocast and loss scaling run on the GPU only, and this run is on the CPU. Use trainer.precision=bf16-mixed (bfloat16 compute, float32 master weights; works on CPU) or 32",
                self.name()
            )));
        }
        Ok(self)
    }

    /// A note when this precision is known to be slow on `device`: libtorch's CPU bfloat16
    /// convolutions and matrix products have fast (oneDNN) kernels only on x86 CPUs with
    /// AVX-512 (BW, VL and DQ; its `mkldnn_bf16_device_check`). Without them a bf16 step
    /// took 78x the float32 one on R3D-18 and 18x on the transformer (AVX2-only AMD EPYC,
    /// bench/results/bf16-cpu-avx2.md).
    pub fn slow_note(self, device: Device) -> Option<String> {
        (self == Precision::Bf16Mixed && device == Device::Cpu && !cpu_has_bf16_kernels()).then(|| {
            format!(
                "trainer.precision={} on a CPU without AVX-512: libtorch's bfloat16 kernels take a slow path here (a step can take tens of times the float32 one); trainer.precision=32 is faster on this machine",
                self.name()
            )
        })
    }
}

/// Whether libtorch has fast bfloat16 kernels on this CPU (see [`Precision::slow_note`]).
pub fn cpu_has_bf16_kernels() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        std::arch::is_x86_feature_detected!("avx512bw")
            && std::arch::is_x86_feature_detected!("avx512vl")
            && std::arch::is_x86_feature_detected!("avx512dq")
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        true
    }
}

/// The bfloat16 compute copy of a float32 model. Forward and backward run on the copy;
/// its gradients are added, as float32, to the master's accumulators; its BatchNorm
/// statistics are copied back to the master after each step.
#[derive(Debug)]
pub struct HalfCopy {
    /// The copy's variables (bfloat16).
    pub vs: VarStore,
    /// The copy's model.
    pub model: MultiViewModel,
}

impl HalfCopy {
    /// Build a bfloat16 copy of a model of `config` on `device`, with `master`'s values.
    pub fn new(config: &ModelConfig, master: &VarStore) -> Result<HalfCopy, ModelError> {
        let mut vs = VarStore::new(master.device());
        let model = MultiViewModel::new(&vs.root(), config.clone())?;
        vs.bfloat16();
        // BatchNorm stays float32 (libtorch normalises bfloat16 input with float32
        // parameters): its running statistics move by 10% of a batch's each step, which
        // bfloat16's 8-bit mantissa would round away.
        let vars = vs.variables();
        tch::no_grad(|| {
            for name in vars.keys().filter_map(|n| n.strip_suffix(".running_mean")) {
                for part in ["weight", "bias", "running_mean", "running_var"] {
                    if let Some(t) = vars.get(&format!("{name}.{part}")) {
                        let mut t = t.shallow_clone();
                        t.set_data(&t.to_kind(Kind::Float));
                    }
                }
            }
        });
        let copy = HalfCopy { vs, model };
        copy.load_from(master);
        Ok(copy)
    }

    /// Copy the master weights and statistics into the copy (rounded to bfloat16).
    pub fn load_from(&self, master: &VarStore) {
        let m = master.variables();
        tch::no_grad(|| {
            for (name, mut h) in self.vs.variables() {
                if let Some(src) = m.get(&name) {
                    h.copy_(src);
                }
            }
        });
    }

    /// Add the copy's gradients, as float32, to `acc` (one per `params`, by name; an
    /// undefined entry, or an empty `acc`, takes the gradient itself), and set the copy's
    /// gradients to none. A parameter without a gradient keeps an undefined entry, as a
    /// float32 parameter without one has no gradient: the step leaves it alone. One
    /// parameter at a time, so the bf16 gradients are freed as their float32 copies
    /// appear: they never all coexist with `acc`.
    pub fn take_grads(&self, params: &[(String, Tensor)], acc: &mut Vec<Tensor>) {
        let h = self.vs.variables();
        if acc.is_empty() {
            acc.extend(params.iter().map(|_| Tensor::new()));
        }
        tch::no_grad(|| {
            for ((name, _), a) in params.iter().zip(acc.iter_mut()) {
                let Some(half) = h.get(name) else { continue };
                let g = half.grad();
                if g.defined() {
                    // A float32 parameter of the copy (BatchNorm) hands over its own
                    // gradient: `to_kind` returns it as it is, and clearing it below lets
                    // autograd allocate a new one next time.
                    let g32 = g.to_kind(Kind::Float);
                    if a.defined() {
                        let _ = a.g_add_(&g32);
                    } else {
                        *a = g32;
                    }
                }
                crate::optim::autograd::clear_grad(half);
            }
        });
    }

    /// Set the copy's gradients to none (forgetting them).
    pub fn clear_grads(&self) {
        for (_, p) in self.vs.variables() {
            if p.requires_grad() {
                crate::optim::autograd::clear_grad(&p);
            }
        }
    }

    /// Copy the copy's BatchNorm statistics (updated by its forward passes) to the master.
    pub fn store_stats(&self, master: &VarStore) {
        let h = self.vs.variables();
        tch::no_grad(|| {
            for (name, mut m) in master.variables() {
                if !m.requires_grad() {
                    if let Some(src) = h.get(&name) {
                        m.copy_(src);
                    }
                }
            }
        });
    }
}
