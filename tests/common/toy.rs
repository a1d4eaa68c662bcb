//! The toy problem the trainer tests learn (tests/train.rs, tests/gpu_engine.rs).

use lenet::data::{Images, Split};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

/// A learnable toy problem: class c is a bright square at a class-specific
/// position, plus noise.
pub fn toy_split(n: usize, seed: u64) -> Split {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let mut pixels = vec![0u8; n * 784];
    let mut labels = Vec::with_capacity(n);
    for i in 0..n {
        let c = rng.gen_range(0..10usize);
        labels.push(c as u8);
        let img = &mut pixels[i * 784..(i + 1) * 784];
        for p in img.iter_mut() {
            *p = rng.gen_range(0..60);
        }
        let (y0, x0) = (4 + (c / 5) * 12, 2 + (c % 5) * 5);
        for y in y0..y0 + 8 {
            for x in x0..x0 + 4 {
                img[y * 28 + x] = 255;
            }
        }
    }
    Split { images: Images { count: n, rows: 28, cols: 28, pixels }, labels }
}
