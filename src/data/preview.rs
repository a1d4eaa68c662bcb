//! `lenet data preview`: a grid of images with their labels, like the
//! tutorials' preview figure, or one image exported on its own.

use std::path::Path;

use image::{GrayImage, Luma};

use super::dataset::Split;

const FONT_PX: u32 = 8;

/// Draw `text` with the 8×8 public-domain font at (x, y), scaled by `scale`.
pub fn draw_text(img: &mut GrayImage, x: u32, y: u32, text: &str, scale: u32, ink: u8) {
    use font8x8::UnicodeFonts;
    for (i, ch) in text.chars().enumerate() {
        let glyph = font8x8::BASIC_FONTS.get(ch).or_else(|| font8x8::BASIC_FONTS.get('?')).unwrap_or([0; 8]);
        let gx = x + i as u32 * FONT_PX * scale;
        for (row, bits) in glyph.iter().enumerate() {
            for col in 0..8u32 {
                if bits & (1 << col) == 0 {
                    continue;
                }
                for dy in 0..scale {
                    for dx in 0..scale {
                        let (px, py) = (gx + col * scale + dx, y + row as u32 * scale + dy);
                        if px < img.width() && py < img.height() {
                            img.put_pixel(px, py, Luma([ink]));
                        }
                    }
                }
            }
        }
    }
}

/// Width in pixels of `text` drawn at `scale`.
pub fn text_width(text: &str, scale: u32) -> u32 {
    text.chars().count() as u32 * FONT_PX * scale
}

/// Grid layout options.
#[derive(Clone, Debug)]
pub struct GridOptions {
    /// Images per row.
    pub columns: usize,
    /// Each pixel becomes `zoom`×`zoom`.
    pub zoom: u32,
}

impl Default for GridOptions {
    fn default() -> Self {
        Self { columns: 10, zoom: 3 }
    }
}

/// One tile of a grid: an image and the caption under it.
pub struct Tile<'a> {
    pub pixels: &'a [u8],
    pub caption: String,
    /// Marked with a frame (e.g. a wrong prediction).
    pub marked: bool,
}

/// Render tiles of `rows`×`cols` images, white background, dark ink like the
/// d2l figures, captions underneath.
pub fn render_grid(tiles: &[Tile], rows: usize, cols: usize, opts: &GridOptions) -> GrayImage {
    let zoom = opts.zoom.max(1);
    let longest = tiles.iter().map(|t| t.caption.chars().count()).max().unwrap_or(1) as u32;
    let cell_w = (cols as u32 * zoom).max(longest * FONT_PX) + 8;
    let cell_h = rows as u32 * zoom + FONT_PX + 12;
    let ncols = opts.columns.max(1).min(tiles.len().max(1));
    let nrows = tiles.len().div_ceil(ncols);
    let mut img = GrayImage::from_pixel(ncols as u32 * cell_w, nrows as u32 * cell_h, Luma([255]));
    for (k, tile) in tiles.iter().enumerate() {
        let (cx, cy) = ((k % ncols) as u32 * cell_w, (k / ncols) as u32 * cell_h);
        let x0 = cx + (cell_w - cols as u32 * zoom) / 2;
        let y0 = cy + 4;
        for r in 0..rows {
            for c in 0..cols {
                // Dark ink on white, like matplotlib's gray_r in the tutorials.
                let v = 255 - tile.pixels[r * cols + c];
                for dy in 0..zoom {
                    for dx in 0..zoom {
                        img.put_pixel(x0 + c as u32 * zoom + dx, y0 + r as u32 * zoom + dy, Luma([v]));
                    }
                }
            }
        }
        if tile.marked {
            let (w, h) = (cols as u32 * zoom, rows as u32 * zoom);
            for i in 0..w + 4 {
                for y in [y0 - 2, y0 + h + 1] {
                    img.put_pixel(x0 + i - 2, y, Luma([0]));
                }
            }
            for j in 0..h + 4 {
                for x in [x0 - 2, x0 + w + 1] {
                    img.put_pixel(x, y0 + j - 2, Luma([0]));
                }
            }
        }
        let tx = cx + (cell_w - text_width(&tile.caption, 1)) / 2;
        draw_text(&mut img, tx, y0 + rows as u32 * zoom + 4, &tile.caption, 1, 0);
    }
    img
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
