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
//! drawn transform (`sample.rs`), after the elastic displacement when there is one
//! (`elastic.rs`). The translation is kept to values that leave the digit's ink inside
//! the frame (`affine.rs`): a distortion may move a digit, never cut it.
//!
//! Speed (a training epoch must not grow by more than a third): on 2 cores the 60,000
//! MNIST digits take ~0.21 s with the paper's distortions and ~0.24 s with
//! `rotate=10,elastic` (`examples/distort_time.rs`), against ~1 s for an epoch of the
//! relu preset at batch 64.

use std::fmt;
use std::str::FromStr;

use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use rayon::prelude::*;
use serde::{Deserialize, Serialize};

mod affine;
mod elastic;
mod sample;

pub use affine::{draw_affine, draw_unfitted, Affine, DrawnAffine};
pub use elastic::{ElasticField, FieldBasis};

use crate::data::dataset::Split;
use crate::data::idx::Images;
use sample::{resample, Displacement, Padded};

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

/// Which draw: image `index` of the split in `epoch` of a run seeded with `seed`. Every
/// draw of a distortion comes from its key alone, so the same on any thread count, on
/// any engine, and after a resume.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DrawKey {
    pub seed: u64,
    pub epoch: usize,
    pub index: usize,
}

impl DrawKey {
    pub fn new(seed: u64, epoch: usize, index: usize) -> DrawKey {
        DrawKey { seed, epoch, index }
    }

    /// The random stream the affine map is drawn from.
    pub fn rng(&self) -> ChaCha8Rng {
        let mut rng = ChaCha8Rng::seed_from_u64(self.seed ^ 0xA076_1D64_78BD_642F);
        rng.set_stream(((self.epoch as u64) << 32) ^ self.index as u64);
        rng
    }

    /// Uniform number `n` of this draw in [−1, 1), in steps of 2⁻²³: a hash of the key
    /// and `n` in 32-bit integer arithmetic, which a GPU shader computes to the same bits
    /// (src/engine/gpu/shaders/elastic.wgsl), so that an engine can draw the elastic
    /// field where it resamples.
    pub fn noise(&self, n: u32) -> f32 {
        let words = [self.index as u32, self.epoch as u32, (self.seed >> 32) as u32, self.seed as u32];
        let h = words.iter().fold(mix(n ^ 0x9E37_79B9), |h, &w| mix(h ^ w));
        (h >> 8) as f32 * (1.0 / 8_388_608.0) - 1.0
    }
}

/// lowbias32 (C. Wellons): a bijective mix of 32 bits, each output bit depending on
/// every input bit.
fn mix(mut x: u32) -> u32 {
    x ^= x >> 16;
    x = x.wrapping_mul(0x7FEB_352D);
    x ^= x >> 15;
    x = x.wrapping_mul(0x846C_A68B);
    x ^ (x >> 16)
}

/// Distortions of one image size, prepared once (the elastic field's basis) and
/// applied to any number of images.
pub struct Distorter {
    aug: Augment,
    rows: usize,
    cols: usize,
    field: Option<ElasticField>,
}

impl Distorter {
    pub fn new(aug: &Augment, rows: usize, cols: usize) -> Distorter {
        let field = (aug.elastic > 0.0).then(|| ElasticField::new(rows, cols, aug.elastic, aug.elastic_sigma));
        Distorter { aug: *aug, rows, cols, field }
    }

    /// Distort one image into `out` by the draws of `key`: the elastic field first
    /// (when there is one), then the affine map.
    pub fn distort(&self, img: &[u8], key: &DrawKey, out: &mut [u8]) {
        let (rows, cols) = (self.rows, self.cols);
        let (mut dx, mut dy) = (Vec::new(), Vec::new());
        // The field moves each output pixel's source by at most its largest
        // displacement: keep that much more room around the ink.
        let mut reach = 0.0f32;
        if let Some(field) = &self.field {
            let len = rows * field.stride();
            (dx, dy) = (vec![0.0f32; len], vec![0.0f32; len]);
            reach = field.draw(key, 0, &mut dx).max(field.draw(key, 1, &mut dy)).ceil();
        }
        let affine = draw_affine(&self.aug, img, rows, cols, reach, &mut key.rng());
        let field = self.field.as_ref().map(|f| Displacement { dx: &dx, dy: &dy, stride: f.stride() });
        resample(&Padded::new(img, rows, cols), &affine, field, out);
    }
}

/// Distort one `rows`×`cols` image into `out` by the draws of `key` (preparing the
/// distortions for this one image: for many, make a [`Distorter`] once).
pub fn distort(aug: &Augment, img: &[u8], rows: usize, cols: usize, key: &DrawKey, out: &mut [u8]) {
    Distorter::new(aug, rows, cols).distort(img, key, out)
}

/// The training split of `epoch`, every image distorted (labels unchanged), on all
/// of rayon's threads; the same bits whatever their number.
pub fn distort_split(split: &Split, aug: &Augment, seed: u64, epoch: usize) -> Split {
    let mut images = Images { pixels: vec![0u8; split.images.pixels.len()], ..split.images };
    distort_into(&split.images, aug, seed, epoch, &mut images);
    Split { images, labels: split.labels.clone() }
}

/// [`distort_split`]'s images written into `out` (the same count and size as
/// `images`), so that a training loop can reuse one buffer every epoch.
pub fn distort_into(images: &Images, aug: &Augment, seed: u64, epoch: usize, out: &mut Images) {
    let (rows, cols) = (images.rows, images.cols);
    assert_eq!((out.count, out.rows, out.cols), (images.count, rows, cols), "distort_into: another size");
    let distorter = Distorter::new(aug, rows, cols);
    out.pixels.par_chunks_mut(rows * cols).enumerate().for_each(|(i, dst)| {
        distorter.distort(images.image(i), &DrawKey::new(seed, epoch, i), dst);
    });
}

/// One epoch's distortions for an engine that resamples on its own device
/// ([`crate::engine::Engine::set_distortions`]): what [`distort_into`] draws, in a form
/// the device finishes. Each image's affine map with its translation not yet fitted
/// (the fit needs the elastic field's reach), and the elastic field's basis and seed,
/// from which the device draws each image's field by [`DrawKey::noise`] as the host does.
pub struct DeviceDistortions {
    pub maps: Vec<DrawnAffine>,
    pub elastic: Option<ElasticField>,
    pub seed: u64,
    pub epoch: usize,
}

/// [`DeviceDistortions`] for `images` in `epoch`: a few bytes an image instead of its
/// distorted pixels.
pub fn draw_distortions(images: &Images, aug: &Augment, seed: u64, epoch: usize) -> DeviceDistortions {
    let (rows, cols) = (images.rows, images.cols);
    let maps = (0..images.count)
        .into_par_iter()
        .map(|i| draw_unfitted(aug, images.image(i), rows, cols, &mut DrawKey::new(seed, epoch, i).rng()))
        .collect();
    let elastic = (aug.elastic > 0.0).then(|| ElasticField::new(rows, cols, aug.elastic, aug.elastic_sigma));
    DeviceDistortions { maps, elastic, seed, epoch }
}
