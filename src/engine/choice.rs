//! `--device cpu|gpu|auto`: where the user asked to run (the GPU engine resolves it,
//! [`crate::engine::gpu::device::choose`]; without the `gpu` feature only the CPU is there).

use std::fmt;
use std::str::FromStr;

/// Where the user asked to run.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum DeviceChoice {
    Cpu,
    Gpu,
    /// A hardware GPU when there is one, else the CPU.
    #[default]
    Auto,
}

impl FromStr for DeviceChoice {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "cpu" => Ok(DeviceChoice::Cpu),
            "gpu" | "cuda" => Ok(DeviceChoice::Gpu),
            "auto" => Ok(DeviceChoice::Auto),
            _ => Err(format!("unknown device {s:?}: use cpu, gpu or auto")),
        }
    }
}

impl fmt::Display for DeviceChoice {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            DeviceChoice::Cpu => "cpu",
            DeviceChoice::Gpu => "gpu",
            DeviceChoice::Auto => "auto",
        })
    }
}
