//! `--device cpu|gpu|auto` on every command that runs a network: which engine it runs
//! on, and the `on_engine!` macro that runs the command's generic body on it.

use anyhow::Result;
use clap::Args;

use lenet::internal::engine::choice::DeviceChoice;
use lenet::internal::engine::cpu::CpuEngine;
#[cfg(feature = "gpu")]
use lenet::internal::engine::gpu::engine::GpuEngine;

#[derive(Args, Debug, Clone, Copy)]
pub struct DeviceArgs {
    /// Where to run: cpu; gpu (the best adapter, software ones included); or auto, a
    /// hardware GPU when there is one, else the CPU (as d2l's try_gpu()).
    #[arg(long, default_value = "auto", value_name = "cpu|gpu|auto")]
    pub device: DeviceChoice,
}

/// The engine a command runs on.
pub enum AnyEngine {
    Cpu(CpuEngine),
    #[cfg(feature = "gpu")]
    Gpu(Box<GpuEngine>),
}

impl AnyEngine {
    pub fn describe(&self) -> String {
        use lenet::internal::engine::Engine;
        match self {
            AnyEngine::Cpu(e) => e.describe(),
            #[cfg(feature = "gpu")]
            AnyEngine::Gpu(e) => e.describe(),
        }
    }
}

/// Open the engine `choice` asks for (`threads` for the CPU's). With `auto` and no
/// hardware GPU, the CPU, saying why on stderr; with `gpu` and none, the error.
pub fn open(choice: DeviceChoice, threads: usize) -> Result<AnyEngine> {
    #[cfg(feature = "gpu")]
    {
        use lenet::internal::engine::gpu::device::{choose, Chosen};
        match choose(choice)? {
            Chosen::Gpu(gpu) => Ok(AnyEngine::Gpu(Box::new(GpuEngine::new(gpu)?))),
            Chosen::Cpu { fallback } => {
                if let Some(why) = fallback {
                    eprintln!("--device auto: {why}; running on the CPU");
                }
                Ok(AnyEngine::Cpu(CpuEngine::new(threads)?))
            }
        }
    }
    #[cfg(not(feature = "gpu"))]
    match choice {
        DeviceChoice::Gpu => {
            anyhow::bail!("this lenet was built without the GPU engine (cargo feature gpu): use --device cpu")
        }
        DeviceChoice::Cpu | DeviceChoice::Auto => Ok(AnyEngine::Cpu(CpuEngine::new(threads)?)),
    }
}

/// `on_engine!(engine, e => body)`: `body`, generic over the engine, with `e` bound to
/// the engine that [`open`] gave.
macro_rules! on_engine {
    ($engine:expr, $e:ident => $body:expr) => {
        match $engine {
            $crate::cli::device::AnyEngine::Cpu($e) => $body,
            #[cfg(feature = "gpu")]
            $crate::cli::device::AnyEngine::Gpu(boxed) => {
                let $e = *boxed;
                $body
            }
        }
    };
}
pub(crate) use on_engine;
