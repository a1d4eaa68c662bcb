//! The affine part of a distortion: scale, squeeze, shear, rotation, then a
//! translation kept to values that leave the digit's ink inside the frame.

use rand::Rng;

use super::Augment;

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

impl Affine {
    /// What resampling needs: the inverse matrix (computed as the CPU's resampling
    /// computes it) and the translation, `[i0, i1, i2, i3, tx, ty]`.
    pub fn inverse_and_shift(&self) -> [f32; 6] {
        let [a, b, c, d] = self.a;
        let det = a * d - b * c;
        [d / det, -b / det, -c / det, a / det, self.t[0], self.t[1]]
    }
}

pub(super) fn centre(rows: usize, cols: usize) -> (f32, f32) {
    ((cols as f32 - 1.0) / 2.0, (rows as f32 - 1.0) / 2.0)
}

/// The bounding box (x0, y0, x1, y1) of the nonzero pixels, None for a blank image.
fn ink_box(img: &[u8], rows: usize, cols: usize) -> Option<[f32; 4]> {
    // An OR over the row rather than any(): it vectorises.
    let inked = |y: &usize| img[y * cols..(y + 1) * cols].iter().fold(0, |m, &v| m | v) > 0;
    let y0 = (0..rows).find(inked)?;
    let y1 = (0..rows).rev().find(inked)?;
    let (mut x0, mut x1) = (cols, 0);
    for row in img[y0 * cols..(y1 + 1) * cols].chunks(cols) {
        if let Some(first) = row.iter().position(|&v| v > 0) {
            x0 = x0.min(first);
            x1 = x1.max(row.iter().rposition(|&v| v > 0).unwrap_or(first));
        }
    }
    Some([x0 as f32, y0 as f32, x1 as f32, y1 as f32])
}

/// An affine map as drawn, before its translation is fitted to the digit: the matrix,
/// the translation drawn, and where the ink's bounding box lands under the matrix
/// alone (`[x_lo, x_hi, y_lo, y_hi]`; None for a blank image). The fit needs the
/// elastic field's reach, which an engine distorting on its device knows only there.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct DrawnAffine {
    pub a: [f32; 4],
    pub t: [f32; 2],
    pub ink: Option<[f32; 4]>,
}

impl DrawnAffine {
    /// The map, its translation kept to values that leave every ink pixel at least
    /// `margin` pixels inside the frame (where the digit allows; else centred between
    /// the two limits).
    pub fn fit(&self, margin: f32, rows: usize, cols: usize) -> Affine {
        let Some(ink) = self.ink else { return Affine { a: self.a, t: self.t } };
        let mut t = [0.0; 2];
        for (i, size) in [(0, cols), (1, rows)] {
            let (lo, hi) = (ink[2 * i], ink[2 * i + 1]);
            let (min_t, max_t) = (margin - lo, size as f32 - 1.0 - margin - hi);
            t[i] = if min_t <= max_t { self.t[i].clamp(min_t, max_t) } else { (min_t + max_t) / 2.0 };
        }
        Affine { a: self.a, t }
    }
}

/// Draw the affine part for `img`, its translation kept to values that leave every
/// ink pixel at least `margin` pixels inside the frame (where the digit allows).
pub fn draw_affine(aug: &Augment, img: &[u8], rows: usize, cols: usize, margin: f32, rng: &mut impl Rng) -> Affine {
    draw_unfitted(aug, img, rows, cols, rng).fit(margin, rows, cols)
}

/// The draws of [`draw_affine`], its translation not yet fitted.
pub fn draw_unfitted(aug: &Augment, img: &[u8], rows: usize, cols: usize, rng: &mut impl Rng) -> DrawnAffine {
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
    // Where the ink's corners land without translation.
    let ink = ink_box(img, rows, cols).map(|b| {
        let untranslated = Affine { a, t: [0.0, 0.0] };
        let corners =
            [(b[0], b[1]), (b[2], b[1]), (b[0], b[3]), (b[2], b[3])].map(|(x, y)| untranslated.apply(x, y, rows, cols));
        let lo = |f: fn(&(f32, f32)) -> f32| corners.iter().map(f).fold(f32::INFINITY, f32::min);
        let hi = |f: fn(&(f32, f32)) -> f32| corners.iter().map(f).fold(f32::NEG_INFINITY, f32::max);
        [lo(|c| c.0), hi(|c| c.0), lo(|c| c.1), hi(|c| c.1)]
    });
    DrawnAffine { a, t, ink }
}
