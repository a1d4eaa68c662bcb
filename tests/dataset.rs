//! Datasets: the seeded validation split and the order of places searched.

use std::collections::HashSet;
use std::path::PathBuf;

use lenet::data::dataset::DatasetKind;
use lenet::data::locate::{candidates, locate};
use lenet::data::{Images, Split};
use lenet::internal::idx;

fn split(n: usize) -> Split {
    // Each image's first pixel encodes its index, so membership can be traced.
    let mut pixels = vec![0u8; n * 4];
    for i in 0..n {
        pixels[i * 4] = i as u8;
    }
    Split { images: Images { count: n, rows: 2, cols: 2, pixels }, labels: (0..n).map(|i| (i % 10) as u8).collect() }
}

#[test]
fn validation_split_is_seeded_disjoint_and_complete() {
    let s = split(200);
    let (rest, val) = s.carve_validation(0.1, 42);
    assert_eq!((rest.len(), val.len()), (180, 20));
    let ids = |x: &Split| (0..x.len()).map(|i| x.images.image(i)[0]).collect::<Vec<u8>>();
    let (r, v) = (ids(&rest), ids(&val));
    let all: HashSet<u8> = r.iter().chain(&v).copied().collect();
    assert_eq!(all.len(), 200, "every example lands in exactly one part");
    assert!(r.windows(2).all(|w| w[0] < w[1]) && v.windows(2).all(|w| w[0] < w[1]), "original order kept");
    for (i, &id) in v.iter().enumerate() {
        assert_eq!(val.labels[i], id % 10, "labels follow their images");
    }
    let (_, again) = s.carve_validation(0.1, 42);
    assert_eq!(again, val, "same seed, same split");
    let (_, other) = s.carve_validation(0.1, 43);
    assert_ne!(other, val, "another seed, another split");
    assert_eq!(s.carve_validation(0.0, 1).1.len(), 0);
}

#[test]
fn search_order_and_first_complete_folder_wins() {
    let tmp = tempfile::tempdir().unwrap();
    let (flag, env) = (tmp.path().join("flag"), tmp.path().join("env"));
    std::env::set_var("LENET_DATA", &env);
    std::env::set_var("XDG_CACHE_HOME", tmp.path().join("cache"));
    let c: Vec<PathBuf> = candidates(DatasetKind::FashionMnist, Some(&flag)).into_iter().map(|c| c.dir).collect();
    assert_eq!(
        c,
        vec![
            flag.join("fashion-mnist"),
            flag.clone(),
            env.join("fashion-mnist"),
            env.clone(),
            tmp.path().join("cache/lenet/fashion-mnist"),
            PathBuf::from("/usr/share/datasets/fashion-mnist"),
        ]
    );
    // MNIST has no Debian folder.
    assert_eq!(candidates(DatasetKind::Mnist, None).len(), 3);

    // A complete copy under $LENET_DATA/mnist is found; an incomplete --data-dir is skipped.
    let mnist = env.join("mnist");
    for f in DatasetKind::Mnist.files() {
        let path = mnist.join(f.gz_name());
        if f.stem.contains("images") {
            idx::write_images(&path, &Images { count: 1, rows: 28, cols: 28, pixels: vec![0; 784] }).unwrap();
        } else {
            idx::write_labels(&path, &[3]).unwrap();
        }
    }
    std::fs::create_dir_all(&flag).unwrap();
    std::fs::copy(mnist.join("train-labels-idx1-ubyte.gz"), flag.join("train-labels-idx1-ubyte.gz")).unwrap();
    assert_eq!(locate(DatasetKind::Mnist, Some(&flag)).unwrap(), mnist);
    std::env::remove_var("LENET_DATA");
    let err = locate(DatasetKind::Mnist, Some(&flag)).unwrap_err().to_string();
    assert!(err.contains(&flag.display().to_string()) && err.contains("(--data-dir)"), "{err}");
}
