//! Distortions of training digits: the identity when every magnitude is zero,
//! reproducible per seed (and independent of the thread count), fresh per epoch, the
//! ink kept in frame, labels unchanged, never a flip; the settings' parser; and
//! `lenet data preview --augment`.

use std::process::Command;

use lenet::data::{Images, Split};
use lenet::internal::augment::{distort, distort_split, draw_affine, Augment, DrawKey, ElasticField};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

const NONE: Augment =
    Augment { translate: 0.0, scale: 0.0, squeeze: 0.0, shear: 0.0, rotate: 0.0, elastic: 0.0, elastic_sigma: 4.0 };

/// Digits stand-ins: a thick stroke and a ring at random places, some touching the
/// frame's edge (where a translation could push them out).
fn digits(n: usize, seed: u64) -> Split {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let mut pixels = vec![0u8; n * 784];
    for img in pixels.chunks_mut(784) {
        let (cx, cy) = (rng.gen_range(4.0..24.0f32), rng.gen_range(4.0..24.0f32));
        let r = rng.gen_range(3.0..9.0f32);
        for y in 0..28 {
            for x in 0..28 {
                let d = ((x as f32 - cx).powi(2) + (y as f32 - cy).powi(2)).sqrt();
                if (d - r).abs() < 1.5 || (x as f32 - cx).abs() < 1.0 && (y as f32 - cy).abs() < r {
                    img[y * 28 + x] = rng.gen_range(128..=255);
                }
            }
        }
    }
    let labels = (0..n).map(|i| (i % 10) as u8).collect();
    Split { images: Images { count: n, rows: 28, cols: 28, pixels }, labels }
}

fn strong() -> Augment {
    "translate=4,scale=0.2,squeeze=0.2,shear=0.3,rotate=15,elastic".parse().unwrap()
}

#[test]
fn zero_magnitudes_are_the_identity() {
    let split = digits(20, 1);
    let out = distort_split(&split, &NONE, 3, 1);
    assert_eq!(out.images.pixels, split.images.pixels);
}

#[test]
fn reproducible_per_seed_fresh_per_epoch_the_same_on_any_thread_count() {
    let split = digits(64, 2);
    let aug = strong();
    let on = |threads: usize, seed: u64, epoch: usize| {
        let pool = rayon::ThreadPoolBuilder::new().num_threads(threads).build().unwrap();
        pool.install(|| distort_split(&split, &aug, seed, epoch))
    };
    let a = on(1, 7, 1);
    assert_eq!(a.images.pixels, on(3, 7, 1).images.pixels, "the thread count changed the images");
    assert_eq!(a.images.pixels, on(2, 7, 1).images.pixels);
    assert_eq!(a.labels, split.labels, "labels changed");
    assert_ne!(a.images.pixels, split.images.pixels);
    assert_ne!(a.images.pixels, on(1, 7, 2).images.pixels, "epoch 2 drew the same distortions");
    assert_ne!(a.images.pixels, on(1, 8, 1).images.pixels, "another seed drew the same distortions");
    // Each image's draw is its own: image 5 is the same whether or not others are distorted.
    let mut one = vec![0u8; 784];
    distort(&aug, split.images.image(5), 28, 28, &DrawKey::new(7, 1, 5), &mut one);
    assert_eq!(one, a.images.image(5));
}

#[test]
fn the_ink_stays_in_frame_and_nothing_is_flipped() {
    let split = digits(300, 3);
    for aug in [Augment::paper(), strong(), "translate=14,scale=0".parse().unwrap()] {
        for i in 0..split.len() {
            let img = split.images.image(i);
            let affine = draw_affine(&aug, img, 28, 28, 0.0, &mut DrawKey::new(1, 1, i).rng());
            let [a, b, c, d] = affine.a;
            assert!(a * d - b * c > 0.0, "{aug}: image {i} flipped: {affine:?}");
            for y in 0..28 {
                for x in 0..28 {
                    if img[y * 28 + x] > 0 {
                        let (u, v) = affine.apply(x as f32, y as f32, 28, 28);
                        assert!(
                            (-1e-3..=27.001).contains(&u) && (-1e-3..=27.001).contains(&v),
                            "{aug}: image {i}: ink at ({x}, {y}) lands at ({u}, {v})"
                        );
                    }
                }
            }
        }
        // End to end, the ink's mass survives (a cut digit would lose it), within what
        // the scale changes and resampling allow (the affine part: an elastic field
        // thins and thickens strokes by design).
        let affine_only = Augment { elastic: 0.0, ..aug };
        let out = distort_split(&split, &affine_only, 1, 1);
        for i in 0..split.len() {
            let mass = |p: &[u8]| p.iter().map(|&v| v as f64).sum::<f64>();
            let (before, after) = (mass(split.images.image(i)), mass(out.images.image(i)));
            // The area changes by det(a) = s²·q, within these; resampling adds a quarter.
            let (s, q) = (aug.scale as f64, aug.squeeze as f64);
            let (lo, hi) = ((1.0 - s).powi(2) * (1.0 - q) * 0.75, (1.0 + s).powi(2) * (1.0 + q) * 1.25);
            assert!((lo..=hi).contains(&(after / before)), "{aug}: image {i}: ink {before} -> {after}");
        }
    }
}

/// The elastic field is drawn in the blur's eigenbasis (see src/data/augment/elastic.rs);
/// its spread must be that of its definition, uniform noise in [−1, 1] blurred by a
/// Gaussian of σ truncated at 3σ, times α: per pixel a standard deviation of
/// α·√(1/3)·‖b_y‖·‖b_x‖ (b the blur's weights reaching that row or column), and
/// between two pixels of a row a correlation of ⟨b_x, b_x'⟩ / (‖b_x‖·‖b_x'‖).
#[test]
fn the_elastic_field_spreads_as_blurred_noise() {
    let (n, alpha, sigma) = (28usize, 34.0f32, 4.0f64);
    let radius = (3.0 * sigma).ceil() as i64;
    let g = |d: i64| if d.abs() <= radius { (-((d * d) as f64) / (2.0 * sigma * sigma)).exp() } else { 0.0 };
    let norm: f64 = (-radius..=radius).map(g).sum();
    let weights = |i: usize| (0..n as i64).map(|a| g(i as i64 - a) / norm).collect::<Vec<_>>();
    let dot = |a: &[f64], b: &[f64]| a.iter().zip(b).map(|(x, y)| x * y).sum::<f64>();
    let field = ElasticField::new(n, n, alpha, sigma as f32);
    let stride = field.stride();
    let draws = 4000;
    let mut buf = vec![0.0f32; n * stride];
    let probes = [(14usize, 14usize, 14usize), (0, 0, 4), (3, 25, 27), (20, 8, 9)];
    // Sums of v, v², v·w for each probe (row y, columns x and x').
    let mut sums = vec![[0.0f64; 5]; probes.len()];
    for d in 0..draws {
        // Fields of many images and both axes: the noise is independent across them.
        field.draw(&DrawKey::new(11, 1 + d / 1000, d % 1000), (d % 2) as u32, &mut buf);
        for (s, &(y, x, x2)) in sums.iter_mut().zip(&probes) {
            let (v, w) = (buf[y * stride + x] as f64, buf[y * stride + x2] as f64);
            for (acc, add) in s.iter_mut().zip([v, v * v, w, w * w, v * w]) {
                *acc += add;
            }
        }
    }
    for (s, &(y, x, x2)) in sums.iter().zip(&probes) {
        let m = |i: usize| s[i] / draws as f64;
        let (sd_v, sd_w) = ((m(1) - m(0) * m(0)).sqrt(), (m(3) - m(2) * m(2)).sqrt());
        let corr = (m(4) - m(0) * m(2)) / (sd_v * sd_w);
        let (by, bx, bx2) = (weights(y), weights(x), weights(x2));
        let want_sd = alpha as f64 * (1.0f64 / 3.0).sqrt() * dot(&by, &by).sqrt() * dot(&bx, &bx).sqrt();
        let want_corr = dot(&bx, &bx2) / (dot(&bx, &bx) * dot(&bx2, &bx2)).sqrt();
        assert!((sd_v / want_sd - 1.0).abs() < 0.05, "({y}, {x}): sd {sd_v} vs the blur's {want_sd}");
        assert!(m(0).abs() < 0.1 * want_sd, "({y}, {x}): mean {}", m(0));
        assert!((corr - want_corr).abs() < 0.05, "({y}, {x}–{x2}): correlation {corr} vs the blur's {want_corr}");
    }
}

#[test]
fn a_blank_image_stays_blank() {
    let mut out = vec![1u8; 784];
    distort(&strong(), &[0u8; 784], 28, 28, &DrawKey::new(0, 0, 0), &mut out);
    assert!(out.iter().all(|&v| v == 0));
}

#[test]
fn settings_parse_on_top_of_the_papers() {
    assert_eq!("paper".parse::<Augment>().unwrap(), Augment::paper());
    assert_eq!("".parse::<Augment>().unwrap(), Augment::paper());
    let a: Augment = "rotate=10,elastic,shear=0".parse().unwrap();
    assert_eq!((a.rotate, a.elastic, a.elastic_sigma, a.shear, a.translate), (10.0, 34.0, 4.0, 0.0, 2.0));
    let a: Augment = "elastic=20:3".parse().unwrap();
    assert_eq!((a.elastic, a.elastic_sigma), (20.0, 3.0));
    // Display round-trips.
    assert_eq!(a.to_string().parse::<Augment>().unwrap(), a);
    for (bad, want) in [
        ("flip", "unknown setting"),
        ("rotate=x", "needs a number"),
        ("scale=1.5", "scale must be in"),
        ("translate=-1", "translate must be in"),
        ("elastic=30:0.1", "elastic-sigma"),
        ("shear=NaN", "shear must be in"),
    ] {
        let e = bad.parse::<Augment>().unwrap_err();
        assert!(e.contains(want), "{bad}: {e}");
    }
}

#[test]
fn preview_shows_one_digits_distortions() {
    let dir = tempfile::tempdir().unwrap();
    let split = digits(30, 4);
    for (stem, s) in [("train", &split), ("t10k", &split)] {
        lenet::internal::idx::write_images(&dir.path().join(format!("{stem}-images-idx3-ubyte.gz")), &s.images)
            .unwrap();
        lenet::internal::idx::write_labels(&dir.path().join(format!("{stem}-labels-idx1-ubyte.gz")), &s.labels)
            .unwrap();
    }
    let out = dir.path().join("aug.png");
    let run = |extra: &[&str]| {
        Command::new(env!("CARGO_BIN_EXE_lenet"))
            .args(["--data-dir", dir.path().to_str().unwrap(), "data", "preview", "mnist", "--out"])
            .arg(&out)
            .args(extra)
            .output()
            .unwrap()
    };
    let size = |n: &str| {
        let o = run(&["--augment", "--index", "3", "-n", n, "--columns", "5", "--zoom", "1"]);
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        image::open(&out).unwrap().into_luma8().dimensions()
    };
    // 5 columns; 4 rows of tiles, then 2: the same width, half the height (± a margin).
    let (four, two) = (size("20"), size("10"));
    assert_eq!(four.0, two.0);
    assert!((four.1 as f64 / two.1 as f64 - 2.0).abs() < 0.2, "{four:?} vs {two:?}");
    let o = run(&["--augment", "rotate=10,elastic"]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let o = run(&["--augment", "flip"]);
    assert!(!o.status.success());
    assert!(String::from_utf8_lossy(&o.stderr).contains("unknown setting"));
}

/// The elastic field's noise (`DrawKey::noise`, a hash the GPU computes to the same bits):
/// uniform in [−1, 1) — mean 0, variance 1/3, each tenth of the range a tenth of the
/// draws — and no correlation between neighbouring numbers, images, epochs or seeds.
#[test]
fn the_field_noise_is_uniform_and_independent() {
    let keys = |i: usize| DrawKey::new(5 + (i % 3) as u64, 1 + i % 7, i);
    let draws: Vec<[f32; 5]> = (0..40_000usize)
        .map(|i| {
            let (k, n) = (keys(i), (i % 200) as u32);
            let other = |key: DrawKey| key.noise(n);
            [
                k.noise(n),
                k.noise(n + 1),
                other(DrawKey { index: k.index + 1, ..k }),
                other(DrawKey { epoch: k.epoch + 1, ..k }),
                other(DrawKey { seed: k.seed + (1 << 32), ..k }),
            ]
        })
        .collect();
    let n = draws.len() as f64;
    let v: Vec<f64> = draws.iter().map(|d| d[0] as f64).collect();
    assert!(v.iter().all(|x| (-1.0..1.0).contains(x)));
    let mean = v.iter().sum::<f64>() / n;
    let var = v.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / n;
    assert!(mean.abs() < 0.01 && (var * 3.0 - 1.0).abs() < 0.02, "mean {mean}, variance {var}");
    let mut bins = [0usize; 10];
    v.iter().for_each(|x| bins[((x + 1.0) * 5.0) as usize] += 1);
    assert!(bins.iter().all(|&b| (b as f64 / n - 0.1).abs() < 0.01), "{bins:?}");
    for (j, what) in [(1, "the next number"), (2, "the next image"), (3, "the next epoch"), (4, "the seed's high word")]
    {
        let corr = draws.iter().map(|d| d[0] as f64 * d[j] as f64).sum::<f64>() / n / var;
        assert!(corr.abs() < 0.03, "correlation with {what}: {corr}");
    }
}

/// `DrawKey::noise` pinned to values computed from the hash's definition in Python
/// (lowbias32 over n ^ 0x9e3779b9, then the index, epoch, seed's high and low words;
/// (h >> 8)·2⁻²³ − 1, exact in f32): the GPU's elastic field (shaders/elastic.wgsl) is
/// this hash, so a change here must change there (tests/gpu.rs compares the two where
/// a GPU is; this catches a change on any machine).
const PINNED: [f32; 4] = [-0.88542306, 0.08527708, -0.64501214, 0.58610606];

#[test]
fn the_field_noise_is_the_hash_the_gpu_computes() {
    let got: Vec<f32> = [(0, 0, 0, 0), (7, 1, 5, 0), (7, 1, 5, 99), (u64::MAX, 3, 59_999, 199)]
        .iter()
        .map(|&(seed, epoch, index, n)| DrawKey::new(seed, epoch, index).noise(n))
        .collect();
    assert_eq!(got, PINNED, "{got:?}");
}
