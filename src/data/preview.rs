//! `lenet data preview`: a grid of images with their labels, like the
//! tutorials' preview figure, or one image exported on its own.

use std::path::Path;

use image::{GrayImage, Luma};

use crate::data::dataset::Split;

pub use crate::viz::grid::GridOptions;

/// Draw `text` with the 8×8 public-domain font at (x, y), scaled by `scale`
/// (see [`crate::viz::text::draw_text`] for other pixel types).
pub fn draw_text(img: &mut GrayImage, x: u32, y: u32, text: &str, scale: u32, ink: u8) {
    crate::viz::text::draw_text(img, x, y, text, scale, Luma([ink]));
}

/// Width in pixels of `text` drawn at `scale`.
pub fn text_width(text: &str, scale: u32) -> u32 {
    crate::viz::text::text_width(text, scale)
}

/// One tile of a grid: an image and the caption under it.
pub struct Tile<'a> {
    pub pixels: &'a [u8],
    pub caption: String,
    /// Marked with a frame (e.g. a wrong prediction).
    pub marked: bool,
}

/// Render tiles of `rows`×`cols` images, white background, dark ink like the
/// d2l figures, captions underneath (drawn by [`crate::viz::grid::render_tiles`]).
pub fn render_grid(tiles: &[Tile], rows: usize, cols: usize, opts: &GridOptions) -> GrayImage {
    use crate::viz::grid::{render_tiles, Caption, Frame, GridTile, BLACK};
    let tiles: Vec<GridTile> = tiles
        .iter()
        .map(|t| GridTile {
            pixels: t.pixels,
            captions: vec![Caption { text: t.caption.clone(), color: BLACK }],
            frame: t.marked.then_some(Frame { color: BLACK, width: 1 }),
        })
        .collect();
    image::DynamicImage::ImageRgb8(render_tiles(&tiles, rows, cols, opts)).into_luma8()
}

/// The preview grid of the first `n` examples starting at `start`, captioned
/// with class names.
pub fn preview_grid(split: &Split, class_names: &[&str; 10], start: usize, n: usize, opts: &GridOptions) -> GrayImage {
    let end = (start + n).min(split.len());
    let tiles: Vec<Tile> = (start..end)
        .map(|i| Tile {
            pixels: split.images.image(i),
            caption: class_names[split.labels[i] as usize].to_string(),
            marked: false,
        })
        .collect();
    render_grid(&tiles, split.images.rows, split.images.cols, opts)
}

/// Image `index` and `n − 1` of its distortions (drawn as training draws them, one
/// per epoch 1, 2, …), the original first.
pub fn augment_grid(
    split: &Split,
    index: usize,
    aug: &crate::data::augment::Augment,
    seed: u64,
    n: usize,
    opts: &GridOptions,
) -> GrayImage {
    let (rows, cols) = (split.images.rows, split.images.cols);
    let original = split.images.image(index);
    let distorted: Vec<Vec<u8>> = (1..n.max(1))
        .map(|epoch| {
            let mut out = vec![0u8; rows * cols];
            let key = crate::data::augment::DrawKey::new(seed, epoch, index);
            crate::data::augment::distort(aug, original, rows, cols, &key, &mut out);
            out
        })
        .collect();
    let mut tiles = vec![Tile { pixels: original, caption: "original".into(), marked: true }];
    tiles.extend(distorted.iter().enumerate().map(|(e, p)| Tile {
        pixels: p,
        caption: format!("epoch {}", e + 1),
        marked: false,
    }));
    render_grid(&tiles, rows, cols, opts)
}

/// One example as a grayscale image, exactly as stored (white ink on black, like
/// the IDX data), so it can be fed back to `lenet predict`.
pub fn single_image(split: &Split, index: usize) -> GrayImage {
    let (rows, cols) = (split.images.rows as u32, split.images.cols as u32);
    GrayImage::from_raw(cols, rows, split.images.image(index).to_vec()).expect("image buffer matches its shape")
}

/// Save a picture, format from the extension, atomically.
pub fn save_png(img: &GrayImage, path: &Path) -> anyhow::Result<()> {
    let mut bytes = std::io::Cursor::new(Vec::new());
    img.write_to(&mut bytes, image::ImageFormat::Png)?;
    crate::atomic::write_atomic(path, bytes.get_ref())?;
    Ok(())
}
