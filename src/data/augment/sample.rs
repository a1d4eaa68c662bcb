//! Resampling: every output pixel is a bilinear sample of the source at the inverse
//! of the drawn transform (affine, plus the elastic displacement where there is one),
//! zero outside the image.
//!
//! Written for speed as three passes over each output row, each simple enough for the
//! compiler to vectorise (inside [`dispatch`], for the CPU's vector instructions):
//! the source coordinates, clamped into a zero border so that no sample needs a
//! bounds test; the four taps, gathered; and the blend. Every step is elementwise, so
//! every instruction set gives the same bytes.

use super::affine::{centre, Affine};
use crate::layers::{dispatch, Kernel, Lanes, L};

/// The source image as floats inside a border of zeros: one pixel before each row
/// and column, two after, so that a point clamped to [−1, size] has all four taps
/// inside the array, and those outside the image read zeros.
pub struct Padded {
    px: Vec<f32>,
    rows: usize,
    cols: usize,
}

impl Padded {
    pub fn new(img: &[u8], rows: usize, cols: usize) -> Padded {
        let w = cols + 3;
        let mut px = vec![0.0f32; (rows + 3) * w];
        for (dst, src) in px.chunks_mut(w).skip(1).zip(img.chunks(cols)) {
            for (d, &s) in dst[1..=cols].iter_mut().zip(src) {
                *d = s as f32;
            }
        }
        Padded { px, rows, cols }
    }
}

/// A displacement per output pixel, rows `stride` apart.
#[derive(Clone, Copy)]
pub struct Displacement<'a> {
    pub dx: &'a [f32],
    pub dy: &'a [f32],
    pub stride: usize,
}

/// Fill `out` (rows × cols) with samples of `src` at the inverse of `affine`, each
/// output point first moved by the displacement field when given.
pub fn resample(src: &Padded, affine: &Affine, field: Option<Displacement>, out: &mut [u8]) {
    dispatch(Resample { src, affine, field, out })
}

struct Resample<'a> {
    src: &'a Padded,
    affine: &'a Affine,
    field: Option<Displacement<'a>>,
    out: &'a mut [u8],
}

impl Kernel<f32> for Resample<'_> {
    type Output = ();
    #[inline(always)]
    fn run<V: Lanes<T = f32>>(self) {
        let Resample { src, affine, field, out } = self;
        let (rows, cols, w) = (src.rows, src.cols, src.cols + 3);
        // The inverse map: input = a⁻¹·(output − c − t) + c.
        let [a, b, c, d] = affine.a;
        let det = a * d - b * c;
        let inv = [V::splat(d / det), V::splat(-b / det), V::splat(-c / det), V::splat(a / det)];
        let (cx, cy) = centre(rows, cols);
        let (cx, cy, tx, ty) = (V::splat(cx), V::splat(cy), V::splat(affine.t[0]), V::splat(affine.t[1]));
        let (zero, one) = (V::zero(), V::splat(1.0));
        let (x_max, y_max, width) = (V::splat(cols as f32 + 1.0), V::splat(rows as f32 + 1.0), V::splat(w as f32));
        // Rows padded to whole vectors; the padding's samples are computed and dropped.
        let stride = cols.div_ceil(L) * L;
        let zeros = vec![0.0f32; stride];
        let xs: Vec<f32> = (0..stride).map(|x| x as f32).collect();
        let (mut at, mut fx, mut fy) = (vec![0.0f32; stride], vec![0.0f32; stride], vec![0.0f32; stride]);
        let mut taps = [vec![0.0f32; stride], vec![0.0f32; stride], vec![0.0f32; stride], vec![0.0f32; stride]];
        let mut value = vec![0.0f32; stride];
        for (y, out_row) in out.chunks_mut(cols).enumerate() {
            let (dx, dy) = match field {
                Some(Displacement { dx, dy, stride: s }) => (&dx[y * s..], &dy[y * s..]),
                None => (&zeros[..], &zeros[..]),
            };
            let y_here = V::splat(y as f32);
            // The source point, moved by one pixel into the padded array and clamped to
            // its border [0, size + 1]: a point outside the image samples zeros, as
            // an unclamped one would. Then its whole and fractional parts.
            for j in (0..stride).step_by(L) {
                let ux = V::load(&xs[j..]).add(V::load(&dx[j..])).sub(cx).sub(tx);
                let uy = y_here.add(V::load(&dy[j..])).sub(cy).sub(ty);
                let sx = inv[0].mul(ux).add(inv[1].mul(uy)).add(cx).add(one);
                let sy = inv[2].mul(ux).add(inv[3].mul(uy)).add(cy).add(one);
                let (sx, sy) = (clamp(sx, zero, x_max), clamp(sy, zero, y_max));
                let (xi, yi) = (floor(sx), floor(sy));
                sx.sub(xi).store(&mut fx[j..]);
                sy.sub(yi).store(&mut fy[j..]);
                // Exact: an index below 2²⁴.
                yi.mul(width).add(xi).store(&mut at[j..]);
            }
            for (x, &i) in at[..cols].iter().enumerate() {
                let i = i as usize;
                let [p, q, r, s] = &mut taps;
                (p[x], q[x], r[x], s[x]) = (src.px[i], src.px[i + 1], src.px[i + w], src.px[i + w + 1]);
            }
            for j in (0..stride).step_by(L) {
                let [p, q, r, s] = &taps;
                let (p, q, r, s) = (V::load(&p[j..]), V::load(&q[j..]), V::load(&r[j..]), V::load(&s[j..]));
                let (fx, fy) = (V::load(&fx[j..]), V::load(&fy[j..]));
                let top = p.add(q.sub(p).mul(fx));
                let bottom = r.add(s.sub(r).mul(fx));
                // + ½: rounded to the nearest byte below (the sample is in [0, 255]).
                top.add(bottom.sub(top).mul(fy)).add(V::splat(0.5)).store(&mut value[j..]);
            }
            for (o, &v) in out_row.iter_mut().zip(&value) {
                *o = v as u8;
            }
        }
    }
}

/// Lane-wise min(max(v, lo), hi).
#[inline(always)]
fn clamp<V: Lanes<T = f32>>(v: V, lo: V, hi: V) -> V {
    let v = lo.gt_select(v, lo, v);
    v.gt_select(hi, hi, v)
}

/// Lane-wise ⌊v⌋ for 0 ≤ v < 2²²: adding and taking away 2²³ rounds to the nearest
/// whole number; one less where that rounded up.
#[inline(always)]
fn floor<V: Lanes<T = f32>>(v: V) -> V {
    let magic = V::splat(8_388_608.0);
    let r = v.add(magic).sub(magic);
    r.gt_select(v, r.sub(V::splat(1.0)), r)
}
