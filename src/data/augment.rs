//! Distortions of training digits, as LeNet-5 was trained (LeCun et al. 1998,
//! section III-C: random horizontal and vertical translations, scaling, squeezing and
//! horizontal shearing), with rotation and the elastic distortion of Simard,
//! Steinkraus and Platt (2003) as options. Never a flip: a flipped 2 is not a 2.
//!
//! The paper gives no magnitudes; the defaults (`Augment::paper`) are ±2 pixels of
//! translation, ±10 % scale, ±10 % squeeze (width against height), ±0.15 horizontal
//! shear, no rotation, no elastic field. Each distorted image is a pure function of
//! (seed, epoch, index): the same on any number of threads, fresh every epoch.
//!
//! Every output pixel is sampled bilinearly from the source at the inverse of the
//! drawn transform. The translation is then kept to values that leave the digit's
//! ink inside the frame: a distortion may move a digit, never cut it.

use std::fmt;
use std::str::FromStr;

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use rayon::prelude::*;
use serde::{Deserialize, Serialize};

use super::dataset::Split;
use super::idx::Images;
use crate::layers::{dispatch, Kernel, Lanes};

/// How strongly to distort: each value is the largest magnitude drawn (uniformly,
/// in both directions). Zero turns a distortion off.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct Augment {
    /// Shift along each axis, pixels.
    pub translate: f32,
    /// Relative change of size (0.1: 90 %–110 %).
    pub scale: f32,
    /// Relative change of width against height.
    pub squeeze: f32,
    /// Horizontal shear: x moves by shear·(y − centre).
    pub shear: f32,
    /// Rotation, degrees.
    pub rotate: f32,
    /// Elastic distortion: the displacement field's strength α (pixels); 0 is off.
    pub elastic: f32,
    /// The elastic field's smoothness σ (pixels of Gaussian blur).
    pub elastic_sigma: f32,
}

impl Augment {
    /// The paper's distortions with our magnitudes (see the module doc).
    pub const fn paper() -> Self {
        Augment { translate: 2.0, scale: 0.1, squeeze: 0.1, shear: 0.15, rotate: 0.0, elastic: 0.0, elastic_sigma: 4.0 }
    }

    /// Simard et al.'s elastic field for MNIST: α = 34, σ = 4.
    pub const ELASTIC: (f32, f32) = (34.0, 4.0);

    fn check(&self) -> Result<(), String> {
        let fields = [
            ("translate", self.translate, 14.0),
            ("scale", self.scale, 0.9),
            ("squeeze", self.squeeze, 0.9),
            ("shear", self.shear, 2.0),
            ("rotate", self.rotate, 180.0),
            ("elastic", self.elastic, 100.0),
            ("elastic-sigma", self.elastic_sigma, 14.0),
        ];
        for (name, v, max) in fields {
            if !(v.is_finite() && (0.0..=max).contains(&v)) {
                return Err(format!("augment: {name} must be in [0, {max}], got {v}"));
            }
        }
        if self.elastic > 0.0 && self.elastic_sigma < 0.5 {
            return Err(format!("augment: elastic-sigma must be at least 0.5, got {}", self.elastic_sigma));
        }
        Ok(())
    }
}

/// `paper`, or settings on top of it: `rotate=10,elastic` or
/// `translate=3,scale=0.15,shear=0,elastic=34:4`. `elastic` alone is α 34, σ 4.
impl FromStr for Augment {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let mut a = Augment::paper();
        for part in s.split(',').map(str::trim).filter(|p| !p.is_empty() && *p != "paper") {
            let (key, value) = part.split_once('=').unwrap_or((part, ""));
            let number = |v: &str| {
                v.parse::<f32>().map_err(|_| format!("augment: {key} needs a number, got {v:?} (e.g. {key}=0.1)"))
            };
            match key {
                "translate" => a.translate = number(value)?,
                "scale" => a.scale = number(value)?,
                "squeeze" => a.squeeze = number(value)?,
                "shear" => a.shear = number(value)?,
                "rotate" => a.rotate = number(value)?,
                "elastic" if value.is_empty() => (a.elastic, a.elastic_sigma) = Augment::ELASTIC,
                "elastic" => {
                    let (alpha, sigma) = value.split_once(':').unwrap_or((value, "4"));
                    (a.elastic, a.elastic_sigma) = (number(alpha)?, number(sigma)?);
                }
                _ => {
                    return Err(format!(
                        "augment: unknown setting {key:?}; use paper or translate, scale, squeeze, shear, rotate, \
                         elastic[=ALPHA:SIGMA]"
                    ))
                }
            }
        }
        a.check()?;
        Ok(a)
    }
}

impl fmt::Display for Augment {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "translate={},scale={},squeeze={},shear={},rotate={}",
            self.translate, self.scale, self.squeeze, self.shear, self.rotate
        )?;
        if self.elastic > 0.0 {
            write!(f, ",elastic={}:{}", self.elastic, self.elastic_sigma)?;
        }
        Ok(())
    }
}

/// One drawn affine map, output = a·(input − c) + c + t, with c the image centre.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Affine {
    /// Row-major 2×2 matrix acting on (x, y).
    pub a: [f32; 4],
    pub t: [f32; 2],
}

impl Affine {
    /// Where input point (x, y) lands, for an image of `rows`×`cols`.
    pub fn apply(&self, x: f32, y: f32, rows: usize, cols: usize) -> (f32, f32) {
        let (cx, cy) = centre(rows, cols);
        let (dx, dy) = (x - cx, y - cy);
        (self.a[0] * dx + self.a[1] * dy + cx + self.t[0], self.a[2] * dx + self.a[3] * dy + cy + self.t[1])
    }
}

fn centre(rows: usize, cols: usize) -> (f32, f32) {
    ((cols as f32 - 1.0) / 2.0, (rows as f32 - 1.0) / 2.0)
}

/// The random stream of image `index` in `epoch`: independent of threads and order.
pub fn image_rng(seed: u64, epoch: usize, index: usize) -> ChaCha8Rng {
    let mut rng = ChaCha8Rng::seed_from_u64(seed ^ 0xA076_1D64_78BD_642F);
    rng.set_stream(((epoch as u64) << 32) ^ index as u64);
    rng
}

/// The bounding box (x0, y0, x1, y1) of the nonzero pixels, None for a blank image.
fn ink_box(img: &[u8], rows: usize, cols: usize) -> Option<[f32; 4]> {
    let mut b = [f32::INFINITY, f32::INFINITY, f32::NEG_INFINITY, f32::NEG_INFINITY];
    for y in 0..rows {
        for x in 0..cols {
            if img[y * cols + x] > 0 {
                b = [b[0].min(x as f32), b[1].min(y as f32), b[2].max(x as f32), b[3].max(y as f32)];
            }
        }
    }
    b[0].is_finite().then_some(b)
}

/// Draw the affine part for `img`, its translation kept to values that leave every
/// ink pixel at least `margin` pixels inside the frame (where the digit allows).
pub fn draw_affine(aug: &Augment, img: &[u8], rows: usize, cols: usize, margin: f32, rng: &mut impl Rng) -> Affine {
    let mut sym = |m: f32| if m > 0.0 { rng.gen_range(-m..=m) } else { 0.0 };
    let s = 1.0 + sym(aug.scale);
    let q = 1.0 + sym(aug.squeeze);
    let h = sym(aug.shear);
    let r = sym(aug.rotate).to_radians();
    let t = [sym(aug.translate), sym(aug.translate)];
    // rotation · shear · (scale, squeezed in x)
    let (sx, sy) = (s * q, s);
    let m = [sx, h * sy, 0.0, sy];
    let (cos, sin) = (r.cos(), r.sin());
    let a = [cos * m[0] - sin * m[2], cos * m[1] - sin * m[3], sin * m[0] + cos * m[2], sin * m[1] + cos * m[3]];
    let mut affine = Affine { a, t: [0.0, 0.0] };
    let Some(b) = ink_box(img, rows, cols) else { return Affine { a, t } };
    // Where the ink's corners land without translation, then the translations that keep
    // them inside [margin, size − 1 − margin].
    let corners = [(b[0], b[1]), (b[2], b[1]), (b[0], b[3]), (b[2], b[3])].map(|(x, y)| affine.apply(x, y, rows, cols));
    let lo = |i: usize| corners.iter().map(|c| if i == 0 { c.0 } else { c.1 }).fold(f32::INFINITY, f32::min);
    let hi = |i: usize| corners.iter().map(|c| if i == 0 { c.0 } else { c.1 }).fold(f32::NEG_INFINITY, f32::max);
    for (i, size) in [(0, cols), (1, rows)] {
        let (min_t, max_t) = (margin - lo(i), size as f32 - 1.0 - margin - hi(i));
        affine.t[i] = if min_t <= max_t { t[i].clamp(min_t, max_t) } else { (min_t + max_t) / 2.0 };
    }
    affine
}

/// The source image as floats inside a one-pixel border of zeros, so that a bilinear
/// sample needs no bounds check once its point is known to lie within the border.
struct Padded {
    px: Vec<f32>,
    rows: usize,
    cols: usize,
}

impl Padded {
    fn new(img: &[u8], rows: usize, cols: usize) -> Padded {
        let mut px = vec![0.0f32; (rows + 2) * (cols + 2)];
        for (dst, src) in px.chunks_mut(cols + 2).skip(1).zip(img.chunks(cols)) {
            for (d, &s) in dst[1..].iter_mut().zip(src) {
                *d = s as f32;
            }
        }
        Padded { px, rows, cols }
    }

    /// Bilinear sample at (x, y), zero outside the image.
    #[inline(always)]
    fn sample(&self, x: f32, y: f32) -> f32 {
        // Outside (−1, size) every tap is in the zero border or beyond it.
        if !(x > -1.0 && y > -1.0 && x < self.cols as f32 && y < self.rows as f32) {
            return 0.0;
        }
        // +1: the border. x + 1 > 0, so truncating it is flooring it (without a libm
        // call), and x0 + 1 ≤ cols: both taps are inside.
        let (xs, ys) = (x + 1.0, y + 1.0);
        let (xi, yi) = (xs as usize, ys as usize);
        let (fx, fy) = (xs - xi as f32, ys - yi as f32);
        let w = self.cols + 2;
        let at = yi * w + xi;
        let (p, q, r, s) = (self.px[at], self.px[at + 1], self.px[at + w], self.px[at + w + 1]);
        let top = p + (q - p) * fx;
        let bottom = r + (s - r) * fx;
        top + (bottom - top) * fy
    }
}

/// One pass of a Gaussian blur down the columns of a `rows`×`cols` field (zero
/// outside, as scipy's gaussian_filter with mode="constant"), scaled by `gain`:
/// whole rows at a time, so the inner loop is a vector axpy.
/// (Run inside [`dispatch`], so that the axpys are compiled for the CPU's vector
/// instructions; each is elementwise, so every instruction set gives the same bits.)
fn blur_columns(field: &[f32], rows: usize, cols: usize, kernel: &[f32], gain: f32) -> Vec<f32> {
    dispatch(Blur { field, rows, cols, kernel, gain })
}

struct Blur<'a> {
    field: &'a [f32],
    rows: usize,
    cols: usize,
    kernel: &'a [f32],
    gain: f32,
}

impl Kernel<f32> for Blur<'_> {
    type Output = Vec<f32>;
    #[inline(always)]
    fn run<V: Lanes<T = f32>>(self) -> Vec<f32> {
        let Blur { field, rows, cols, kernel, gain } = self;
        let radius = kernel.len() / 2;
        let mut out = vec![0.0f32; rows * cols];
        for (y, dst) in out.chunks_mut(cols).enumerate() {
            for (k, &w) in kernel.iter().enumerate() {
                let Some(src_y) = (y + k).checked_sub(radius).filter(|&v| v < rows) else { continue };
                let w = w * gain;
                for (d, &s) in dst.iter_mut().zip(&field[src_y * cols..(src_y + 1) * cols]) {
                    *d += w * s;
                }
            }
        }
        out
    }
}

fn transpose(field: &[f32], rows: usize, cols: usize) -> Vec<f32> {
    let mut out = vec![0.0f32; rows * cols];
    for y in 0..rows {
        for x in 0..cols {
            out[x * rows + y] = field[y * cols + x];
        }
    }
    out
}

/// A smooth random displacement field (Simard et al.): uniform noise in [−1, 1] per
/// pixel, blurred with a Gaussian of σ (truncated at 3σ), times α. Returns (dx, dy)
/// per pixel.
fn elastic_field(rows: usize, cols: usize, alpha: f32, sigma: f32, rng: &mut impl Rng) -> (Vec<f32>, Vec<f32>) {
    let radius = (3.0 * sigma).ceil() as isize;
    let kernel: Vec<f32> = (-radius..=radius).map(|i| (-((i * i) as f32) / (2.0 * sigma * sigma)).exp()).collect();
    let norm: f32 = kernel.iter().sum();
    let kernel: Vec<f32> = kernel.iter().map(|w| w / norm).collect();
    // The separable blur as two column passes with transposes between them.
    let blur = |field: Vec<f32>| {
        let down = transpose(&blur_columns(&field, rows, cols, &kernel, 1.0), rows, cols);
        transpose(&blur_columns(&down, cols, rows, &kernel, alpha), cols, rows)
    };
    let mut noise = || (0..rows * cols).map(|_| rng.gen_range(-1.0f32..=1.0)).collect::<Vec<_>>();
    let (dx, dy) = (noise(), noise());
    (blur(dx), blur(dy))
}

/// Distort one `rows`×`cols` image into `out` with the draws of `rng`.
pub fn distort(aug: &Augment, img: &[u8], rows: usize, cols: usize, rng: &mut impl Rng, out: &mut [u8]) {
    let field = (aug.elastic > 0.0).then(|| elastic_field(rows, cols, aug.elastic, aug.elastic_sigma, rng));
    // The field moves each output pixel's source by at most its largest displacement:
    // keep that much more room around the ink.
    let reach = field.as_ref().map_or(0.0, |(dx, dy)| dx.iter().chain(dy).fold(0.0f32, |m, v| m.max(v.abs())).ceil());
    let affine = draw_affine(aug, img, rows, cols, reach, rng);
    // The inverse map: input = a⁻¹·(output − c − t) + c.
    let [a, b, c, d] = affine.a;
    let det = a * d - b * c;
    let inv = [d / det, -b / det, -c / det, a / det];
    let (cx, cy) = centre(rows, cols);
    let src = Padded::new(img, rows, cols);
    for (y, out_row) in out.chunks_mut(cols).enumerate() {
        for (x, o) in out_row.iter_mut().enumerate() {
            let (mut px, mut py) = (x as f32, y as f32);
            if let Some((dx, dy)) = &field {
                px += dx[y * cols + x];
                py += dy[y * cols + x];
            }
            let (ux, uy) = (px - cx - affine.t[0], py - cy - affine.t[1]);
            let (sx, sy) = (inv[0] * ux + inv[1] * uy + cx, inv[2] * ux + inv[3] * uy + cy);
            // Rounded to the nearest byte: the sample is in [0, 255].
            *o = (src.sample(sx, sy) + 0.5) as u8;
        }
    }
}

/// The training split of `epoch`, every image distorted (labels unchanged), on all
/// of rayon's threads; the same bits whatever their number.
pub fn distort_split(split: &Split, aug: &Augment, seed: u64, epoch: usize) -> Split {
    let (rows, cols) = (split.images.rows, split.images.cols);
    let n = rows * cols;
    let mut pixels = vec![0u8; split.images.pixels.len()];
    pixels.par_chunks_mut(n).enumerate().for_each(|(i, out)| {
        distort(aug, split.images.image(i), rows, cols, &mut image_rng(seed, epoch, i), out);
    });
    Split { images: Images { count: split.images.count, rows, cols, pixels }, labels: split.labels.clone() }
}
