//! The confusion matrix as a heat map: rows are true classes, columns predicted
//! ones, each cell shaded by its share of the true class (so every row reads on
//! the same scale whatever the class sizes) and labelled with its count.

use anyhow::{bail, Result};
use plotters::coord::Shift;
use plotters::prelude::*;
use plotters::style::text_anchor::{HPos, Pos, VPos};

use super::{ensure_font, plot_err, Plot, FONT};

/// matplotlib's "Blues" colour map, sampled at 9 even steps.
const BLUES: [(u8, u8, u8); 9] = [
    (247, 251, 255),
    (222, 235, 247),
    (198, 219, 239),
    (158, 202, 225),
    (107, 174, 214),
    (66, 146, 198),
    (33, 113, 181),
    (8, 81, 156),
    (8, 48, 107),
];

/// The colour of `t` in [0, 1] on the Blues map (linear between samples).
pub fn blues(t: f64) -> RGBColor {
    let t = if t.is_finite() { t.clamp(0.0, 1.0) } else { 0.0 };
    let x = t * (BLUES.len() - 1) as f64;
    let i = (x.floor() as usize).min(BLUES.len() - 2);
    let f = x - i as f64;
    let mix = |a: u8, b: u8| (a as f64 + (b as f64 - a as f64) * f).round() as u8;
    let (a, b) = (BLUES[i], BLUES[i + 1]);
    RGBColor(mix(a.0, b.0), mix(a.1, b.1), mix(a.2, b.2))
}

pub struct ConfusionPlot<'a> {
    /// `matrix[true][predicted]`.
    pub matrix: &'a [Vec<usize>],
    pub class_names: Vec<String>,
    pub title: String,
}

/// Side of a cell in pixels.
pub const CELL: u32 = 56;
const LABEL_PX: u32 = 14;
const TITLE_H: u32 = 40;
const AXIS_TITLE: u32 = 26;
const BAR_W: u32 = 16;

impl<'a> ConfusionPlot<'a> {
    pub fn new(matrix: &'a [Vec<usize>], class_names: &[&str], title: &str) -> Result<Self> {
        let n = matrix.len();
        if n == 0 || matrix.iter().any(|r| r.len() != n) {
            bail!("a confusion matrix must be square and non-empty");
        }
        if class_names.len() != n {
            bail!("{} class names for a {n}×{n} confusion matrix", class_names.len());
        }
        Ok(ConfusionPlot {
            matrix,
            class_names: class_names.iter().map(|s| s.to_string()).collect(),
            title: title.into(),
        })
    }

    fn text_w(text: &str) -> u32 {
        ensure_font();
        FontDesc::from((FONT, LABEL_PX as f64)).box_size(text).map(|(w, _)| w).unwrap_or(8 * text.len() as u32)
    }

    fn widest_label(&self) -> u32 {
        self.class_names.iter().map(|n| Self::text_w(n)).max().unwrap_or(0)
    }

    /// Column labels stand upright when one is wider than a cell.
    fn rotated(&self) -> bool {
        self.widest_label() + 6 > CELL
    }

    /// The top-left pixel of cell (true class `t`, predicted class `p`); cells are [`CELL`] pixels square.
    pub fn cell_origin(&self, t: usize, p: usize) -> (u32, u32) {
        let (left, _) = self.margins();
        (left + p as u32 * CELL, TITLE_H + t as u32 * CELL)
    }

    /// (left, bottom) margins around the matrix.
    fn margins(&self) -> (u32, u32) {
        let left = AXIS_TITLE + self.widest_label() + 12;
        let bottom = if self.rotated() { self.widest_label() + 12 } else { 24 } + AXIS_TITLE + 6;
        (left, bottom)
    }
}

impl Plot for ConfusionPlot<'_> {
    fn size(&self) -> (u32, u32) {
        let n = self.matrix.len() as u32;
        let (left, bottom) = self.margins();
        let right = 24 + BAR_W + 52;
        ((left + n * CELL + right).max(360), TITLE_H + n * CELL + bottom)
    }

    fn draw<DB: DrawingBackend>(&self, root: &DrawingArea<DB, Shift>) -> Result<()> {
        let n = self.matrix.len();
        let (left, _) = self.margins();
        let (x0, y0) = (left as i32, TITLE_H as i32);
        let side = (n as u32 * CELL) as i32;
        let cell = CELL as i32;
        let style = |px: u32, color: &RGBColor| (FONT, px as f64).into_font().color(color);
        let centred = Pos::new(HPos::Center, VPos::Center);
        let (w, _) = self.size();
        let title = style(17, &BLACK).pos(Pos::new(HPos::Center, VPos::Center));
        root.draw(&Text::new(self.title.clone(), (w as i32 / 2, TITLE_H as i32 / 2), title)).map_err(plot_err)?;

        for (t, row) in self.matrix.iter().enumerate() {
            let total: usize = row.iter().sum();
            for (p, &count) in row.iter().enumerate() {
                let share = if total > 0 { count as f64 / total as f64 } else { 0.0 };
                let (cx, cy) = (x0 + p as i32 * cell, y0 + t as i32 * cell);
                root.draw(&Rectangle::new([(cx, cy), (cx + cell, cy + cell)], blues(share).filled()))
                    .map_err(plot_err)?;
                let ink = if share > 0.5 { WHITE } else { BLACK };
                let px = if count >= 10_000 { 11 } else { 13 };
                root.draw(&Text::new(count.to_string(), (cx + cell / 2, cy + cell / 2), style(px, &ink).pos(centred)))
                    .map_err(plot_err)?;
            }
        }
        // Cell borders and the frame.
        let grid = RGBColor(255, 255, 255).stroke_width(1);
        for k in 1..n as i32 {
            root.draw(&PathElement::new(vec![(x0 + k * cell, y0), (x0 + k * cell, y0 + side)], grid))
                .map_err(plot_err)?;
            root.draw(&PathElement::new(vec![(x0, y0 + k * cell), (x0 + side, y0 + k * cell)], grid))
                .map_err(plot_err)?;
        }
        root.draw(&Rectangle::new([(x0, y0), (x0 + side, y0 + side)], BLACK.stroke_width(1))).map_err(plot_err)?;

        // Row labels (true class), right-aligned left of the matrix.
        let right_mid = Pos::new(HPos::Right, VPos::Center);
        for (t, name) in self.class_names.iter().enumerate() {
            let y = y0 + t as i32 * cell + cell / 2;
            root.draw(&Text::new(name.clone(), (x0 - 8, y), style(LABEL_PX, &BLACK).pos(right_mid)))
                .map_err(plot_err)?;
        }
        // Column labels (predicted class), under the matrix.
        let rotated = self.rotated();
        for (p, name) in self.class_names.iter().enumerate() {
            let x = x0 + p as i32 * cell + cell / 2;
            let label = if rotated {
                // Reading upwards, its end at the matrix, like matplotlib's rotation=90.
                let s = style(LABEL_PX, &BLACK)
                    .transform(FontTransform::Rotate270)
                    .pos(Pos::new(HPos::Right, VPos::Center));
                Text::new(name.clone(), (x, y0 + side + 8), s)
            } else {
                Text::new(
                    name.clone(),
                    (x, y0 + side + 6),
                    style(LABEL_PX, &BLACK).pos(Pos::new(HPos::Center, VPos::Top)),
                )
            };
            root.draw(&label).map_err(plot_err)?;
        }
        // Axis titles.
        let (_, h) = self.size();
        let axis = style(15, &BLACK).pos(centred);
        root.draw(&Text::new("predicted class", (x0 + side / 2, h as i32 - AXIS_TITLE as i32 / 2 - 4), axis.clone()))
            .map_err(plot_err)?;
        let vertical = style(15, &BLACK).transform(FontTransform::Rotate270).pos(centred);
        root.draw(&Text::new("true class", (AXIS_TITLE as i32 / 2 + 2, y0 + side / 2), vertical)).map_err(plot_err)?;

        // Colour bar: share of the true class.
        let bx = x0 + side + 24;
        let steps = 64;
        for s in 0..steps {
            let t0 = s as f64 / steps as f64;
            let ya = y0 + side - ((s + 1) as f64 / steps as f64 * side as f64).round() as i32;
            let yb = y0 + side - (t0 * side as f64).round() as i32;
            root.draw(&Rectangle::new([(bx, ya), (bx + BAR_W as i32, yb)], blues(t0 + 0.5 / steps as f64).filled()))
                .map_err(plot_err)?;
        }
        root.draw(&Rectangle::new([(bx, y0), (bx + BAR_W as i32, y0 + side)], BLACK.stroke_width(1)))
            .map_err(plot_err)?;
        let left_mid = Pos::new(HPos::Left, VPos::Center);
        for k in 0..=4 {
            let y = y0 + side - k * side / 4;
            root.draw(&PathElement::new(vec![(bx + BAR_W as i32, y), (bx + BAR_W as i32 + 4, y)], BLACK))
                .map_err(plot_err)?;
            let label = format!("{}%", k * 25);
            root.draw(&Text::new(label, (bx + BAR_W as i32 + 7, y), style(12, &BLACK).pos(left_mid)))
                .map_err(plot_err)?;
        }
        Ok(())
    }
}
