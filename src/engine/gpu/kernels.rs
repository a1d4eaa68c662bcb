//! The GPU's kernels: WGSL compute shaders (one file per layer kind in `shaders/`,
//! forward and backward entry points side by side), compiled once per device, and the
//! plumbing that runs them on f32 storage buffers.
//!
//! Every entry point writes each output value from one invocation that sums its terms
//! in a fixed order: no float atomics, so a rerun on the same device gives the same
//! bits. (A long sum, such as a convolution's weight gradient over a whole batch, is
//! summed sequentially in f32 by one invocation: exact to the order of its terms, not
//! fast; a fixed-order tree reduction is the next step for speed.)

use std::collections::HashMap;

use wgpu::util::DeviceExt;

use super::device::Gpu;
use crate::data::Images;
use crate::input::{fit_images, pixel_affine};
use crate::layers::conv::ConvGeom;
use crate::layers::pool::{PoolGeom, PoolKind};
use crate::layers::subsample::SubsampleGeom;
use crate::spec::{Activation, Criterion, InputSpec};

/// Invocations per workgroup, as every shader declares (`@workgroup_size(64)`).
const GROUP: u32 = 64;
/// The most workgroups one dispatch dimension may have.
const MAX_GROUPS: u32 = 65_535;

/// An f32 buffer on the GPU.
pub struct GpuBuf {
    pub buffer: wgpu::Buffer,
    pub len: usize,
}

/// A u32 buffer on the GPU (example indices).
pub struct GpuBufU32 {
    pub buffer: wgpu::Buffer,
    pub len: usize,
}

/// A split resident on the GPU: its images fitted to the network's input and kept as
/// bytes (four to a u32), its labels likewise, and the input's pixel scaling.
pub struct GpuExamples {
    images: wgpu::Buffer,
    labels: wgpu::Buffer,
    pixels: usize,
    scale: f32,
    shift: f32,
}

/// Bytes as little-endian u32 words, zero-padded to a whole word.
fn words(bytes: &[u8]) -> Vec<u32> {
    bytes.chunks(4).map(|c| c.iter().rev().fold(0u32, |w, &b| (w << 8) | b as u32)).collect::<Vec<_>>()
}

/// The compiled kernels of one device.
pub struct Kernels {
    gpu: Gpu,
    /// Each entry point's pipeline, by `<shader>.<entry point>`.
    pipelines: HashMap<String, wgpu::ComputePipeline>,
}

/// What every shader starts with (WGSL has no includes): prepended to each file.
const PRELUDE: &str = include_str!("shaders/prelude.wgsl");

/// The shader files, by layer kind.
const SHADERS: &[(&str, &str, &[&str])] = &[
    ("conv", include_str!("shaders/conv.wgsl"), &["forward", "backward_input", "backward_weight", "backward_bias"]),
    ("pool", include_str!("shaders/pool.wgsl"), &["forward", "backward"]),
    ("activation", include_str!("shaders/activation.wgsl"), &["forward", "backward"]),
    ("linear", include_str!("shaders/linear.wgsl"), &["forward", "backward_input", "backward_weight", "backward_bias"]),
    ("subsample", include_str!("shaders/subsample.wgsl"), &["forward", "backward_input", "backward_params"]),
    ("rbf", include_str!("shaders/rbf.wgsl"), &["forward", "backward"]),
    ("gather", include_str!("shaders/gather.wgsl"), &["gather"]),
    ("loss", include_str!("shaders/loss.wgsl"), &["weight_sum", "example", "reduce"]),
];

impl Kernels {
    /// Compile every shader for `gpu`. A shader the driver refuses is an error naming it.
    pub fn new(gpu: Gpu) -> anyhow::Result<Kernels> {
        let mut pipelines = HashMap::new();
        for &(kind, source, points) in SHADERS {
            let scope = gpu.device.push_error_scope(wgpu::ErrorFilter::Validation);
            let module = gpu.device.create_shader_module(wgpu::ShaderModuleDescriptor {
                label: Some(kind),
                source: wgpu::ShaderSource::Wgsl(format!("{PRELUDE}\n{source}").into()),
            });
            for &point in points {
                let pipeline = gpu.device.create_compute_pipeline(&wgpu::ComputePipelineDescriptor {
                    label: Some(point),
                    layout: None,
                    module: &module,
                    entry_point: Some(point),
                    compilation_options: Default::default(),
                    cache: None,
                });
                pipelines.insert(format!("{kind}.{point}"), pipeline);
            }
            if let Some(e) = pollster::block_on(scope.pop()) {
                anyhow::bail!("the GPU driver refused shaders/{kind}.wgsl: {e}");
            }
        }
        Ok(Kernels { gpu, pipelines })
    }

    pub fn gpu(&self) -> &Gpu {
        &self.gpu
    }

    /// A storage buffer holding `contents`. Storage buffers may not be empty: an empty
    /// tensor gets one unused zero word.
    fn storage(&self, label: &str, contents: &[u8], usage: wgpu::BufferUsages) -> wgpu::Buffer {
        let contents = if contents.is_empty() { &[0u8; 4][..] } else { contents };
        self.gpu.device.create_buffer_init(&wgpu::util::BufferInitDescriptor {
            label: Some(label),
            contents,
            usage: wgpu::BufferUsages::STORAGE | usage,
        })
    }

    /// A buffer holding `values`.
    pub fn upload(&self, values: &[f32]) -> GpuBuf {
        let usage = wgpu::BufferUsages::COPY_SRC | wgpu::BufferUsages::COPY_DST;
        GpuBuf { buffer: self.storage("values", bytemuck::cast_slice(values), usage), len: values.len() }
    }

    /// Move a split onto the GPU once, fitted to the input size (on the host, as the
    /// CPU engine does) and kept as bytes.
    pub fn upload_examples(&self, images: &Images, labels: &[u8], input: &InputSpec) -> GpuExamples {
        let fitted = fit_images(images, input);
        let (scale, shift) = pixel_affine(input.normalize);
        let bytes =
            |label: &str, b: &[u8]| self.storage(label, bytemuck::cast_slice(&words(b)), wgpu::BufferUsages::empty());
        GpuExamples {
            images: bytes("images", &fitted.pixels),
            labels: bytes("labels", labels),
            pixels: fitted.pixels_per_image(),
            scale,
            shift,
        }
    }

    /// x (B, 1, S, S) = the scaled images at `indices`; y (B) = their labels.
    pub fn gather(&self, examples: &GpuExamples, indices: &GpuBufU32, x: &GpuBuf, y: &GpuBuf) {
        let p = [indices.len as u32, examples.pixels as u32, examples.scale.to_bits(), examples.shift.to_bits()];
        let (images, labels) = (&examples.images, &examples.labels);
        let entries = [(1, images), (2, labels), (3, &indices.buffer), (4, &x.buffer), (5, &y.buffer)];
        self.run_raw("gather.gather", &p, &entries, indices.len * examples.pixels);
    }

    /// Example indices on the GPU.
    pub fn upload_indices(&self, indices: &[u32]) -> GpuBufU32 {
        let buffer = self.storage("indices", bytemuck::cast_slice(indices), wgpu::BufferUsages::COPY_DST);
        GpuBufU32 { buffer, len: indices.len() }
    }

    /// A buffer of `len` zeros.
    pub fn zeros(&self, len: usize) -> GpuBuf {
        self.upload(&vec![0.0; len])
    }

    /// The values of `buf`, read back (waits for everything submitted before).
    pub fn download(&self, buf: &GpuBuf) -> Vec<f32> {
        let size = buf.buffer.size();
        let staging = self.gpu.device.create_buffer(&wgpu::BufferDescriptor {
            label: Some("read-back"),
            size,
            usage: wgpu::BufferUsages::MAP_READ | wgpu::BufferUsages::COPY_DST,
            mapped_at_creation: false,
        });
        let mut encoder = self.gpu.device.create_command_encoder(&wgpu::CommandEncoderDescriptor { label: None });
        encoder.copy_buffer_to_buffer(&buf.buffer, 0, &staging, 0, size);
        self.gpu.queue.submit([encoder.finish()]);
        let (tx, rx) = std::sync::mpsc::channel();
        staging.map_async(wgpu::MapMode::Read, .., move |r| {
            let _ = tx.send(r);
        });
        self.gpu.device.poll(wgpu::PollType::wait_indefinitely()).expect("the GPU finished its work");
        rx.recv().expect("the map callback ran").expect("the read-back buffer mapped");
        let values = {
            let view = staging.get_mapped_range(..).expect("a mapped range");
            bytemuck::cast_slice::<u8, f32>(&view)[..buf.len].to_vec()
        };
        staging.unmap();
        values
    }

    /// Run entry point `name` over `invocations` invocations with the uniform `params`
    /// at binding 0 and `buffers` at their bindings.
    fn run(&self, name: &str, params: &[u32], buffers: &[(u32, &GpuBuf)], invocations: usize) {
        let raw: Vec<(u32, &wgpu::Buffer)> = buffers.iter().map(|(b, buf)| (*b, &buf.buffer)).collect();
        self.run_raw(name, params, &raw, invocations)
    }

    fn run_raw(&self, name: &str, params: &[u32], buffers: &[(u32, &wgpu::Buffer)], invocations: usize) {
        let pipeline = &self.pipelines[name];
        let uniform = self.gpu.device.create_buffer_init(&wgpu::util::BufferInitDescriptor {
            label: Some("params"),
            contents: bytemuck::cast_slice(params),
            usage: wgpu::BufferUsages::UNIFORM,
        });
        let mut entries = vec![wgpu::BindGroupEntry { binding: 0, resource: uniform.as_entire_binding() }];
        entries.extend(
            buffers
                .iter()
                .map(|(binding, b)| wgpu::BindGroupEntry { binding: *binding, resource: b.as_entire_binding() }),
        );
        let bind_group = self.gpu.device.create_bind_group(&wgpu::BindGroupDescriptor {
            label: Some(name),
            layout: &pipeline.get_bind_group_layout(0),
            entries: &entries,
        });
        let groups = (invocations as u64).div_ceil(GROUP as u64).max(1);
        let (x, y) = if groups <= MAX_GROUPS as u64 {
            (groups as u32, 1)
        } else {
            (MAX_GROUPS, groups.div_ceil(MAX_GROUPS as u64) as u32)
        };
        let mut encoder = self.gpu.device.create_command_encoder(&wgpu::CommandEncoderDescriptor { label: Some(name) });
        {
            let mut pass =
                encoder.begin_compute_pass(&wgpu::ComputePassDescriptor { label: Some(name), timestamp_writes: None });
            pass.set_pipeline(pipeline);
            pass.set_bind_group(0, &bind_group, &[]);
            pass.dispatch_workgroups(x, y, 1);
        }
        self.gpu.queue.submit([encoder.finish()]);
    }

    /// out (B, O, OH, OW) = conv(inp (B, C, H, W)) with w (O, C, K, K) and b (O).
    pub fn conv_forward(&self, g: &ConvGeom, batch: usize, inp: &GpuBuf, w: &GpuBuf, b: &GpuBuf, out: &GpuBuf) {
        let invocations = batch * g.out_len();
        self.run("conv.forward", &conv_params(g, batch), &[(1, inp), (2, w), (3, b), (4, out)], invocations);
    }

    /// dw += ∂L/∂w, db += ∂L/∂b and, when given, dinp = ∂L/∂inp.
    #[allow(clippy::too_many_arguments)]
    pub fn conv_backward(
        &self,
        g: &ConvGeom,
        batch: usize,
        inp: &GpuBuf,
        w: &GpuBuf,
        dout: &GpuBuf,
        dw: &GpuBuf,
        db: &GpuBuf,
        dinp: Option<&GpuBuf>,
    ) {
        let p = conv_params(g, batch);
        if let Some(dinp) = dinp {
            self.run("conv.backward_input", &p, &[(2, w), (5, dout), (6, dinp)], batch * g.in_len());
        }
        self.run("conv.backward_weight", &p, &[(1, inp), (5, dout), (7, dw)], g.weight_len());
        self.run("conv.backward_bias", &p, &[(5, dout), (8, db)], g.o);
    }
}

impl Kernels {
    /// Planes of H×W pooled to OH×OW.
    pub fn pool_forward(&self, g: &PoolGeom, planes: usize, inp: &GpuBuf, out: &GpuBuf) {
        self.run("pool.forward", &pool_params(g, planes), &[(1, inp), (2, out)], planes * g.oh() * g.ow());
    }

    /// dinp = ∂L/∂inp (written).
    pub fn pool_backward(&self, g: &PoolGeom, planes: usize, inp: &GpuBuf, dout: &GpuBuf, dinp: &GpuBuf) {
        self.run("pool.backward", &pool_params(g, planes), &[(1, inp), (3, dout), (4, dinp)], planes * g.h * g.w);
    }

    /// out = f(inp), elementwise over `n` values.
    pub fn activation_forward(&self, a: Activation, n: usize, inp: &GpuBuf, out: &GpuBuf) {
        self.run("activation.forward", &activation_params(a, n), &[(1, inp), (2, out)], n);
    }

    /// dinp = f'(inp) · dout (written).
    pub fn activation_backward(&self, a: Activation, n: usize, inp: &GpuBuf, dout: &GpuBuf, dinp: &GpuBuf) {
        self.run("activation.backward", &activation_params(a, n), &[(1, inp), (3, dout), (4, dinp)], n);
    }

    /// out (B, N) = inp (B, K) · wᵀ + b.
    #[allow(clippy::too_many_arguments)]
    pub fn linear_forward(&self, batch: usize, k: usize, n: usize, inp: &GpuBuf, w: &GpuBuf, b: &GpuBuf, out: &GpuBuf) {
        let p = u32s(&[batch, k, n, 0]);
        self.run("linear.forward", &p, &[(1, inp), (2, w), (3, b), (4, out)], batch * n);
    }

    /// dw += ∂L/∂w, db += ∂L/∂b, dinp = ∂L/∂inp.
    #[allow(clippy::too_many_arguments)]
    pub fn linear_backward(
        &self,
        batch: usize,
        k: usize,
        n: usize,
        inp: &GpuBuf,
        w: &GpuBuf,
        dout: &GpuBuf,
        dw: &GpuBuf,
        db: &GpuBuf,
        dinp: &GpuBuf,
    ) {
        let p = u32s(&[batch, k, n, 0]);
        self.run("linear.backward_input", &p, &[(2, w), (5, dout), (6, dinp)], batch * k);
        self.run("linear.backward_weight", &p, &[(1, inp), (5, dout), (7, dw)], n * k);
        self.run("linear.backward_bias", &p, &[(5, dout), (8, db)], n);
    }

    /// out (B, C, OH, OW) = coef[c] · Σ_block inp + bias[c].
    #[allow(clippy::too_many_arguments)]
    pub fn subsample_forward(
        &self,
        g: &SubsampleGeom,
        batch: usize,
        inp: &GpuBuf,
        coef: &GpuBuf,
        bias: &GpuBuf,
        out: &GpuBuf,
    ) {
        let p = subsample_params(g, batch);
        self.run("subsample.forward", &p, &[(1, inp), (2, coef), (3, bias), (4, out)], batch * g.out_len());
    }

    /// dcoef += ∂L/∂coef, dbias += ∂L/∂bias and, when given, dinp = ∂L/∂inp.
    #[allow(clippy::too_many_arguments)]
    pub fn subsample_backward(
        &self,
        g: &SubsampleGeom,
        batch: usize,
        inp: &GpuBuf,
        coef: &GpuBuf,
        dout: &GpuBuf,
        dcoef: &GpuBuf,
        dbias: &GpuBuf,
        dinp: Option<&GpuBuf>,
    ) {
        let p = subsample_params(g, batch);
        if let Some(dinp) = dinp {
            self.run("subsample.backward_input", &p, &[(2, coef), (5, dout), (6, dinp)], batch * g.in_len());
        }
        self.run("subsample.backward_params", &p, &[(1, inp), (5, dout), (7, dcoef), (8, dbias)], g.c);
    }

    /// out (B, N) = −Σ_j (inp (B, K) − centres (N, K))².
    #[allow(clippy::too_many_arguments)]
    pub fn rbf_forward(&self, batch: usize, k: usize, n: usize, inp: &GpuBuf, centres: &GpuBuf, out: &GpuBuf) {
        let p = u32s(&[batch, k, n, 0]);
        self.run("rbf.forward", &p, &[(1, inp), (2, centres), (4, out)], batch * n);
    }

    /// dinp = ∂L/∂inp (written; the centres are fixed).
    #[allow(clippy::too_many_arguments)]
    pub fn rbf_backward(
        &self,
        batch: usize,
        k: usize,
        n: usize,
        inp: &GpuBuf,
        centres: &GpuBuf,
        dout: &GpuBuf,
        dinp: &GpuBuf,
    ) {
        let p = u32s(&[batch, k, n, 0]);
        self.run("rbf.backward", &p, &[(1, inp), (2, centres), (5, dout), (6, dinp)], batch * k);
    }
}

impl Kernels {
    /// The batch's loss under `criterion` against labels y (as f32), with optional class
    /// weights: dz = ∂(mean loss)/∂z, and stats (3 values, on the device) = [Σ w_y,
    /// Σ w_y·E, correct]; `scratch` holds 2 values per example.
    #[allow(clippy::too_many_arguments)]
    pub fn loss(
        &self,
        criterion: Criterion,
        batch: usize,
        classes: usize,
        z: &GpuBuf,
        y: &GpuBuf,
        class_weights: Option<&GpuBuf>,
        dz: &GpuBuf,
        scratch: &GpuBuf,
        stats: &GpuBuf,
    ) {
        let (kind, j) = match criterion {
            Criterion::CrossEntropy => (0, 0.0f32),
            Criterion::Map { j } => (1, j),
            Criterion::Mse => (2, 0.0),
        };
        let p = [batch as u32, classes as u32, kind, j.to_bits(), class_weights.is_some() as u32, 0, 0, 0];
        // Without class weights the shader reads none, but the binding must exist.
        let none;
        let weights = match class_weights {
            Some(w) => w,
            None => {
                none = self.zeros(1);
                &none
            }
        };
        self.run("loss.weight_sum", &p, &[(2, y), (3, weights), (6, stats)], 1);
        self.run("loss.example", &p, &[(1, z), (2, y), (3, weights), (4, dz), (5, scratch), (6, stats)], batch);
        self.run("loss.reduce", &p, &[(5, scratch), (6, stats)], 1);
    }
}

fn pool_params(g: &PoolGeom, planes: usize) -> Vec<u32> {
    let is_max = matches!(g.kind, PoolKind::Max) as usize;
    u32s(&[g.h, g.w, g.size, g.stride, g.oh(), g.ow(), planes, is_max])
}

fn activation_params(a: Activation, n: usize) -> Vec<u32> {
    let (kind, slope) = match a {
        Activation::Sigmoid => (0, 0.0),
        Activation::Tanh => (1, 0.0),
        Activation::ScaledTanh => (2, 0.0),
        Activation::Relu => (3, 0.0),
        Activation::LeakyRelu(s) => (4, s),
    };
    vec![n as u32, kind, f32::to_bits(slope), 0]
}

fn subsample_params(g: &SubsampleGeom, batch: usize) -> Vec<u32> {
    u32s(&[g.c, g.h, g.w, g.size, g.oh(), g.ow(), batch, 0])
}

/// A shader's uniform parameters: sizes as the u32s its `struct` declares.
fn u32s(sizes: &[usize]) -> Vec<u32> {
    sizes.iter().map(|&v| v as u32).collect()
}

fn conv_params(g: &ConvGeom, batch: usize) -> Vec<u32> {
    u32s(&[g.c, g.h, g.w, g.o, g.k, g.pad, g.stride, g.oh(), g.ow(), batch, 0, 0])
}
