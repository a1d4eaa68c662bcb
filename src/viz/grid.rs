//! Grids of dataset-sized images with captions, like the tutorials' figures:
//! dark ink on white (matplotlib's gray_r), captions under each image, and a
//! coloured frame around marked ones (e.g. wrong predictions). The data
//! preview (`lenet data preview`) and the prediction grids both draw with this.

use image::{Rgb, RgbImage};

use super::text::{draw_text, text_width, FONT_PX};
use crate::data::Images;

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

/// One line of a caption.
#[derive(Clone, Debug)]
pub struct Caption {
    pub text: String,
    pub color: Rgb<u8>,
}

/// A frame drawn 2 pixels outside the image, `width` pixels thick (1 or 2).
#[derive(Clone, Copy, Debug)]
pub struct Frame {
    pub color: Rgb<u8>,
    pub width: u32,
}

/// One tile: an image (rows×cols u8, white ink on black as stored) and its caption lines.
pub struct GridTile<'a> {
    pub pixels: &'a [u8],
    pub captions: Vec<Caption>,
    pub frame: Option<Frame>,
}

pub const BLACK: Rgb<u8> = Rgb([0, 0, 0]);
pub const RED: Rgb<u8> = Rgb([214, 39, 40]);
pub const GRAY: Rgb<u8> = Rgb([90, 90, 90]);
/// Space between caption lines.
const LINE_GAP: u32 = 2;

/// Render tiles of `rows`×`cols` images, `opts.columns` per row, on white.
pub fn render_tiles(tiles: &[GridTile], rows: usize, cols: usize, opts: &GridOptions) -> RgbImage {
    let zoom = opts.zoom.max(1);
    let longest = tiles.iter().flat_map(|t| &t.captions).map(|c| c.text.chars().count()).max().unwrap_or(1) as u32;
    let lines = tiles.iter().map(|t| t.captions.len()).max().unwrap_or(1).max(1) as u32;
    let (w, h) = (cols as u32 * zoom, rows as u32 * zoom);
    let cell_w = w.max(longest * FONT_PX) + 8;
    let cell_h = h + 4 + 4 + lines * FONT_PX + (lines - 1) * LINE_GAP + 4;
    let ncols = opts.columns.max(1).min(tiles.len().max(1));
    let nrows = tiles.len().div_ceil(ncols).max(1);
    let mut img = RgbImage::from_pixel(ncols as u32 * cell_w, nrows as u32 * cell_h, Rgb([255, 255, 255]));
    for (k, tile) in tiles.iter().enumerate() {
        let (cx, cy) = ((k % ncols) as u32 * cell_w, (k / ncols) as u32 * cell_h);
        let x0 = cx + (cell_w - w) / 2;
        let y0 = cy + 4;
        for r in 0..rows {
            for c in 0..cols {
                // Dark ink on white, like matplotlib's gray_r in the tutorials.
                let v = 255 - tile.pixels[r * cols + c];
                for dy in 0..zoom {
                    for dx in 0..zoom {
                        img.put_pixel(x0 + c as u32 * zoom + dx, y0 + r as u32 * zoom + dy, Rgb([v, v, v]));
                    }
                }
            }
        }
        if let Some(frame) = tile.frame {
            for k in 0..frame.width.clamp(1, 2) {
                let (left, top) = (x0 - 2 - k, y0 - 2 - k);
                let (right, bottom) = (x0 + w + 1 + k, y0 + h + 1 + k);
                for x in left..=right {
                    img.put_pixel(x, top, frame.color);
                    img.put_pixel(x, bottom, frame.color);
                }
                for y in top..=bottom {
                    img.put_pixel(left, y, frame.color);
                    img.put_pixel(right, y, frame.color);
                }
            }
        }
        for (i, line) in tile.captions.iter().enumerate() {
            let tx = cx + (cell_w - text_width(&line.text, 1)) / 2;
            let ty = y0 + h + 4 + i as u32 * (FONT_PX + LINE_GAP);
            draw_text(&mut img, tx, ty, &line.text, 1, line.color);
        }
    }
    img
}

/// One classified example.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Classified {
    /// Index in its split.
    pub index: usize,
    pub label: u8,
    pub predicted: u8,
    /// The predicted class's probability.
    pub probability: f64,
}

impl Classified {
    pub fn is_wrong(&self) -> bool {
        self.label != self.predicted
    }
}

/// The tutorials' prediction figure: each image with its predicted class and
/// probability; wrong ones framed in red, their caption red with the true class under it.
pub fn prediction_grid(images: &Images, items: &[Classified], class_names: &[&str], opts: &GridOptions) -> RgbImage {
    let name = |c: u8| class_names.get(c as usize).copied().unwrap_or("?");
    let tiles: Vec<GridTile> = items
        .iter()
        .map(|it| {
            let guess = format!("{} {:.0}%", name(it.predicted), 100.0 * it.probability);
            if it.is_wrong() {
                GridTile {
                    pixels: images.image(it.index),
                    captions: vec![
                        Caption { text: guess, color: RED },
                        Caption { text: format!("true {}", name(it.label)), color: GRAY },
                    ],
                    frame: Some(Frame { color: RED, width: 2 }),
                }
            } else {
                GridTile {
                    pixels: images.image(it.index),
                    captions: vec![Caption { text: guess, color: BLACK }],
                    frame: None,
                }
            }
        })
        .collect();
    render_tiles(&tiles, images.rows, images.cols, opts)
}
