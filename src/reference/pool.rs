//! Pooling over size×size windows, `stride` apart, no padding (PyTorch's `AvgPool2d`
//! and `MaxPool2d`), each plane on its own:
//!
//!   avg: out[p, y, x] = (1/size²) · Σ_i Σ_j inp[p, y·s + i, x·s + j]
//!   max: out[p, y, x] = max_{i,j} inp[p, y·s + i, x·s + j]

use crate::layers::pool::{PoolGeom, PoolKind};

/// The window of output (y, x): its input indices within a plane, row by row.
fn window(g: &PoolGeom, y: usize, x: usize) -> impl Iterator<Item = usize> + '_ {
    (0..g.size).flat_map(move |i| (0..g.size).map(move |j| (y * g.stride + i) * g.w + x * g.stride + j))
}

/// The input index of the window's first maximum (PyTorch's choice among ties).
fn argmax(plane: &[f64], g: &PoolGeom, y: usize, x: usize) -> usize {
    window(g, y, x)
        .fold(None, |best: Option<usize>, i| match best {
            Some(b) if plane[b] >= plane[i] => Some(b),
            _ => Some(i),
        })
        .expect("a window has a tap")
}

/// out (P, OH, OW) from inp (P, H, W), P planes.
pub fn pool_forward(out: &mut [f64], inp: &[f64], g: &PoolGeom, planes: usize) {
    let (oh, ow) = (g.oh(), g.ow());
    for p in 0..planes {
        let plane = &inp[p * g.h * g.w..(p + 1) * g.h * g.w];
        for y in 0..oh {
            for x in 0..ow {
                out[(p * oh + y) * ow + x] = match g.kind {
                    PoolKind::Avg => window(g, y, x).map(|i| plane[i]).sum::<f64>() / (g.size * g.size) as f64,
                    PoolKind::Max => plane[argmax(plane, g, y, x)],
                };
            }
        }
    }
}

/// avg: each input of the window gets dout / size²; max: the window's (first)
/// maximum gets all of dout. Accumulated, so overlapping windows add up.
pub fn pool_backward(dinp: &mut [f64], inp: &[f64], dout: &[f64], g: &PoolGeom, planes: usize) {
    let (oh, ow, hw) = (g.oh(), g.ow(), g.h * g.w);
    for p in 0..planes {
        let plane = &inp[p * hw..(p + 1) * hw];
        for y in 0..oh {
            for x in 0..ow {
                let d = dout[(p * oh + y) * ow + x];
                match g.kind {
                    PoolKind::Avg => window(g, y, x).for_each(|i| dinp[p * hw + i] += d / (g.size * g.size) as f64),
                    PoolKind::Max => dinp[p * hw + argmax(plane, g, y, x)] += d,
                }
            }
        }
    }
}
