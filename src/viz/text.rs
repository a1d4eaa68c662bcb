//! Text in bitmaps with the 8×8 public-domain font8x8 glyphs: crisp captions
//! under dataset images, whatever the pixel type.

use image::{ImageBuffer, Pixel};

/// Height (and width) of one glyph at scale 1.
pub const FONT_PX: u32 = 8;

/// Draw `text` at (x, y), each glyph pixel a `scale`×`scale` square of `ink`.
/// Characters outside ASCII print as '?'; what falls outside the image is clipped.
pub fn draw_text<P: Pixel>(img: &mut ImageBuffer<P, Vec<P::Subpixel>>, x: u32, y: u32, text: &str, scale: u32, ink: P) {
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
                            img.put_pixel(px, py, ink);
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
