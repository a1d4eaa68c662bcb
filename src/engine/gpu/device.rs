//! Choosing where to run: `--device cpu|gpu|auto`, as d2l's `try_gpu()`.
//!
//! `gpu` takes the best adapter wgpu finds (Vulkan on Linux and Windows: NVIDIA, AMD,
//! Intel, or Mesa's software lavapipe; Metal on macOS; DX12 on Windows), a hardware
//! one before a software one. `auto` takes a hardware GPU only and otherwise falls back
//! to the CPU, saying why. No adapter, a driver that fails (even by panicking inside
//! wgpu) or a device that cannot be opened is an error naming the problem.

use std::fmt;

pub use crate::engine::choice::DeviceChoice;

/// Why no GPU could be used.
#[derive(Debug, thiserror::Error)]
pub enum GpuError {
    #[error(
        "no GPU adapter found (wgpu looked for Vulkan, Metal and DX12 devices). Install the GPU's \
         driver (on Debian: the vendor's driver, or mesa-vulkan-drivers for Mesa's and the software \
         lavapipe device), or use --device cpu"
    )]
    NoAdapter,
    #[error("no hardware GPU: the only adapters are software ones ({0}); use --device gpu to run on them anyway")]
    OnlySoftware(String),
    #[error("the GPU driver failed while {doing}: {message}")]
    DriverFailed { doing: &'static str, message: String },
    #[error("cannot open {adapter}: {message}")]
    OpenFailed { adapter: String, message: String },
}

/// One adapter as wgpu describes it.
#[derive(Clone, Debug)]
pub struct Adapter {
    pub name: String,
    pub backend: String,
    pub kind: String,
    pub driver: String,
    pub software: bool,
}

impl Adapter {
    fn from_info(info: &wgpu::AdapterInfo) -> Adapter {
        let kind = match info.device_type {
            wgpu::DeviceType::DiscreteGpu => "discrete GPU",
            wgpu::DeviceType::IntegratedGpu => "integrated GPU",
            wgpu::DeviceType::VirtualGpu => "virtual GPU",
            wgpu::DeviceType::Cpu => "software (CPU)",
            wgpu::DeviceType::Other => "other",
        };
        let driver = [info.driver.as_str(), info.driver_info.as_str()]
            .iter()
            .filter(|s| !s.is_empty())
            .copied()
            .collect::<Vec<_>>()
            .join(" ");
        Adapter {
            name: info.name.clone(),
            backend: info.backend.to_string(),
            kind: kind.into(),
            driver,
            software: info.device_type == wgpu::DeviceType::Cpu,
        }
    }

    /// `<adapter name> (<backend>)`, as `training on …` prints it.
    pub fn describe(&self) -> String {
        format!("{} ({})", self.name, self.backend)
    }
}

/// An open GPU: the device and queue every kernel is submitted to.
pub struct Gpu {
    pub adapter: Adapter,
    pub device: wgpu::Device,
    pub queue: wgpu::Queue,
}

impl fmt::Debug for Gpu {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Gpu({})", self.adapter.describe())
    }
}

/// Run `f`, turning a panic inside wgpu or a driver into an error.
fn guarded<T>(doing: &'static str, f: impl FnOnce() -> T) -> Result<T, GpuError> {
    std::panic::catch_unwind(std::panic::AssertUnwindSafe(f)).map_err(|panic| {
        let message = panic
            .downcast_ref::<String>()
            .cloned()
            .or_else(|| panic.downcast_ref::<&str>().map(|s| s.to_string()))
            .unwrap_or_else(|| "a panic without a message".into());
        GpuError::DriverFailed { doing, message }
    })
}

fn instance() -> wgpu::Instance {
    // WGPU_BACKEND and the like are honoured, as in every wgpu program.
    wgpu::Instance::new(wgpu::InstanceDescriptor::new_without_display_handle_from_env())
}

/// Every adapter wgpu finds, hardware ones first (then as wgpu lists them).
fn all_adapters(instance: &wgpu::Instance) -> Result<Vec<wgpu::Adapter>, GpuError> {
    let mut found =
        guarded("listing adapters", || pollster::block_on(instance.enumerate_adapters(wgpu::Backends::all())))?;
    // Stable: among equals, wgpu's order (which lists discrete GPUs first on most drivers).
    found.sort_by_key(|a| a.get_info().device_type == wgpu::DeviceType::Cpu);
    Ok(found)
}

/// The adapters this machine has, for `lenet devices`.
pub fn adapters() -> Result<Vec<Adapter>, GpuError> {
    let instance = instance();
    Ok(all_adapters(&instance)?.iter().map(|a| Adapter::from_info(&a.get_info())).collect())
}

impl Gpu {
    /// Open the best adapter: a hardware one, or (when `software` allows) a software one.
    pub fn open(software: bool) -> Result<Gpu, GpuError> {
        let instance = instance();
        let found = all_adapters(&instance)?;
        let Some(chosen) = found.iter().find(|a| software || a.get_info().device_type != wgpu::DeviceType::Cpu) else {
            return Err(match found.first() {
                None => GpuError::NoAdapter,
                Some(_) => GpuError::OnlySoftware(
                    found.iter().map(|a| Adapter::from_info(&a.get_info()).describe()).collect::<Vec<_>>().join(", "),
                ),
            });
        };
        let adapter = Adapter::from_info(&chosen.get_info());
        // The adapter's own limits: a big training split needs big storage buffers.
        let desc =
            wgpu::DeviceDescriptor { label: Some("lenet"), required_limits: chosen.limits(), ..Default::default() };
        let opened = guarded("opening the device", || pollster::block_on(chosen.request_device(&desc)))?;
        let (device, queue) =
            opened.map_err(|e| GpuError::OpenFailed { adapter: adapter.describe(), message: e.to_string() })?;
        Ok(Gpu { adapter, device, queue })
    }
}

/// What a `--device` choice resolved to.
pub enum Chosen {
    /// The CPU; with `auto`, why no GPU was taken (printed as the fallback's reason).
    Cpu {
        fallback: Option<String>,
    },
    Gpu(Gpu),
}

/// Resolve a `--device` choice: `gpu` fails with the reason when no GPU can be opened;
/// `auto` then takes the CPU and says why.
pub fn choose(choice: DeviceChoice) -> Result<Chosen, GpuError> {
    match choice {
        DeviceChoice::Cpu => Ok(Chosen::Cpu { fallback: None }),
        DeviceChoice::Gpu => Gpu::open(true).map(Chosen::Gpu),
        DeviceChoice::Auto => Ok(match Gpu::open(false) {
            Ok(gpu) => Chosen::Gpu(gpu),
            Err(e) => Chosen::Cpu { fallback: Some(e.to_string()) },
        }),
    }
}
