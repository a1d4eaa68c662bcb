//! The live chart of `lenet train --live`: the same curves as curves.png, drawn
//! with braille dots by ratatui in an inline area under the epoch lines, and
//! redrawn about 5 times per epoch and at every batch's progress.

use std::io::{Stdout, Write};

use anyhow::{Context, Result};
use ratatui::backend::CrosstermBackend;
use ratatui::buffer::Buffer;
use ratatui::layout::{Constraint, Layout, Rect};
use ratatui::style::{Color, Style};
use ratatui::symbols::Marker;
use ratatui::text::Line;
use ratatui::widgets::{Axis, Block, Chart, Dataset, GraphType, LegendPosition, Paragraph, Widget};
use ratatui::{Terminal, TerminalOptions, Viewport};

use super::curves::Curves;

/// Rows the live area takes: the chart and one status line.
pub const HEIGHT: u16 = 18;

/// Draw the chart of `curves` with a status line under it into `area` of `buf`.
pub fn render(curves: &Curves, status: &str, area: Rect, buf: &mut Buffer) {
    let [chart_area, status_area] = Layout::vertical([Constraint::Min(3), Constraint::Length(1)]).areas(area);
    let loss: Vec<(f64, f64)> = curves.points.iter().map(|p| (p.epoch, p.train_loss)).collect();
    let acc: Vec<(f64, f64)> = curves.points.iter().map(|p| (p.epoch, p.train_acc)).collect();
    // The test accuracy starts at the origin's epoch so a single epoch still draws a line.
    let test: Vec<(f64, f64)> = curves.evals.iter().map(|e| (e.epoch as f64, e.test_acc)).collect();
    let val: Vec<(f64, f64)> = curves.evals.iter().filter_map(|e| e.val_acc.map(|v| (e.epoch as f64, v))).collect();
    let x_max = curves.x_max();
    let y_max = curves.max_loss().max(1.0) * 1.05;
    let mut sets = vec![
        Dataset::default()
            .name("train loss")
            .marker(Marker::Braille)
            .graph_type(GraphType::Line)
            .style(Style::default().fg(Color::Blue))
            .data(&loss),
        Dataset::default()
            .name("train acc")
            .marker(Marker::Braille)
            .graph_type(GraphType::Line)
            .style(Style::default().fg(Color::Magenta))
            .data(&acc),
        Dataset::default()
            .name("test acc")
            .marker(Marker::Braille)
            .graph_type(if test.len() > 1 { GraphType::Line } else { GraphType::Scatter })
            .style(Style::default().fg(Color::Green))
            .data(&test),
    ];
    if !val.is_empty() {
        sets.push(
            Dataset::default()
                .name("val acc")
                .marker(Marker::Braille)
                .graph_type(if val.len() > 1 { GraphType::Line } else { GraphType::Scatter })
                .style(Style::default().fg(Color::Red))
                .data(&val),
        );
    }
    let x_labels: Vec<Line> = ["0".to_string(), format!("{}", (x_max / 2.0).round()), format!("{x_max:.0}")]
        .into_iter()
        .map(Line::from)
        .collect();
    let y_labels: Vec<Line> =
        ["0.0".to_string(), format!("{:.1}", y_max / 2.0), format!("{y_max:.1}")].into_iter().map(Line::from).collect();
    let title = if curves.label.is_empty() { " training ".to_string() } else { format!(" {} ", curves.label) };
    Chart::new(sets)
        .block(Block::bordered().title(title))
        .x_axis(Axis::default().title("epoch").bounds([0.0, x_max]).labels(x_labels))
        .y_axis(Axis::default().bounds([0.0, y_max]).labels(y_labels))
        .legend_position(Some(LegendPosition::Right))
        .hidden_legend_constraints((Constraint::Ratio(1, 2), Constraint::Ratio(1, 2)))
        .render(chart_area, buf);
    Paragraph::new(status.to_string()).render(status_area, buf);
}

/// A progress bar as text: `[=====>    ]`.
pub fn bar(done: usize, total: usize, width: usize) -> String {
    let filled = (done * width).checked_div(total).map_or(width, |f| f.min(width));
    match filled {
        0 => format!("[{}]", " ".repeat(width)),
        f if f == width => format!("[{}]", "=".repeat(width)),
        f => format!("[{}>{}]", "=".repeat(f - 1), " ".repeat(width - f)),
    }
}

/// The chart in an inline area of the terminal, under the lines printed so far.
pub struct LiveTerminal {
    term: Terminal<CrosstermBackend<Stdout>>,
}

impl LiveTerminal {
    pub fn new() -> Result<Self> {
        let backend = CrosstermBackend::new(std::io::stdout());
        let term = Terminal::with_options(backend, TerminalOptions { viewport: Viewport::Inline(HEIGHT) })
            .context("cannot set up the live chart on this terminal")?;
        Ok(Self { term })
    }

    /// Print a line above the chart.
    pub fn print_line(&mut self, line: &str) -> Result<()> {
        let text = line.to_string();
        self.term.insert_before(1, |buf| Paragraph::new(text).render(buf.area, buf))?;
        Ok(())
    }

    pub fn draw(&mut self, curves: &Curves, status: &str) -> Result<()> {
        self.term.draw(|frame| {
            let area = frame.area();
            render(curves, status, area, frame.buffer_mut());
        })?;
        Ok(())
    }

    /// Leave the chart on screen and put the cursor under it.
    pub fn finish(mut self) -> Result<()> {
        let area = self.term.get_frame().area();
        self.term.set_cursor_position((0, area.bottom().saturating_sub(1)))?;
        self.term.show_cursor()?;
        let mut out = std::io::stdout();
        writeln!(out)?;
        out.flush()?;
        Ok(())
    }
}
