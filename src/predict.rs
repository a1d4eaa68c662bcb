//! Predictions on images of any size and colour: turning a picture into what
//! the network was trained on, the way MNIST itself was made, and the network's
//! class probabilities.
//!
//! MNIST (LeCun et al.): the digits were "size normalized to fit in a 20×20 pixel
//! box while preserving their aspect ratio", anti-aliased to grey levels, then
//! "centered in a 28×28 image by computing the center of mass of the pixels".
//! In the real test set the centre of mass averages (14.0, 14.0) in pixel
//! coordinates and the ink's bounding box is exactly 20 pixels on its longer
//! side; [`prepare`] reproduces both. Fashion-MNIST's products were instead
//! trimmed, scaled so the longer side is 28 and centred. In both, the ink is
//! white on black, so a picture on a light background is inverted.
//!
//! 32×32 architectures get the 28×28 result fitted exactly as their training
//! data was (zero padding, as LeNet-5 did, or resizing: `InputSpec::fit`).

use std::fmt;
use std::path::{Path, PathBuf};
use std::str::FromStr;

use image::imageops::FilterType;
use image::{DynamicImage, ImageBuffer, Luma};

use anyhow::bail;

use crate::checkpoint::Checkpoint;
use crate::data::{DatasetKind, Images};
use crate::engine::cpu::CpuEngine;
use crate::engine::Engine;
use crate::network::Network;
use crate::trainer::trained_on;

/// Side of a dataset image.
pub const SIDE: usize = 28;
/// MNIST's box for the ink's longer side.
pub const MNIST_BOX: usize = 20;
/// The ink must stand out from the background by this much (of 255), else the image is blank.
pub const MIN_CONTRAST: f32 = 24.0;
/// Below this share of the strongest ink, a pixel is background (paper texture, JPEG noise).
pub const NOISE_FLOOR: f32 = 0.2;

/// How a picture is turned into a 28×28 input.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Style {
    /// `Asis` for a 28×28 image on a dark background (already the dataset's
    /// format, e.g. from `lenet data preview --index`), else the style of the
    /// dataset the network was trained on.
    Auto,
    /// Crop to the ink, fit into 20×20 keeping the aspect ratio, centre by centre of mass.
    Mnist,
    /// Crop to the ink, fit into 28×28 keeping the aspect ratio, centre the box.
    Fashion,
    /// Take a 28×28 image as it is (inverted if its background is light).
    AsIs,
}

impl FromStr for Style {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s.to_ascii_lowercase().as_str() {
            "auto" => Ok(Style::Auto),
            "mnist" => Ok(Style::Mnist),
            "fashion" | "fashion-mnist" => Ok(Style::Fashion),
            "none" | "as-is" => Ok(Style::AsIs),
            _ => Err(format!("unknown preprocessing '{s}' (auto, mnist, fashion, none)")),
        }
    }
}

impl fmt::Display for Style {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Style::Auto => "auto",
            Style::Mnist => "mnist",
            Style::Fashion => "fashion",
            Style::AsIs => "none",
        })
    }
}

impl Style {
    /// The dataset's own style.
    pub fn of_dataset(kind: Option<DatasetKind>) -> Style {
        match kind {
            Some(DatasetKind::FashionMnist) => Style::Fashion,
            _ => Style::Mnist,
        }
    }
}

/// A picture that cannot be used, naming the file.
#[derive(Debug, thiserror::Error)]
#[error("{}: {problem}", path.display())]
pub struct ImageError {
    /// The file (`<upload>` and the like for bytes that came from no file).
    pub path: PathBuf,
    /// What is wrong, in words.
    pub problem: String,
    /// What is wrong, as a kind.
    pub kind: ImageProblem,
}

/// What is wrong with a picture, for callers that answer differently (`lenet serve`'s
/// HTTP statuses).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ImageProblem {
    /// The file cannot be read.
    Unreadable,
    /// No bytes at all.
    Empty,
    /// Not a PNG, JPEG or BMP.
    NotAnImage,
    /// A PNG, JPEG or BMP that does not decode (truncated, corrupt).
    Corrupt,
    /// More pixels than the caller takes.
    TooLarge,
}

/// A picture turned into a dataset image.
#[derive(Clone, Debug, PartialEq)]
pub struct Prepared {
    /// 28×28 bytes, white ink on black, row-major.
    pub pixels: Vec<u8>,
    /// The style applied (never `Auto`).
    pub style: Style,
    /// The picture had a light background and was inverted.
    pub inverted: bool,
    /// The picture's size.
    pub source_size: (u32, u32),
    /// The ink's bounding box in the picture: x, y, width, height.
    pub ink_box: (u32, u32, u32, u32),
    /// Things worth telling the user (not errors).
    pub warnings: Vec<String>,
}

/// Read and decode a PNG, JPEG or BMP file (by its content, whatever its name).
pub fn load_image(path: &Path) -> Result<DynamicImage, ImageError> {
    let bytes = std::fs::read(path).map_err(|e| ImageError {
        path: path.to_path_buf(),
        problem: format!("cannot read: {e}"),
        kind: ImageProblem::Unreadable,
    })?;
    decode_image(&bytes, path, None)
}

/// Decode a PNG, JPEG or BMP image from its bytes (by their content; `path` names it in
/// errors). With `max_pixels`, a larger image is refused from its header, before any of
/// it is decoded (`lenet serve` takes images from anyone).
pub fn decode_image(bytes: &[u8], path: &Path, max_pixels: Option<u64>) -> Result<DynamicImage, ImageError> {
    let err = |kind: ImageProblem, problem: String| ImageError { path: path.to_path_buf(), problem, kind };
    if bytes.is_empty() {
        return Err(err(ImageProblem::Empty, "empty file: not an image".into()));
    }
    let not_an_image = "not an image: lenet reads PNG, JPEG and BMP files";
    let format = image::guess_format(bytes).map_err(|_| err(ImageProblem::NotAnImage, not_an_image.into()))?;
    if !matches!(format, image::ImageFormat::Png | image::ImageFormat::Jpeg | image::ImageFormat::Bmp) {
        return Err(err(ImageProblem::NotAnImage, format!("a {format:?} image: lenet reads PNG, JPEG and BMP files")));
    }
    let corrupt = |e: image::ImageError| err(ImageProblem::Corrupt, format!("cannot decode this {format:?} file: {e}"));
    let reader = || image::ImageReader::with_format(std::io::Cursor::new(bytes), format);
    if let Some(max) = max_pixels {
        let (w, h) = reader().into_dimensions().map_err(corrupt)?;
        if w as u64 * h as u64 > max {
            let problem =
                format!("the image is too large: {w}×{h} pixels, at most {:.1} megapixels are taken", max as f64 / 1e6);
            return Err(err(ImageProblem::TooLarge, problem));
        }
    }
    let img = reader().decode().map_err(corrupt)?;
    if img.width() == 0 || img.height() == 0 {
        return Err(err(ImageProblem::Empty, format!("the image is empty ({}×{} pixels)", img.width(), img.height())));
    }
    Ok(img)
}

/// A PNG, JPEG or BMP picture's width and height, from its header (None: not one of
/// those, or no readable header).
pub fn picture_dimensions(bytes: &[u8]) -> Option<(u32, u32)> {
    let format = image::guess_format(bytes).ok()?;
    if !matches!(format, image::ImageFormat::Png | image::ImageFormat::Jpeg | image::ImageFormat::Bmp) {
        return None;
    }
    image::ImageReader::with_format(std::io::Cursor::new(bytes), format).into_dimensions().ok()
}

/// Luma in [0, 255] of every pixel. Transparent pixels are composited over the
/// background that contrasts with the opaque ones (white under dark strokes,
/// black under light ones), so a drawing on a transparent canvas keeps its ink.
pub fn to_gray(img: &DynamicImage) -> (Vec<f32>, u32, u32) {
    let (w, h) = (img.width(), img.height());
    let rgba = img.to_rgba32f();
    let luma = |p: &image::Rgba<f32>| 255.0 * (0.299 * p[0] + 0.587 * p[1] + 0.114 * p[2]);
    let (mut sum, mut weight) = (0.0f64, 0.0f64);
    for p in rgba.pixels() {
        sum += (luma(p) * p[3]) as f64;
        weight += p[3] as f64;
    }
    let under = if weight > 0.0 && sum / weight < 127.5 { 255.0 } else { 0.0 };
    let gray = rgba.pixels().map(|p| luma(p) * p[3] + under * (1.0 - p[3])).collect();
    (gray, w, h)
}

/// The median of the picture's outermost pixels: the background's level.
fn border_median(gray: &[f32], w: usize, h: usize) -> f32 {
    let mut border: Vec<f32> = Vec::with_capacity(2 * (w + h));
    for y in 0..h {
        for x in 0..w {
            if y == 0 || x == 0 || y == h - 1 || x == w - 1 {
                border.push(gray[y * w + x]);
            }
        }
    }
    border.sort_by(f32::total_cmp);
    border[border.len() / 2]
}

/// The level of the paper under every pixel: a morphological closing (for dark ink on
/// light paper; an opening for light ink on dark) over windows wider than any stroke,
/// so that strokes vanish and the light's slow changes (gradients, a shadow across the
/// sheet) stay, then smoothed. Computed on a copy at most 96 pixels on its longer side
/// (the paper's level changes slowly) and scaled back up.
fn paper_level(gray: &[f32], w: usize, h: usize, light_paper: bool) -> Vec<f32> {
    const SMALL: usize = 96;
    let scale = (SMALL as f64 / w.max(h) as f64).min(1.0);
    let (sw, sh) = (((w as f64 * scale).round() as usize).max(1), ((h as f64 * scale).round() as usize).max(1));
    // (image's f32 resizing clamps to [0, 1].)
    let unit: Vec<f32> = gray.iter().map(|v| v / 255.0).collect();
    let full = ImageBuffer::<Luma<f32>, Vec<f32>>::from_raw(w as u32, h as u32, unit).expect("w×h");
    let small = image::imageops::resize(&full, sw as u32, sh as u32, FilterType::Triangle).into_raw();
    // A window of a fifth of the picture: wider than a digit's strokes, narrower than the light's changes.
    let r = (sw.max(sh) / 10).max(1);
    let (spread, shrink): (Pick, Pick) = if light_paper { (f32::max, f32::min) } else { (f32::min, f32::max) };
    let closed = extreme_filter(&extreme_filter(&small, sw, sh, r, spread), sw, sh, r, shrink);
    let smooth = box_blur(&closed, sw, sh, r.div_ceil(2));
    let small = ImageBuffer::<Luma<f32>, Vec<f32>>::from_raw(sw as u32, sh as u32, smooth).expect("sw×sh");
    let level = image::imageops::resize(&small, w as u32, h as u32, FilterType::Triangle).into_raw();
    level.into_iter().map(|v| v * 255.0).collect()
}

/// The larger or the smaller of two levels.
type Pick = fn(f32, f32) -> f32;

/// Each pixel replaced by `pick` over the (2r+1)² square around it (clipped to the image).
fn extreme_filter(v: &[f32], w: usize, h: usize, r: usize, pick: Pick) -> Vec<f32> {
    window_filter(v, w, h, r, |window| window.reduce(pick).expect("a pixel"))
}

/// The mean over the (2r+1)² square around each pixel (clipped to the image).
fn box_blur(v: &[f32], w: usize, h: usize, r: usize) -> Vec<f32> {
    window_filter(v, w, h, r, |window| {
        let (s, n) = window.fold((0.0, 0.0), |(s, n), x| (s + x, n + 1.0));
        s / n
    })
}

/// A square window filter done as two passes, along the rows then the columns: each
/// pixel becomes `reduce` of the 2r + 1 values around it (clipped to the image). Right
/// for any `reduce` that is separable (max, min, mean of a clipped box).
fn window_filter(
    v: &[f32],
    w: usize,
    h: usize,
    r: usize,
    reduce: impl Fn(&mut dyn Iterator<Item = f32>) -> f32,
) -> Vec<f32> {
    let span = |c: usize, n: usize| c.saturating_sub(r)..(c + r + 1).min(n);
    let rows: Vec<f32> = (0..w * h).map(|i| reduce(&mut span(i % w, w).map(|x| v[i / w * w + x]))).collect();
    (0..w * h).map(|i| reduce(&mut span(i / w, h).map(|y| rows[y * w + i % w]))).collect()
}

/// The bounding box (x, y, w, h) of the pixels above zero.
pub fn ink_box(pixels: &[f32], w: usize, h: usize) -> Option<(usize, usize, usize, usize)> {
    let (mut x0, mut y0, mut x1, mut y1) = (usize::MAX, usize::MAX, 0, 0);
    for y in 0..h {
        for x in 0..w {
            if pixels[y * w + x] > 0.0 {
                (x0, y0, x1, y1) = (x0.min(x), y0.min(y), x1.max(x), y1.max(y));
            }
        }
    }
    (x0 != usize::MAX).then(|| (x0, y0, x1 - x0 + 1, y1 - y0 + 1))
}

/// Centre of mass (x, y) of an image, in pixel coordinates (pixel i's centre is i).
pub fn centre_of_mass(pixels: &[f32], w: usize) -> Option<(f64, f64)> {
    let (mut m, mut mx, mut my) = (0.0f64, 0.0f64, 0.0f64);
    for (i, &v) in pixels.iter().enumerate() {
        let v = v as f64;
        m += v;
        mx += v * (i % w) as f64;
        my += v * (i / w) as f64;
    }
    (m > 0.0).then(|| (mx / m, my / m))
}

/// Turn a decoded picture into a 28×28 dataset image.
pub fn prepare(img: &DynamicImage, style: Style, trained_on: Option<DatasetKind>) -> Result<Prepared, String> {
    let (gray, w, h) = to_gray(img);
    prepare_gray(&gray, w as usize, h as usize, style, trained_on)
}

/// [`prepare`] on luma values in [0, 255], row-major `w`×`h`.
pub fn prepare_gray(
    gray: &[f32],
    w: usize,
    h: usize,
    style: Style,
    trained_on: Option<DatasetKind>,
) -> Result<Prepared, String> {
    if w == 0 || h == 0 || gray.len() != w * h {
        return Err(format!("the image is empty ({w}×{h} pixels)"));
    }
    let bg = border_median(gray, w, h);
    let inverted = bg > 127.5;
    let style = match style {
        Style::Auto if w == SIDE && h == SIDE && !inverted => Style::AsIs,
        Style::Auto => Style::of_dataset(trained_on),
        s => s,
    };
    // Ink: how far each pixel stands out from the paper around it, brighter = more. For a
    // picture of a digit, the paper's level is estimated everywhere (a photo's light is
    // uneven, and a shadow is no ink); strokes are thin, so the estimate cannot mistake
    // them for paper. A garment is a solid shape (Fashion-MNIST's style), and an image
    // hardly bigger than a dataset image has no room for the estimate: one level.
    let paper = match style {
        Style::Mnist if w.max(h) > 2 * SIDE => paper_level(gray, w, h, inverted),
        _ => vec![bg; w * h],
    };
    let ink: Vec<f32> = gray.iter().zip(&paper).map(|(&v, &b)| if inverted { b - v } else { v - b }.max(0.0)).collect();
    let peak = ink.iter().copied().fold(0.0, f32::max);
    if peak < MIN_CONTRAST {
        return Err(format!(
            "the image is blank: nothing stands out from its background (contrast {peak:.0} of 255, \
             at least {MIN_CONTRAST:.0} needed)"
        ));
    }
    let mut warnings = Vec::new();
    if style == Style::AsIs {
        if (w, h) != (SIDE, SIDE) {
            return Err(format!("--preprocess none takes 28×28 images, this one is {w}×{h}"));
        }
        let pixels = gray.iter().map(|&v| (if inverted { 255.0 - v } else { v }).round().clamp(0.0, 255.0) as u8);
        let pixels: Vec<u8> = pixels.collect();
        let (bx, by, bw, bh) = ink_box(&ink, w, h).unwrap_or((0, 0, w, h));
        return Ok(Prepared {
            pixels,
            style,
            inverted,
            source_size: (w as u32, h as u32),
            ink_box: (bx as u32, by as u32, bw as u32, bh as u32),
            warnings,
        });
    }
    // Scale the ink to [0, 1] above the noise floor: the background becomes exactly 0.
    let floor = NOISE_FLOOR * peak;
    let ink: Vec<f32> = ink.iter().map(|&v| ((v - floor) / (peak - floor)).clamp(0.0, 1.0)).collect();
    let (bx, by, bw, bh) = ink_box(&ink, w, h).expect("the peak pixel is above the floor");
    if bx == 0 || by == 0 || bx + bw == w || by + bh == h {
        warnings.push("the drawing touches the picture's edge: part of it may be cut off".to_string());
    }
    if bw * bh * 10 > w * h * 9 && w * h > 64 {
        warnings.push("the ink fills the whole picture: is the drawing on a plain background?".to_string());
    }
    let crop: Vec<f32> = (by..by + bh).flat_map(|y| ink[y * w + bx..y * w + bx + bw].iter().copied()).collect();
    let target = if style == Style::Mnist { MNIST_BOX } else { SIDE };
    let scale = target as f64 / bw.max(bh) as f64;
    let nw = ((bw as f64 * scale).round() as usize).clamp(1, target);
    let nh = ((bh as f64 * scale).round() as usize).clamp(1, target);
    let src = ImageBuffer::<Luma<f32>, Vec<f32>>::from_raw(bw as u32, bh as u32, crop).expect("crop size");
    // A triangle filter widened by the scale: anti-aliased grey levels, as MNIST's normalisation made.
    let mut small = image::imageops::resize(&src, nw as u32, nh as u32, FilterType::Triangle).into_raw();
    if style == Style::Mnist {
        // Strokes thinner than a pixel after scaling come out faint: MNIST's strokes reach full ink.
        let top = small.iter().copied().fold(0.0, f32::max);
        if top > 0.0 {
            small.iter_mut().for_each(|v| *v /= top);
        }
    }
    let (ox, oy) = match style {
        Style::Mnist => {
            let (cx, cy) = centre_of_mass(&small, nw).unwrap_or((nw as f64 / 2.0, nh as f64 / 2.0));
            let centre = SIDE as f64 / 2.0;
            // The shift that brings the centre of mass to (14, 14), keeping all the ink inside.
            let o = |c: f64, n: usize| ((centre - c).round().max(0.0) as usize).min(SIDE - n);
            (o(cx, nw), o(cy, nh))
        }
        _ => ((SIDE - nw) / 2, (SIDE - nh) / 2),
    };
    let mut pixels = vec![0u8; SIDE * SIDE];
    for y in 0..nh {
        for x in 0..nw {
            // Any ink stays visible: the ink box keeps its exact size, as in MNIST.
            let v = small[y * nw + x];
            pixels[(oy + y) * SIDE + ox + x] = if v > 0.0 { (v * 255.0).round().clamp(1.0, 255.0) as u8 } else { 0 };
        }
    }
    Ok(Prepared {
        pixels,
        style,
        inverted,
        source_size: (w as u32, h as u32),
        ink_box: (bx as u32, by as u32, bw as u32, bh as u32),
        warnings,
    })
}

/// The `k` most probable classes as `predict --json` lists them: class, name, probability.
pub fn top_json(probabilities: &[f64], k: usize, names: &[&str]) -> serde_json::Value {
    top_k(probabilities, k)
        .into_iter()
        .map(|(c, p)| serde_json::json!({"class": c, "name": names.get(c).copied().unwrap_or("?"), "probability": p}))
        .collect()
}

/// One classified picture as `lenet predict --json` prints it (and `lenet serve`
/// answers): the `top` classes, how the picture was prepared and, for RBF outputs
/// (`outputs` = −y_i), the distances y_i.
pub fn picture_json(
    file: &str,
    prepared: &Prepared,
    probabilities: &[f64],
    outputs: &[f32],
    rbf: bool,
    top: usize,
    names: &[&str],
) -> serde_json::Value {
    let p = prepared;
    let mut item = serde_json::json!({
        "file": file,
        "predictions": top_json(probabilities, top, names),
        "preprocess": p.style.to_string(),
        "inverted": p.inverted,
        "size": [p.source_size.0, p.source_size.1],
        "ink_box": [p.ink_box.0, p.ink_box.1, p.ink_box.2, p.ink_box.3],
        "warnings": p.warnings,
    });
    if rbf {
        // y_i, the squared distance to class i's bitmap; probability = softmax(−y).
        item["distances"] = serde_json::json!(outputs.iter().map(|v| -v).collect::<Vec<f32>>());
    }
    item
}

/// Softmax of one row of logits, in f64.
pub fn softmax(logits: &[f32]) -> Vec<f64> {
    let max = logits.iter().copied().fold(f32::NEG_INFINITY, f32::max) as f64;
    let e: Vec<f64> = logits.iter().map(|&z| (z as f64 - max).exp()).collect();
    let sum: f64 = e.iter().sum();
    e.iter().map(|v| v / sum).collect()
}

/// The `k` most probable classes, most probable first (ties: lower class first).
pub fn top_k(probabilities: &[f64], k: usize) -> Vec<(usize, f64)> {
    let mut order: Vec<usize> = (0..probabilities.len()).collect();
    order.sort_by(|&a, &b| probabilities[b].total_cmp(&probabilities[a]).then(a.cmp(&b)));
    order.into_iter().take(k).map(|c| (c, probabilities[c])).collect()
}

/// Class probabilities of every image, as the network sees them after the
/// input fit of its architecture (the same path as training and `lenet eval`).
pub fn probabilities<E: Engine>(net: &mut Network<E>, images: &Images, batch: usize) -> Vec<Vec<f64>>
where
    Network<E>: Send,
{
    outputs(net, images, batch).iter().map(|o| softmax(o)).collect()
}

/// The network's outputs for each image (fitted and scaled as the network expects):
/// logits, or for RBF outputs −y_i, minus the squared distance to each class's bitmap.
pub fn outputs<E: Engine>(net: &mut Network<E>, images: &Images, batch: usize) -> Vec<Vec<f32>>
where
    Network<E>: Send,
{
    let input = net.spec().input.clone();
    let labels = vec![0u8; images.count];
    let examples = net.engine.upload_examples(images, &labels, &input);
    let classes = net.num_classes();
    let indices: Vec<u32> = (0..images.count as u32).collect();
    let mut out = Vec::with_capacity(images.count);
    for chunk in indices.chunks(batch.max(1)) {
        out.extend(net.infer(&examples, chunk).1.chunks(classes).map(<[f32]>::to_vec));
    }
    out
}

/// A trained network that reads pictures as `lenet predict` does: each picture is
/// prepared the way its training data was made ([`prepare`]), then classified.
///
/// ```no_run
/// # fn main() -> anyhow::Result<()> {
/// let model = lenet::models::find("mnist-relu")?.checkpoint();
/// let mut classifier = lenet::Classifier::new(&model)?;
/// let seen = classifier.classify_file("photo.jpg")?;
/// println!("{} ({:.1} %)", seen.name, 100.0 * seen.probability);
/// # Ok(())
/// # }
/// ```
pub struct Classifier<E: Engine = CpuEngine> {
    net: Network<E>,
    trained_on: Option<DatasetKind>,
    style: Style,
}

/// One picture, read: the most probable class and every class's probability.
#[derive(Clone, Debug, PartialEq)]
pub struct Prediction {
    /// The most probable class, 0–9 (the lower class on a tie).
    pub class: usize,
    /// Its name in the training dataset: "7", or "Sneaker" for Fashion-MNIST.
    pub name: &'static str,
    /// Its probability, in [0, 1].
    pub probability: f64,
    /// All ten classes' probabilities in class order, summing to 1 (softmax of the
    /// outputs; for an RBF network, softmax of minus the distances).
    pub probabilities: Vec<f64>,
    /// The 28×28 image the network read, and how the picture became it.
    pub prepared: Prepared,
}

impl Prediction {
    /// The `k` most probable classes, most probable first: (class, probability).
    pub fn top(&self, k: usize) -> Vec<(usize, f64)> {
        top_k(&self.probabilities, k)
    }
}

impl Classifier<CpuEngine> {
    /// The checkpoint's network on one CPU thread (a picture is about a millisecond of
    /// work); its dataset, when the checkpoint says, picks the preprocessing and the
    /// class names (else MNIST's).
    pub fn new(checkpoint: &Checkpoint) -> anyhow::Result<Self> {
        Self::on(CpuEngine::new(1)?, checkpoint)
    }
}

impl<E: Engine> Classifier<E>
where
    Network<E>: Send,
{
    /// The checkpoint's network on `engine` ([`Classifier::new`] takes the CPU's).
    /// An error when the network does not have ten outputs.
    pub fn on(engine: E, checkpoint: &Checkpoint) -> anyhow::Result<Self> {
        let mut net = Network::new(engine, &checkpoint.spec)?;
        net.set_params(&checkpoint.params)?;
        if net.num_classes() != 10 {
            bail!("the network has {} outputs; a classifier reads 10 classes", net.num_classes());
        }
        Ok(Classifier { net, trained_on: trained_on(checkpoint), style: Style::Auto })
    }

    /// Prepare pictures in this style instead of the training dataset's ([`Style::Auto`]).
    pub fn with_style(mut self, style: Style) -> Self {
        self.style = style;
        self
    }

    /// The dataset the network was trained on, when its checkpoint says.
    pub fn dataset(&self) -> Option<DatasetKind> {
        self.trained_on
    }

    /// The ten class names, in class order.
    pub fn class_names(&self) -> [&'static str; 10] {
        self.trained_on.unwrap_or(DatasetKind::Mnist).class_names()
    }

    /// Read a PNG, JPEG or BMP file of any size and colour. Errors name the file: not
    /// an image, corrupt, or blank (no ink to read).
    pub fn classify_file(&mut self, path: impl AsRef<Path>) -> anyhow::Result<Prediction> {
        let path = path.as_ref();
        let img = load_image(path)?;
        let prepared =
            prepare(&img, self.style, self.trained_on).map_err(|p| anyhow::anyhow!("{}: {p}", path.display()))?;
        Ok(self.classify_prepared(prepared))
    }

    /// Read an encoded picture (the bytes of a PNG, JPEG or BMP file).
    pub fn classify_encoded(&mut self, bytes: &[u8]) -> anyhow::Result<Prediction> {
        let img = decode_image(bytes, Path::new("<picture>"), None)?;
        let prepared = prepare(&img, self.style, self.trained_on).map_err(anyhow::Error::msg)?;
        Ok(self.classify_prepared(prepared))
    }

    /// Read a dataset image as it is: 28×28 bytes, white ink on black, row-major (one
    /// of [`Images`]' rows, say).
    pub fn classify_pixels(&mut self, pixels: &[u8]) -> anyhow::Result<Prediction> {
        let n = SIDE * SIDE;
        if pixels.len() != n {
            bail!("a dataset image is {SIDE}×{SIDE} = {n} bytes, got {}", pixels.len());
        }
        let prepared = Prepared {
            pixels: pixels.to_vec(),
            style: Style::AsIs,
            inverted: false,
            source_size: (SIDE as u32, SIDE as u32),
            ink_box: ink_box(&pixels.iter().map(|&p| p as f32).collect::<Vec<_>>(), SIDE, SIDE)
                .map_or((0, 0, 0, 0), |(x, y, w, h)| (x as u32, y as u32, w as u32, h as u32)),
            warnings: Vec::new(),
        };
        Ok(self.classify_prepared(prepared))
    }

    fn classify_prepared(&mut self, prepared: Prepared) -> Prediction {
        let images = Images { count: 1, rows: SIDE, cols: SIDE, pixels: prepared.pixels.clone() };
        let probabilities = probabilities(&mut self.net, &images, 1).remove(0);
        let (class, probability) = top_k(&probabilities, 1)[0];
        let name = self.class_names()[class];
        Prediction { class, name, probability, probabilities, prepared }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn softmax_and_top_k() {
        let p = softmax(&[1.0, 3.0, 2.0, 3.0]);
        let e = [1f64.exp(), 3f64.exp(), 2f64.exp(), 3f64.exp()];
        let s: f64 = e.iter().sum();
        for (a, b) in p.iter().zip(e) {
            assert!((a - b / s).abs() < 1e-12);
        }
        assert_eq!(top_k(&p, 3).iter().map(|t| t.0).collect::<Vec<_>>(), vec![1, 3, 2]);
    }

    #[test]
    fn style_parses() {
        assert_eq!("Fashion-MNIST".parse::<Style>().unwrap(), Style::Fashion);
        assert!("x".parse::<Style>().unwrap_err().contains("auto, mnist"));
    }
}
