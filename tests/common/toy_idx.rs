//! A toy "mnist" in IDX files for the command-line tests (tests/cli.rs, tests/gpu.rs).

use std::path::Path;

use lenet::data::Images;
use lenet::internal::idx;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

/// A toy "mnist" in IDX files: class c is a bright bar at a class-specific place.
pub fn write_toy_dataset(dir: &Path) {
    let mut rng = ChaCha8Rng::seed_from_u64(5);
    for (stem, n) in [("train", 600), ("t10k", 200)] {
        let mut pixels = vec![0u8; n * 784];
        let labels: Vec<u8> = (0..n).map(|_| rng.gen_range(0..10)).collect();
        for (i, &c) in labels.iter().enumerate() {
            let (y0, x0) = (4 + (c as usize / 5) * 12, 2 + (c as usize % 5) * 5);
            for y in y0..y0 + 8 {
                for x in x0..x0 + 4 {
                    pixels[i * 784 + y * 28 + x] = 255;
                }
            }
        }
        let images = Images { count: n, rows: 28, cols: 28, pixels };
        idx::write_images(&dir.join(format!("{stem}-images-idx3-ubyte.gz")), &images).unwrap();
        idx::write_labels(&dir.join(format!("{stem}-labels-idx1-ubyte")), &labels).unwrap();
    }
}
