//! How parameters move: [`adamw`] (AdamW and the warm-up + cosine schedule),
//! [`loss_scale`] (dynamic loss scaling for fp16), [`precision`] (fp32, bf16, fp16 compute
//! copies), [`recompute`] (gradient checkpointing over backbone segments).

pub mod adamw;
pub mod autograd;
pub mod loss_scale;
pub mod precision;
pub mod recompute;
