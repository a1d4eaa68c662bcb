//! Pictures of training: learning curves (d2l's Animator as a file), confusion
//! heat maps, grids of images with captions, and the live terminal chart.
//!
//! Curves and heat maps are drawn with plotters, once for SVG and once for PNG
//! from the same drawing code; text in PNGs uses the bundled DejaVu Sans
//! (assets/DejaVuSans.ttf, Bitstream Vera licence), so no system font is needed.
//! Image grids use the 8×8 bitmap font of [`text`].

pub mod curves;
pub mod grid;
pub mod heatmap;
pub mod live;
pub mod text;

use std::path::Path;
use std::sync::Once;

use anyhow::{anyhow, bail, Result};
use image::RgbImage;
use plotters::coord::Shift;
use plotters::prelude::*;

use crate::atomic::write_atomic;

/// The font family name every plot uses.
pub const FONT: &str = "sans-serif";

static FONT_BYTES: &[u8] = include_bytes!("../../assets/DejaVuSans.ttf");

/// Register the bundled font with plotters (once per process). Every drawing
/// function calls it; text layout needs it even for SVG output.
pub fn ensure_font() {
    static REGISTER: Once = Once::new();
    REGISTER.call_once(|| {
        // The bytes are a valid TrueType font (checked by a test), so this cannot fail.
        let _ = plotters::style::register_font(FONT, FontStyle::Normal, FONT_BYTES);
    });
}

/// Something plotters can draw onto any backend.
pub trait Plot {
    /// Size of the picture in pixels.
    fn size(&self) -> (u32, u32);
    fn draw<DB: DrawingBackend>(&self, root: &DrawingArea<DB, Shift>) -> Result<()>;
}

/// The axes every chart here shares: the bundled font at `size` (axis names a point
/// larger) and only the major grid lines, in light grey.
pub(crate) fn house_mesh<'m, 'a, 'b, X, Y, DB>(
    mesh: &'m mut plotters::chart::MeshStyle<'a, 'b, X, Y, DB>,
    size: u32,
) -> &'m mut plotters::chart::MeshStyle<'a, 'b, X, Y, DB>
where
    X: plotters::coord::ranged1d::Ranged,
    Y: plotters::coord::ranged1d::Ranged,
    DB: DrawingBackend,
{
    mesh.label_style((FONT, size))
        .axis_desc_style((FONT, size + 1))
        .light_line_style(TRANSPARENT)
        .bold_line_style(RGBColor(225, 225, 225))
}

/// Turn a plotters error into an anyhow one.
pub(crate) fn plot_err<E: std::error::Error + Send + Sync>(e: DrawingAreaErrorKind<E>) -> anyhow::Error {
    anyhow!("drawing failed: {e}")
}

/// The picture as an SVG document.
pub fn to_svg(plot: &impl Plot) -> Result<String> {
    ensure_font();
    let mut svg = String::new();
    {
        let root = SVGBackend::with_string(&mut svg, plot.size()).into_drawing_area();
        root.fill(&WHITE).map_err(plot_err)?;
        plot.draw(&root)?;
        root.present().map_err(plot_err)?;
    }
    Ok(svg)
}

/// The picture as an RGB bitmap.
pub fn to_rgb(plot: &impl Plot) -> Result<RgbImage> {
    ensure_font();
    let (w, h) = plot.size();
    let mut buf = vec![255u8; w as usize * h as usize * 3];
    {
        let root = BitMapBackend::with_buffer(&mut buf, (w, h)).into_drawing_area();
        root.fill(&WHITE).map_err(plot_err)?;
        plot.draw(&root)?;
        root.present().map_err(plot_err)?;
    }
    Ok(RgbImage::from_raw(w, h, buf).expect("buffer matches the size"))
}

/// PNG bytes of an RGB image.
pub fn png_bytes(img: &RgbImage) -> Result<Vec<u8>> {
    let mut bytes = std::io::Cursor::new(Vec::new());
    img.write_to(&mut bytes, image::ImageFormat::Png)?;
    Ok(bytes.into_inner())
}

/// Save an RGB image as PNG, atomically.
pub fn save_rgb_png(img: &RgbImage, path: &Path) -> Result<()> {
    write_atomic(path, &png_bytes(img)?)?;
    Ok(())
}

/// Save a plot as `.png` or `.svg` (by the extension), atomically.
pub fn save(plot: &impl Plot, path: &Path) -> Result<()> {
    match path.extension().and_then(|e| e.to_str()).map(|e| e.to_ascii_lowercase()).as_deref() {
        Some("png") => save_rgb_png(&to_rgb(plot)?, path),
        Some("svg") => {
            write_atomic(path, to_svg(plot)?.as_bytes())?;
            Ok(())
        }
        _ => bail!("{}: the picture's name must end in .png or .svg", path.display()),
    }
}

/// Colours of the series, after matplotlib's defaults.
pub mod palette {
    use plotters::style::RGBColor;
    /// d2l's Animator: train loss '-' (C0 blue), train acc 'm--', test acc 'g-.', then 'r:'.
    pub const TRAIN_LOSS: RGBColor = RGBColor(31, 119, 180);
    pub const TRAIN_ACC: RGBColor = RGBColor(191, 0, 191);
    pub const TEST_ACC: RGBColor = RGBColor(0, 128, 0);
    pub const VAL_ACC: RGBColor = RGBColor(214, 39, 40);
    /// matplotlib's tab10, for one colour per run.
    pub const RUNS: [RGBColor; 10] = [
        RGBColor(31, 119, 180),
        RGBColor(255, 127, 14),
        RGBColor(44, 160, 44),
        RGBColor(214, 39, 40),
        RGBColor(148, 103, 189),
        RGBColor(140, 86, 75),
        RGBColor(227, 119, 194),
        RGBColor(127, 127, 127),
        RGBColor(188, 189, 34),
        RGBColor(23, 190, 207),
    ];
}
