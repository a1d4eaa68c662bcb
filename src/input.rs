//! Turning stored 28×28 u8 images into what a network takes: the geometric fit
//! (pad or resize to the input size, done once per dataset) and the pixel
//! scaling (done per batch, on the engine).

use crate::data::Images;
use crate::spec::{Fit, InputSpec, Normalize};

/// Bring every image to `spec.size`×`spec.size`: zero-pad around it (centred),
/// or resize bilinearly (align_corners=False, like torchvision's Resize without
/// antialiasing), or crop the centre when the input is smaller.
pub fn fit_images(images: &Images, spec: &InputSpec) -> Images {
    let s = spec.size;
    if images.rows == s && images.cols == s {
        return images.clone();
    }
    let mut pixels = vec![0u8; images.count * s * s];
    for (i, dst) in pixels.chunks_mut(s * s).enumerate() {
        let src = images.image(i);
        match spec.fit {
            Fit::Pad => pad_centre(dst, s, src, images.rows, images.cols),
            Fit::Resize => resize_bilinear(dst, s, src, images.rows, images.cols),
        }
    }
    Images { count: images.count, rows: s, cols: s, pixels }
}

fn pad_centre(dst: &mut [u8], s: usize, src: &[u8], rows: usize, cols: usize) {
    for y in 0..s {
        for x in 0..s {
            let sy = (y + rows / 2).checked_sub(s / 2).filter(|&v| v < rows);
            let sx = (x + cols / 2).checked_sub(s / 2).filter(|&v| v < cols);
            if let (Some(sy), Some(sx)) = (sy, sx) {
                dst[y * s + x] = src[sy * cols + sx];
            }
        }
    }
}

fn resize_bilinear(dst: &mut [u8], s: usize, src: &[u8], rows: usize, cols: usize) {
    let coord = |d: usize, from: usize| {
        let v = ((d as f32 + 0.5) * from as f32 / s as f32 - 0.5).max(0.0);
        let i0 = (v.floor() as usize).min(from - 1);
        (i0, (i0 + 1).min(from - 1), v - i0 as f32)
    };
    for y in 0..s {
        let (y0, y1, fy) = coord(y, rows);
        for x in 0..s {
            let (x0, x1, fx) = coord(x, cols);
            let p = |yy: usize, xx: usize| src[yy * cols + xx] as f32;
            let top = p(y0, x0) * (1.0 - fx) + p(y0, x1) * fx;
            let bottom = p(y1, x0) * (1.0 - fx) + p(y1, x1) * fx;
            dst[y * s + x] = (top * (1.0 - fy) + bottom * fy).round().clamp(0.0, 255.0) as u8;
        }
    }
}

/// The affine map from a byte to the network's input: `byte·scale + shift`.
/// Unit: byte/255 (ToTensor). Standardize: (byte/255 − mean)/std.
pub fn pixel_affine(normalize: Normalize) -> (f32, f32) {
    match normalize {
        Normalize::Unit => (1.0 / 255.0, 0.0),
        Normalize::Standardize { mean, std } => (1.0 / (255.0 * std), -mean / std),
        Normalize::Range { low, high } => ((high - low) / 255.0, low),
    }
}
