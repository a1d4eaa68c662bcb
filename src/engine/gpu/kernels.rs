//! The GPU's kernels: WGSL compute shaders (one file per layer kind in `shaders/`,
//! forward and backward entry points side by side), compiled once per device, and the
//! plumbing that runs them on f32 storage buffers.
//!
//! Every entry point writes each output value from one invocation that sums its terms
//! in a fixed order: no float atomics, so a rerun on the same device gives the same
//! bits. A long sum, such as a convolution's weight gradient over a whole batch, is
//! shared by the 64 invocations of a workgroup, each summing every 64th term, and their
//! partial sums are added in a fixed tree (`group_sum` in prelude.wgsl).
//!
//! Dispatches are recorded, not submitted one by one: they go into one command encoder,
//! with their uniform parameters in one buffer, and are submitted together when a
//! result is read back or the recording is full — many training steps to a submission,
//! and no step waits for the host.

use std::collections::HashMap;
use std::sync::Mutex;

use wgpu::util::DeviceExt;

use super::device::Gpu;
use crate::data::augment::{Affine, DeviceDistortions};
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
/// Dispatches recorded before a submission (each has a slot of uniform parameters).
const SLOTS: usize = 2048;
/// Bytes of one dispatch's parameters, at most (the largest shader struct is 64).
const PARAMS_BYTES: usize = 64;

/// An f32 buffer on the GPU.
pub struct GpuBuf {
    pub buffer: wgpu::Buffer,
    pub len: usize,
}

impl GpuBuf {
    /// The whole buffer, as a kernel's argument.
    pub fn all(&self) -> Slice<'_> {
        Slice { buf: self, at: 0, len: self.len }
    }
}

/// `len` values of a buffer from index `at`: what a kernel reads or writes.
#[derive(Clone, Copy)]
pub struct Slice<'a> {
    pub buf: &'a GpuBuf,
    pub at: usize,
    pub len: usize,
}

impl<'a> Slice<'a> {
    /// The buffer, for a binding whose shader reads from index 0: activations, which
    /// always have buffers of their own (parameters, which share one, carry offsets).
    fn whole(&self) -> &'a wgpu::Buffer {
        assert_eq!(self.at, 0, "this GPU kernel binds its tensor from the buffer's start");
        &self.buf.buffer
    }
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
    pub(crate) host_labels: Vec<u8>,
    pixels: usize,
    /// The input's side (the fitted images are side × side).
    side: usize,
    scale: f32,
    shift: f32,
    /// With `--augment`: the originals and this epoch's draws, by which the gathers
    /// distort each image.
    distortion: Option<Distortion>,
}

/// A split's original images (bytes, four to a word), one affine map per image (ten
/// f32s: [`crate::data::augment::Affine::inverse_and_shift`] of the drawn map, then where
/// the ink lands: see shaders/gather.wgsl), and the elastic field's draws if any.
struct Distortion {
    source: wgpu::Buffer,
    rows: usize,
    cols: usize,
    maps: wgpu::Buffer,
    elastic: Option<ElasticDraws>,
    /// Each batch's fields, kept from one gather to the next (and from epoch to epoch).
    fields: Mutex<Option<BatchFields>>,
}

/// What shaders/elastic.wgsl draws an epoch's fields from.
struct ElasticDraws {
    basis_rows: wgpu::Buffer,
    basis_cols: wgpu::Buffer,
    /// kr, kc, stride, seed (low, high word), epoch, α's bits.
    params: [u32; 7],
}

/// The elastic fields of a batch of up to `capacity` images, their intermediate
/// products (for `kr` row components) and reaches.
struct BatchFields {
    capacity: usize,
    kr: usize,
    partial: wgpu::Buffer,
    field: wgpu::Buffer,
    reach: wgpu::Buffer,
}

/// Bytes as little-endian u32 words, zero-padded to a whole word.
fn words(bytes: &[u8]) -> Vec<u32> {
    bytes.chunks(4).map(|c| c.iter().rev().fold(0u32, |w, &b| (w << 8) | b as u32)).collect::<Vec<_>>()
}

/// The dispatches recorded since the last submission.
struct Recording {
    encoder: wgpu::CommandEncoder,
    /// Each dispatch's parameters, `slot` bytes apart, written to `uniforms` just before
    /// the submission (which orders that write before every recorded dispatch).
    params: Vec<u8>,
    uniforms: wgpu::Buffer,
    dispatches: usize,
    /// The example indices of the batches gathered in this recording, each batch's at a
    /// storage offset the device allows, written to `index_arena` with the parameters:
    /// no buffer to create for every step. The arena is made when a first batch is
    /// staged (a recording of evaluation or read-backs needs none).
    indices: Vec<u32>,
    index_arena: Option<wgpu::Buffer>,
}

/// Example indices one recording holds (4 MiB).
const INDEX_WORDS: usize = 1 << 20;

/// The compiled kernels of one device.
pub struct Kernels {
    gpu: Gpu,
    /// Each entry point's pipeline and its bind group layout, by `<shader>.<entry point>`.
    pipelines: HashMap<String, (wgpu::ComputePipeline, wgpu::BindGroupLayout)>,
    /// Bytes between two dispatches' parameters (the device's uniform offset alignment).
    slot: usize,
    /// Words between two batches' indices (the device's storage offset alignment).
    index_align: usize,
    recording: Mutex<Option<Recording>>,
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
    ("gather", include_str!("shaders/gather.wgsl"), &["gather", "gather_distorted"]),
    ("elastic", include_str!("shaders/elastic.wgsl"), &["draw"]),
    ("loss", include_str!("shaders/loss.wgsl"), &["weight_sum", "example", "reduce", "tally"]),
    ("tensor", include_str!("shaders/tensor.wgsl"), &["fill", "copy", "mask"]),
    ("optim", include_str!("shaders/optim.wgsl"), &["sgd", "adam", "sdlm", "clip_partial", "clip_norm", "clip_scale"]),
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
                let layout = pipeline.get_bind_group_layout(0);
                pipelines.insert(format!("{kind}.{point}"), (pipeline, layout));
            }
            if let Some(e) = pollster::block_on(scope.pop()) {
                anyhow::bail!("the GPU driver refused shaders/{kind}.wgsl: {e}");
            }
        }
        let align = gpu.device.limits().min_uniform_buffer_offset_alignment as usize;
        let slot = PARAMS_BYTES.next_multiple_of(align);
        let index_align = (gpu.device.limits().min_storage_buffer_offset_alignment as usize).div_ceil(4).max(1);
        Ok(Kernels { gpu, pipelines, slot, index_align, recording: Mutex::new(None) })
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

    /// Write `values` into `dst` from index `at`, in order with the recorded dispatches
    /// (a copy recorded among them, not a write that would overtake them).
    pub fn write(&self, dst: &GpuBuf, at: usize, values: &[f32]) {
        if values.is_empty() {
            return;
        }
        let src = self.storage("staged values", bytemuck::cast_slice(values), wgpu::BufferUsages::COPY_SRC);
        self.record(|encoder| {
            encoder.copy_buffer_to_buffer(&src, 0, &dst.buffer, (at * 4) as u64, Some((values.len() * 4) as u64))
        });
    }

    /// Move a split onto the GPU once, fitted to the input size (on the host, as the
    /// CPU engine does) and kept as bytes.
    pub fn upload_examples(&self, images: &Images, labels: &[u8], input: &InputSpec) -> GpuExamples {
        let fitted = fit_images(images, input);
        let (scale, shift) = pixel_affine(input.normalize);
        let bytes =
            |label: &str, b: &[u8]| self.storage(label, bytemuck::cast_slice(&words(b)), wgpu::BufferUsages::COPY_DST);
        GpuExamples {
            images: bytes("images", &fitted.pixels),
            labels: bytes("labels", labels),
            host_labels: labels.to_vec(),
            pixels: fitted.pixels_per_image(),
            side: input.size,
            scale,
            shift,
            distortion: None,
        }
    }

    /// Have the gathers from `examples` distort each image by this epoch's `draws`
    /// (an affine map per example, the elastic field's basis and key), resampling
    /// `source` (the split's originals, uploaded on the first call); None: gather the
    /// images as they are again. The input must take the originals as they are or
    /// zero-padded ([`crate::spec::Fit::Pad`]).
    pub fn set_distortions(&self, examples: &mut GpuExamples, source: &Images, draws: Option<&DeviceDistortions>) {
        let Some(draws) = draws else {
            examples.distortion = None;
            return;
        };
        assert_eq!(draws.maps.len(), examples.host_labels.len(), "one affine map per example");
        let packed: Vec<[f32; 10]> = draws
            .maps
            .iter()
            .map(|m| {
                let [i0, i1, i2, i3, tx, ty] = Affine { a: m.a, t: m.t }.inverse_and_shift();
                // A blank image: any translation leaves it blank.
                let [x_lo, x_hi, y_lo, y_hi] = m.ink.unwrap_or([0.0; 4]);
                [i0, i1, i2, i3, tx, ty, x_lo, x_hi, y_lo, y_hi]
            })
            .collect();
        let maps = self.storage("affine maps", bytemuck::cast_slice(&packed), wgpu::BufferUsages::empty());
        let elastic = draws.elastic.as_ref().map(|field| {
            let b = field.basis();
            assert_eq!(b.rows.len(), source.rows * b.kr, "the field's basis fits the images");
            let seed = [draws.seed as u32, (draws.seed >> 32) as u32];
            ElasticDraws {
                basis_rows: self.storage(
                    "field basis (rows)",
                    bytemuck::cast_slice(b.rows),
                    wgpu::BufferUsages::empty(),
                ),
                basis_cols: self.storage(
                    "field basis (cols)",
                    bytemuck::cast_slice(b.cols_t),
                    wgpu::BufferUsages::empty(),
                ),
                params: [
                    b.kr as u32,
                    b.kc as u32,
                    b.stride as u32,
                    seed[0],
                    seed[1],
                    draws.epoch as u32,
                    b.alpha.to_bits(),
                ],
            }
        });
        match &mut examples.distortion {
            Some(d) => (d.maps, d.elastic) = (maps, elastic),
            None => {
                let bytes = bytemuck::cast_slice::<u32, u8>(&words(&source.pixels)).to_vec();
                let source_buffer = self.storage("original images", &bytes, wgpu::BufferUsages::empty());
                examples.distortion = Some(Distortion {
                    source: source_buffer,
                    rows: source.rows,
                    cols: source.cols,
                    maps,
                    elastic,
                    fields: Mutex::default(),
                });
            }
        }
    }

    /// Replace a resident split's images with `images` (the same count), in its own
    /// buffer, in order with the recorded dispatches.
    pub fn replace_images(&self, examples: &mut GpuExamples, images: &Images, input: &InputSpec) {
        let fitted = fit_images(images, input);
        assert_eq!(fitted.pixels.len(), examples.host_labels.len() * examples.pixels, "the same split's images");
        let src =
            self.storage("staged images", bytemuck::cast_slice(&words(&fitted.pixels)), wgpu::BufferUsages::COPY_SRC);
        let size = src.size().min(examples.images.size());
        self.record(|encoder| encoder.copy_buffer_to_buffer(&src, 0, &examples.images, 0, Some(size)));
    }

    /// x (B, 1, S, S) = the scaled images at `indices`; y (B) = their labels.
    /// With distortions set ([`Self::set_distortions`]), each image distorted first.
    pub fn gather(&self, examples: &GpuExamples, indices: &GpuBufU32, x: Slice, y: Slice) {
        self.gather_from(examples, Indices::Buffer(indices), x, y);
    }

    /// [`Self::gather`] with the indices given here: staged with the recording's
    /// parameters (a training step's way: no buffer of its own to create).
    pub fn gather_indices(&self, examples: &GpuExamples, indices: &[u32], x: Slice, y: Slice) {
        if indices.len() > INDEX_WORDS / 2 {
            // A batch too big for a recording's share: a buffer of its own.
            return self.gather(examples, &self.upload_indices(indices), x, y);
        }
        self.gather_from(examples, Indices::Staged(indices), x, y);
    }

    fn gather_from(&self, examples: &GpuExamples, indices: Indices, x: Slice, y: Slice) {
        let n = match indices {
            Indices::Buffer(b) => b.len,
            Indices::Staged(i) => i.len(),
        };
        let (scale, shift) = (examples.scale.to_bits(), examples.shift.to_bits());
        let (rows, cols) = examples.distortion.as_ref().map_or((0, 0), |d| (d.rows as u32, d.cols as u32));
        let elastic = examples.distortion.as_ref().is_some_and(|d| d.elastic.is_some());
        let p = [n as u32, examples.pixels as u32, scale, shift, rows, cols, examples.side as u32, elastic as u32];
        let labels = &examples.labels;
        let invocations = n * examples.pixels;
        let fields = examples.distortion.as_ref().and_then(|d| Some((d, d.elastic.as_ref()?)));
        let fields = fields.map(|(d, draws)| self.draw_fields(d, draws, &indices, n));
        let (name, mut entries) = match &examples.distortion {
            None => ("gather.gather", vec![(1, &examples.images), (2, labels), (4, x.whole()), (5, y.whole())]),
            Some(d) => {
                // Without a field, bindings the shader does not read: the maps stand in.
                let (field, reach) = fields.as_ref().map_or((&d.maps, &d.maps), |f| (&f.0, &f.1));
                let entries = vec![(2, labels), (4, x.whole()), (5, y.whole()), (7, &d.source), (8, &d.maps)];
                ("gather.gather_distorted", [entries, vec![(9, field), (10, reach)]].concat())
            }
        };
        self.run_gather(name, &p, &mut entries, &indices, invocations);
    }

    /// Record `name` with `indices` at binding 3, from their buffer or staged.
    fn run_gather<'b>(
        &self,
        name: &str,
        p: &[u32],
        entries: &mut Vec<(u32, &'b wgpu::Buffer)>,
        indices: &Indices<'b>,
        invocations: usize,
    ) {
        match indices {
            Indices::Buffer(b) => {
                entries.push((3, &b.buffer));
                self.run(name, p, entries, invocations);
            }
            Indices::Staged(i) => self.run_with_indices(name, p, entries, Some((3, i)), invocations),
        }
    }

    /// Record the drawing of the elastic fields of the `n` images at `indices`; their
    /// fields and reaches (buffers that stay with `d`).
    fn draw_fields(
        &self,
        d: &Distortion,
        draws: &ElasticDraws,
        indices: &Indices,
        n: usize,
    ) -> (wgpu::Buffer, wgpu::Buffer) {
        let mut fields = d.fields.lock().expect("the batch fields' lock");
        let kr = draws.params[0] as usize;
        // Another σ (set_distortions again) may keep more row components: sized anew.
        if fields.as_ref().is_none_or(|f| f.capacity < n || f.kr != kr) {
            let buffer = |label: &str, len: usize| {
                self.gpu.device.create_buffer(&wgpu::BufferDescriptor {
                    label: Some(label),
                    size: (len.max(1) * 4) as u64,
                    usage: wgpu::BufferUsages::STORAGE,
                    mapped_at_creation: false,
                })
            };
            *fields = Some(BatchFields {
                capacity: n,
                kr,
                partial: buffer("field partial products", n * 2 * kr * d.cols),
                field: buffer("fields", n * 2 * d.rows * d.cols),
                reach: buffer("field reaches", n),
            });
        }
        let f = fields.as_ref().expect("batch fields");
        let p = [[n as u32, d.rows as u32, d.cols as u32].as_slice(), &draws.params].concat();
        let mut entries =
            vec![(1, &draws.basis_rows), (2, &draws.basis_cols), (4, &f.partial), (5, &f.field), (6, &f.reach)];
        self.run_gather("elastic.draw", &p, &mut entries, indices, n * GROUP as usize);
        (f.field.clone(), f.reach.clone())
    }

    /// Example indices on the GPU.
    pub fn upload_indices(&self, indices: &[u32]) -> GpuBufU32 {
        let buffer = self.storage("indices", bytemuck::cast_slice(indices), wgpu::BufferUsages::COPY_DST);
        GpuBufU32 { buffer, len: indices.len() }
    }

    /// A buffer of `len` zeros.
    pub fn zeros(&self, len: usize) -> GpuBuf {
        let buffer = self.gpu.device.create_buffer(&wgpu::BufferDescriptor {
            label: Some("zeros"),
            // wgpu clears a new buffer; a storage buffer may not be empty.
            size: (len.max(1) * 4) as u64,
            usage: wgpu::BufferUsages::STORAGE | wgpu::BufferUsages::COPY_SRC | wgpu::BufferUsages::COPY_DST,
            mapped_at_creation: false,
        });
        GpuBuf { buffer, len }
    }

    /// Record `f`'s commands after the dispatches recorded so far.
    fn record<R>(&self, f: impl FnOnce(&mut wgpu::CommandEncoder) -> R) -> R {
        let mut recording = self.recording.lock().expect("the recording lock");
        let r = recording.get_or_insert_with(|| self.start_recording());
        f(&mut r.encoder)
    }

    fn start_recording(&self) -> Recording {
        let encoder = self.gpu.device.create_command_encoder(&wgpu::CommandEncoderDescriptor { label: Some("steps") });
        let uniforms = self.gpu.device.create_buffer(&wgpu::BufferDescriptor {
            label: Some("dispatch parameters"),
            size: (SLOTS * self.slot) as u64,
            usage: wgpu::BufferUsages::UNIFORM | wgpu::BufferUsages::COPY_DST,
            mapped_at_creation: false,
        });
        let params = Vec::with_capacity(SLOTS * self.slot);
        Recording { encoder, params, uniforms, dispatches: 0, indices: Vec::new(), index_arena: None }
    }

    /// Submit everything recorded so far (it runs while the host goes on). The lock is
    /// held until the queue has it: a recording begun meanwhile (by another engine on
    /// these kernels, in another thread) must reach the queue after this one, or its
    /// steps would run before steps recorded ahead of them.
    pub fn submit(&self) {
        let mut recording = self.recording.lock().expect("the recording lock");
        if let Some(r) = recording.take() {
            self.submit_recording(r);
        }
    }

    fn submit_recording(&self, r: Recording) {
        if !r.params.is_empty() {
            self.gpu.queue.write_buffer(&r.uniforms, 0, &r.params);
        }
        if let Some(arena) = &r.index_arena {
            self.gpu.queue.write_buffer(arena, 0, bytemuck::cast_slice(&r.indices));
        }
        self.gpu.queue.submit([r.encoder.finish()]);
    }

    /// Submit what was recorded and wait until the device has run it.
    pub fn finish(&self) {
        self.submit();
        self.gpu.device.poll(wgpu::PollType::wait_indefinitely()).expect("the GPU finished its work");
    }

    /// `len` words of `buf` from word `at`, read back as bytes: submits what was
    /// recorded and waits for it.
    pub fn read_words(&self, buf: &wgpu::Buffer, at: usize, len: usize) -> Vec<u8> {
        let size = (len.max(1) * 4) as u64;
        let staging = self.gpu.device.create_buffer(&wgpu::BufferDescriptor {
            label: Some("read-back"),
            size,
            usage: wgpu::BufferUsages::MAP_READ | wgpu::BufferUsages::COPY_DST,
            mapped_at_creation: false,
        });
        if len > 0 {
            self.record(|encoder| encoder.copy_buffer_to_buffer(buf, (at * 4) as u64, &staging, 0, Some(size)));
        }
        self.submit();
        let (tx, rx) = std::sync::mpsc::channel();
        staging.map_async(wgpu::MapMode::Read, .., move |r| {
            let _ = tx.send(r);
        });
        self.gpu.device.poll(wgpu::PollType::wait_indefinitely()).expect("the GPU finished its work");
        rx.recv().expect("the map callback ran").expect("the read-back buffer mapped");
        let bytes = {
            let view = staging.get_mapped_range(..).expect("a mapped range");
            view[..len * 4].to_vec()
        };
        staging.unmap();
        bytes
    }

    /// The values of `buf`, read back (waits for everything recorded before).
    pub fn download(&self, buf: &GpuBuf) -> Vec<f32> {
        self.read(buf.all())
    }

    /// The values of a slice, read back (waits for everything recorded before).
    pub fn read(&self, s: Slice) -> Vec<f32> {
        bytemuck::pod_collect_to_vec(&self.read_words(&s.buf.buffer, s.at, s.len))
    }

    /// Record entry point `name` over `invocations` invocations with the uniform `params`
    /// at binding 0 and `buffers` at their bindings.
    fn run(&self, name: &str, params: &[u32], buffers: &[(u32, &wgpu::Buffer)], invocations: usize) {
        self.run_with_indices(name, params, buffers, None, invocations)
    }

    /// [`Self::run`], and with `indices` (binding, values): those values staged in the
    /// recording's index arena and bound from there.
    fn run_with_indices(
        &self,
        name: &str,
        params: &[u32],
        buffers: &[(u32, &wgpu::Buffer)],
        indices: Option<(u32, &[u32])>,
        invocations: usize,
    ) {
        let (pipeline, layout) = &self.pipelines[name];
        let mut recording = self.recording.lock().expect("the recording lock");
        let staged = indices.map_or(0, |(_, i)| i.len().max(1).next_multiple_of(self.index_align));
        if recording.as_ref().is_some_and(|r| r.dispatches == SLOTS || r.indices.len() + staged > INDEX_WORDS) {
            let full = recording.take().expect("a recording");
            self.submit_recording(full);
        }
        let r = recording.get_or_insert_with(|| self.start_recording());
        let index_at = r.indices.len();
        if let Some((_, values)) = indices {
            r.indices.extend_from_slice(values);
            r.indices.resize(index_at + staged, 0);
        }
        let offset = r.params.len();
        let bytes: &[u8] = bytemuck::cast_slice(params);
        assert!(bytes.len() <= PARAMS_BYTES, "{name}: parameters of {} bytes", bytes.len());
        r.params.extend_from_slice(bytes);
        r.params.resize(offset + self.slot, 0);
        r.dispatches += 1;
        let uniform = wgpu::BufferBinding {
            buffer: &r.uniforms,
            offset: offset as u64,
            size: wgpu::BufferSize::new(bytes.len() as u64),
        };
        let mut entries = vec![wgpu::BindGroupEntry { binding: 0, resource: wgpu::BindingResource::Buffer(uniform) }];
        entries.extend(
            buffers
                .iter()
                .map(|(binding, b)| wgpu::BindGroupEntry { binding: *binding, resource: b.as_entire_binding() }),
        );
        if let Some((binding, values)) = indices {
            let arena = r.index_arena.get_or_insert_with(|| {
                self.gpu.device.create_buffer(&wgpu::BufferDescriptor {
                    label: Some("batch indices"),
                    size: (INDEX_WORDS * 4) as u64,
                    usage: wgpu::BufferUsages::STORAGE | wgpu::BufferUsages::COPY_DST,
                    mapped_at_creation: false,
                })
            });
            let staged = wgpu::BufferBinding {
                buffer: arena,
                offset: (index_at * 4) as u64,
                size: wgpu::BufferSize::new((values.len().max(1) * 4) as u64),
            };
            entries.push(wgpu::BindGroupEntry { binding, resource: wgpu::BindingResource::Buffer(staged) });
        }
        let bind_group = self.gpu.device.create_bind_group(&wgpu::BindGroupDescriptor {
            label: Some(name),
            layout,
            entries: &entries,
        });
        let groups = (invocations as u64).div_ceil(GROUP as u64).max(1);
        let (x, y) = if groups <= MAX_GROUPS as u64 {
            (groups as u32, 1)
        } else {
            (MAX_GROUPS, groups.div_ceil(MAX_GROUPS as u64) as u32)
        };
        let mut pass =
            r.encoder.begin_compute_pass(&wgpu::ComputePassDescriptor { label: Some(name), timestamp_writes: None });
        pass.set_pipeline(pipeline);
        pass.set_bind_group(0, &bind_group, &[]);
        pass.dispatch_workgroups(x, y, 1);
    }

    /// out (B, O, OH, OW) = conv(inp (B, C, H, W)) with w (O, C, K, K) and b (O).
    pub fn conv_forward(&self, g: &ConvGeom, batch: usize, inp: Slice, w: Slice, b: Slice, out: Slice) {
        let p = conv_params(g, batch, [w.at, b.at, 0, 0]);
        let entries = [(1, inp.whole()), (2, &w.buf.buffer), (3, &b.buf.buffer), (4, out.whole())];
        self.run("conv.forward", &p, &entries, batch * g.out_len());
    }

    /// dw += ∂L/∂w, db += ∂L/∂b and, when given, dinp = ∂L/∂inp.
    #[allow(clippy::too_many_arguments)]
    pub fn conv_backward(
        &self,
        g: &ConvGeom,
        batch: usize,
        inp: Slice,
        w: Slice,
        dout: Slice,
        dw: Slice,
        db: Slice,
        dinp: Option<Slice>,
    ) {
        let p = conv_params(g, batch, [w.at, 0, dw.at, db.at]);
        if let Some(dinp) = dinp {
            let entries = [(2, &w.buf.buffer), (5, dout.whole()), (6, dinp.whole())];
            self.run("conv.backward_input", &p, &entries, batch * g.in_len());
        }
        let entries = [(1, inp.whole()), (5, dout.whole()), (7, &dw.buf.buffer)];
        // One workgroup per weight and per bias: their long sums shared by its invocations.
        self.run("conv.backward_weight", &p, &entries, g.weight_len() * GROUP as usize);
        self.run("conv.backward_bias", &p, &[(5, dout.whole()), (8, &db.buf.buffer)], g.o * GROUP as usize);
    }
}

impl Kernels {
    /// Planes of H×W pooled to OH×OW.
    pub fn pool_forward(&self, g: &PoolGeom, planes: usize, inp: Slice, out: Slice) {
        let entries = [(1, inp.whole()), (2, out.whole())];
        self.run("pool.forward", &pool_params(g, planes), &entries, planes * g.oh() * g.ow());
    }

    /// dinp = ∂L/∂inp (written).
    pub fn pool_backward(&self, g: &PoolGeom, planes: usize, inp: Slice, dout: Slice, dinp: Slice) {
        let entries = [(1, inp.whole()), (3, dout.whole()), (4, dinp.whole())];
        self.run("pool.backward", &pool_params(g, planes), &entries, planes * g.h * g.w);
    }

    /// out = f(inp), elementwise over `n` values.
    pub fn activation_forward(&self, a: Activation, n: usize, inp: Slice, out: Slice) {
        self.run("activation.forward", &activation_params(a, n), &[(1, inp.whole()), (2, out.whole())], n);
    }

    /// dinp = f'(inp) · dout (written).
    pub fn activation_backward(&self, a: Activation, n: usize, inp: Slice, dout: Slice, dinp: Slice) {
        let entries = [(1, inp.whole()), (3, dout.whole()), (4, dinp.whole())];
        self.run("activation.backward", &activation_params(a, n), &entries, n);
    }

    /// out (B, N) = inp (B, K) · wᵀ + b.
    #[allow(clippy::too_many_arguments)]
    pub fn linear_forward(&self, batch: usize, k: usize, n: usize, inp: Slice, w: Slice, b: Slice, out: Slice) {
        let p = u32s(&[batch, k, n, w.at, b.at, 0, 0, 0]);
        let entries = [(1, inp.whole()), (2, &w.buf.buffer), (3, &b.buf.buffer), (4, out.whole())];
        self.run("linear.forward", &p, &entries, batch * n);
    }

    /// dw += ∂L/∂w, db += ∂L/∂b, dinp = ∂L/∂inp.
    #[allow(clippy::too_many_arguments)]
    pub fn linear_backward(
        &self,
        batch: usize,
        k: usize,
        n: usize,
        inp: Slice,
        w: Slice,
        dout: Slice,
        dw: Slice,
        db: Slice,
        dinp: Slice,
    ) {
        let p = u32s(&[batch, k, n, w.at, 0, dw.at, db.at, 0]);
        let entries = [(2, &w.buf.buffer), (5, dout.whole()), (6, dinp.whole())];
        self.run("linear.backward_input", &p, &entries, batch * k);
        self.run("linear.backward_weight", &p, &[(1, inp.whole()), (5, dout.whole()), (7, &dw.buf.buffer)], n * k);
        self.run("linear.backward_bias", &p, &[(5, dout.whole()), (8, &db.buf.buffer)], n);
    }

    /// out (B, C, OH, OW) = coef[c] · Σ_block inp + bias[c].
    #[allow(clippy::too_many_arguments)]
    pub fn subsample_forward(&self, g: &SubsampleGeom, batch: usize, inp: Slice, coef: Slice, bias: Slice, out: Slice) {
        let p = subsample_params(g, batch, [coef.at, bias.at, 0, 0]);
        let entries = [(1, inp.whole()), (2, &coef.buf.buffer), (3, &bias.buf.buffer), (4, out.whole())];
        self.run("subsample.forward", &p, &entries, batch * g.out_len());
    }

    /// dcoef += ∂L/∂coef, dbias += ∂L/∂bias and, when given, dinp = ∂L/∂inp.
    #[allow(clippy::too_many_arguments)]
    pub fn subsample_backward(
        &self,
        g: &SubsampleGeom,
        batch: usize,
        inp: Slice,
        coef: Slice,
        dout: Slice,
        dcoef: Slice,
        dbias: Slice,
        dinp: Option<Slice>,
    ) {
        let p = subsample_params(g, batch, [coef.at, 0, dcoef.at, dbias.at]);
        if let Some(dinp) = dinp {
            let entries = [(2, &coef.buf.buffer), (5, dout.whole()), (6, dinp.whole())];
            self.run("subsample.backward_input", &p, &entries, batch * g.in_len());
        }
        let entries = [(1, inp.whole()), (5, dout.whole()), (7, &dcoef.buf.buffer), (8, &dbias.buf.buffer)];
        self.run("subsample.backward_params", &p, &entries, g.c * GROUP as usize);
    }

    /// out (B, N) = −Σ_j (inp (B, K) − centres (N, K))².
    #[allow(clippy::too_many_arguments)]
    pub fn rbf_forward(&self, batch: usize, k: usize, n: usize, inp: Slice, centres: Slice, out: Slice) {
        let p = u32s(&[batch, k, n, 0]);
        self.run("rbf.forward", &p, &[(1, inp.whole()), (2, centres.whole()), (4, out.whole())], batch * n);
    }

    /// dinp = ∂L/∂inp (written; the centres are fixed).
    #[allow(clippy::too_many_arguments)]
    pub fn rbf_backward(&self, batch: usize, k: usize, n: usize, inp: Slice, centres: Slice, dout: Slice, dinp: Slice) {
        let p = u32s(&[batch, k, n, 0]);
        let entries = [(1, inp.whole()), (2, centres.whole()), (5, dout.whole()), (6, dinp.whole())];
        self.run("rbf.backward", &p, &entries, batch * k);
    }
}

impl Kernels {
    /// The batch's loss under `criterion` against labels y (as f32), with optional class
    /// weights: dz = ∂(mean loss)/∂z, and stats (4 values, on the device) = [Σ w_y,
    /// Σ w_y·E, correct, finite]; `scratch` holds 2 values per example.
    #[allow(clippy::too_many_arguments)]
    pub fn loss(
        &self,
        criterion: Criterion,
        batch: usize,
        classes: usize,
        z: Slice,
        y: Slice,
        class_weights: Option<Slice>,
        dz: Slice,
        scratch: &GpuBuf,
        stats: &GpuBuf,
    ) {
        let p = loss_params(criterion, batch, classes, class_weights.is_some());
        // Without class weights the shader reads none, but the binding must exist: the
        // labels stand in (read-only, as the weights would be).
        let weights = class_weights.map_or(y.whole(), |w| w.whole());
        let (z, y, dz, scratch, stats) = (z.whole(), y.whole(), dz.whole(), &scratch.buffer, &stats.buffer);
        self.run("loss.weight_sum", &p, &[(2, y), (3, weights), (6, stats)], 1);
        self.run("loss.example", &p, &[(1, z), (2, y), (3, weights), (4, dz), (5, scratch), (6, stats)], batch);
        self.run("loss.reduce", &p, &[(5, scratch), (6, stats)], 1);
    }

    /// Add the last loss's `stats`, of a batch of `batch` examples, to the running sums
    /// in `running` (6 u32 words: see loss.wgsl).
    pub fn tally(&self, batch: usize, stats: &GpuBuf, running: &wgpu::Buffer) {
        let p = loss_params(Criterion::CrossEntropy, batch, 0, false);
        self.run("loss.tally", &p, &[(6, &stats.buffer), (7, running)], 1);
    }

    /// dst = value.
    pub fn fill(&self, dst: Slice, value: f32) {
        let p = [dst.len as u32, dst.at as u32, 0, value.to_bits()];
        self.run("tensor.fill", &p, &[(2, &dst.buf.buffer)], dst.len);
    }

    /// dst = src.
    pub fn copy(&self, src: Slice, dst: Slice) {
        assert_eq!(src.len, dst.len, "a copy between slices of one length");
        let p = [dst.len as u32, dst.at as u32, src.at as u32, 0];
        self.run("tensor.copy", &p, &[(1, &src.buf.buffer), (2, &dst.buf.buffer)], dst.len);
    }

    /// dst ·= mask.
    pub fn mask(&self, dst: Slice, mask: Slice) {
        let p = [dst.len as u32, dst.at as u32, mask.at as u32, 0];
        self.run("tensor.mask", &p, &[(1, &mask.buf.buffer), (2, &dst.buf.buffer)], dst.len);
    }

    /// Scale `grads` to an L2 norm of at most `max_norm`, in a fixed order: partial sums
    /// of [`CLIP_CHUNK`] squares, their sum, the scaling. `partial` holds
    /// ⌈len / CLIP_CHUNK⌉ + 1 values.
    pub fn clip_grad_norm(&self, grads: Slice, max_norm: f32, partial: &GpuBuf) {
        let n = grads.len;
        let chunks = n.div_ceil(CLIP_CHUNK);
        assert!(partial.len > chunks, "room for the partial sums");
        let mut p = [0u32; 12];
        p[0] = n as u32;
        p[2] = CLIP_CHUNK as u32;
        p[4] = max_norm.to_bits();
        let (g, part) = (grads.whole(), &partial.buffer);
        self.run("optim.clip_partial", &p, &[(6, g), (7, part)], chunks);
        self.run("optim.clip_norm", &p, &[(7, part)], 1);
        self.run("optim.clip_scale", &p, &[(6, g), (7, part)], n);
    }

    /// One optimizer update of `params` from `grads` by entry point `optim.<kind>`, with
    /// the flags and scalars `h` as optim.wgsl reads them and the state `m`, `v`;
    /// skipped on the device when `stats` says the last loss was not a number.
    #[allow(clippy::too_many_arguments)]
    pub fn update(
        &self,
        kind: &str,
        flags: u32,
        h: [f32; 8],
        params: Slice,
        grads: Slice,
        m: &GpuBuf,
        v: &GpuBuf,
        stats: &GpuBuf,
    ) {
        let n = params.len;
        assert_eq!(grads.len, n, "as many gradients as parameters");
        let mut p = vec![n as u32, flags, 0, 0];
        p.extend(h.iter().map(|x| x.to_bits()));
        let (g, w, stats) = (grads.whole(), params.whole(), &stats.buffer);
        let entries: Vec<(u32, &wgpu::Buffer)> = match kind {
            "adam" => vec![(1, g), (2, w), (3, &m.buffer), (4, &v.buffer), (5, stats)],
            _ => vec![(1, g), (2, w), (3, &m.buffer), (5, stats)],
        };
        self.run(&format!("optim.{kind}"), &p, &entries, n);
    }
}

/// Where a gather's example indices come from.
enum Indices<'a> {
    Buffer(&'a GpuBufU32),
    Staged(&'a [u32]),
}

/// Gradients per partial sum when clipping.
pub const CLIP_CHUNK: usize = 256;

fn loss_params(criterion: Criterion, batch: usize, classes: usize, weighted: bool) -> Vec<u32> {
    let (kind, j) = match criterion {
        Criterion::CrossEntropy => (0, 0.0f32),
        Criterion::Map { j } => (1, j),
        Criterion::Mse => (2, 0.0),
    };
    vec![batch as u32, classes as u32, kind, j.to_bits(), weighted as u32, 0, 0, 0]
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

/// Subsampling's geometry, then where its coefficients, biases and their gradients start.
fn subsample_params(g: &SubsampleGeom, batch: usize, at: [usize; 4]) -> Vec<u32> {
    u32s(&[g.c, g.h, g.w, g.size, g.oh(), g.ow(), batch, at[0], at[1], at[2], at[3], 0])
}

/// A shader's uniform parameters: sizes as the u32s its `struct` declares.
fn u32s(sizes: &[usize]) -> Vec<u32> {
    sizes.iter().map(|&v| v as u32).collect()
}

/// A convolution's geometry, then where its weight, bias and their gradients start.
fn conv_params(g: &ConvGeom, batch: usize, at: [usize; 4]) -> Vec<u32> {
    u32s(&[g.c, g.h, g.w, g.o, g.k, g.pad, g.stride, g.oh(), g.ow(), batch, at[0], at[1], at[2], at[3], 0, 0])
}
