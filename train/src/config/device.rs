//! `trainer.device`: the device as written in the settings.

use super::ConfigError;

/// `trainer.device` as written: resolved against the machine by the session.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DeviceChoice {
    /// CUDA device 0 when available, else the CPU.
    Auto,
    /// The CPU.
    Cpu,
    /// CUDA device N (`cuda` = `cuda:0`).
    Cuda(usize),
}

impl std::str::FromStr for DeviceChoice {
    type Err = ConfigError;

    fn from_str(d: &str) -> Result<Self, ConfigError> {
        match d {
            "auto" => Ok(DeviceChoice::Auto),
            "cpu" => Ok(DeviceChoice::Cpu),
            _ => d
                .strip_prefix("cuda:")
                .or_else(|| (d == "cuda").then_some("0"))
                .and_then(|n| n.parse().ok())
                .map(DeviceChoice::Cuda)
                .ok_or_else(|| {
                    ConfigError(format!("trainer.device `{d}` is not auto, cpu or cuda:N"))
                }),
        }
    }
}
