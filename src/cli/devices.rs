//! `lenet devices`: the GPU adapters this machine has, and where `--device auto` would run.

use lenet::internal::engine::gpu::device::{adapters, choose, Chosen, DeviceChoice};

pub fn run() -> anyhow::Result<()> {
    match adapters() {
        Ok(found) if found.is_empty() => println!("no GPU adapter found"),
        Ok(found) => {
            for a in &found {
                let driver = if a.driver.is_empty() { String::new() } else { format!(", driver {}", a.driver) };
                println!("{}: {}{driver}", a.describe(), a.kind);
            }
        }
        Err(e) => println!("{e}"),
    }
    match choose(DeviceChoice::Auto)? {
        Chosen::Gpu(gpu) => println!("--device auto would run on {}", gpu.adapter.describe()),
        Chosen::Cpu { fallback } => {
            println!("--device auto would run on the CPU: {}", fallback.unwrap_or_default())
        }
    }
    Ok(())
}
