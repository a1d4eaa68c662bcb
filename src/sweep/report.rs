//! `lenet sweep report`: the trials grouped by configuration (every swept value but
//! the seed), mean ± standard deviation over the seeds, the best configuration, one
//! plot per swept axis, and the trials that are missing or failed; as a text table
//! and a self-contained HTML page.

use std::fmt::Write as _;

use anyhow::Result;
use plotters::coord::Shift;
use plotters::prelude::*;

use super::plan::{show, SEED};
use super::{Status, SweepDir, Trial, TrialResult};
use crate::report::{esc, page_head, strip_xml_decl};
use crate::viz::{house_mesh, plot_err, to_svg, Plot, FONT};

/// Mean and sample standard deviation (none for fewer than two values).
pub fn mean_std(xs: &[f64]) -> (f64, Option<f64>) {
    let n = xs.len() as f64;
    let mean = xs.iter().sum::<f64>() / n;
    let std = (xs.len() >= 2).then(|| (xs.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / (n - 1.0)).sqrt());
    (mean, std)
}

/// One configuration: the trials that differ only in their seed.
#[derive(Clone, Debug)]
pub struct Group {
    /// (axis, value) of every swept axis but the seed, in the axes' order.
    pub key: Vec<(String, String)>,
    pub trials: Vec<usize>,
    pub results: Vec<TrialResult>,
}

impl Group {
    /// The accuracy the configurations are ranked by (see [`SweepReport::ranked_by_val`]).
    fn scores(&self, by_val: bool) -> Vec<f64> {
        self.results.iter().map(|r| if by_val { r.val_acc.unwrap_or(f64::NAN) } else { r.test_acc }).collect()
    }
    fn of(&self, f: impl Fn(&TrialResult) -> f64) -> Vec<f64> {
        self.results.iter().map(f).collect()
    }
    pub fn label(&self) -> String {
        match self.key.is_empty() {
            true => "(one configuration)".into(),
            false => self.key.iter().map(|(k, v)| format!("{k}={v}")).collect::<Vec<_>>().join(" "),
        }
    }
}

/// Everything the report shows.
pub struct SweepReport {
    pub name: String,
    pub axes: Vec<String>,
    pub trials: Vec<Trial>,
    pub statuses: Vec<Status>,
    pub groups: Vec<Group>,
    /// Whether every result has a validation accuracy (`--val-split`): configurations
    /// are then ranked by it, else by test accuracy.
    pub ranked_by_val: bool,
}

impl SweepReport {
    pub fn build(dir: &SweepDir, trials: Vec<Trial>) -> Self {
        let axes = dir.axes(&trials);
        let statuses: Vec<Status> = trials.iter().map(|t| dir.status(t)).collect();
        let mut groups: Vec<Group> = Vec::new();
        for (t, s) in trials.iter().zip(&statuses) {
            let key: Vec<(String, String)> = axes
                .iter()
                .filter(|a| a.as_str() != SEED)
                .filter_map(|a| t.swept.get(a).map(|v| (a.clone(), show(v))))
                .collect();
            let g = match groups.iter().position(|g| g.key == key) {
                Some(i) => &mut groups[i],
                None => {
                    groups.push(Group { key, trials: Vec::new(), results: Vec::new() });
                    groups.last_mut().expect("just pushed")
                }
            };
            g.trials.push(t.index);
            if let Status::Done(r) = s {
                g.results.push((**r).clone());
            }
        }
        let done: Vec<&TrialResult> = groups.iter().flat_map(|g| &g.results).collect();
        let ranked_by_val = !done.is_empty() && done.iter().all(|r| r.val_acc.is_some());
        let name = dir
            .path
            .canonicalize()
            .ok()
            .and_then(|p| p.file_name().map(|n| n.to_string_lossy().into_owned()))
            .unwrap_or_else(|| dir.path.display().to_string());
        Self { name, axes, trials, statuses, groups, ranked_by_val }
    }

    fn metric(&self) -> &'static str {
        if self.ranked_by_val {
            "val acc"
        } else {
            "test acc"
        }
    }

    /// The groups with results, best mean first.
    pub fn ranked(&self) -> Vec<&Group> {
        let mut g: Vec<&Group> = self.groups.iter().filter(|g| !g.results.is_empty()).collect();
        let score = |g: &Group| mean_std(&g.scores(self.ranked_by_val)).0;
        g.sort_by(|a, b| score(b).total_cmp(&score(a)));
        g
    }

    pub fn best(&self) -> Option<&Group> {
        self.ranked().first().copied()
    }

    pub fn counts(&self) -> Counts {
        let mut c = Counts::default();
        for s in &self.statuses {
            match s {
                Status::Done(_) => c.done += 1,
                Status::Failed(_) => c.failed += 1,
                Status::Running(_) => c.running += 1,
                Status::Stopped(_) => c.stopped += 1,
                Status::Pending => c.pending += 1,
            }
        }
        c
    }

    fn summary_line(&self) -> String {
        let c = self.counts();
        format!(
            "{} trials: {} done, {} failed, {} running, {} stopped (to resume), {} not started",
            self.trials.len(),
            c.done,
            c.failed,
            c.running,
            c.stopped,
            c.pending
        )
    }

    /// The trials that have no result, with what stands in its way.
    pub fn missing(&self) -> Vec<(&Trial, String)> {
        self.trials
            .iter()
            .zip(&self.statuses)
            .filter_map(|(t, s)| {
                let why = match s {
                    Status::Done(_) => return None,
                    Status::Failed(f) => format!("failed on {}: {}", f.host, f.error),
                    Status::Running(who) => format!("running ({who})"),
                    Status::Stopped(e) => format!("stopped after epoch {e}, to resume"),
                    Status::Pending => "not started".into(),
                };
                Some((t, why))
            })
            .collect()
    }

    fn fmt_mean(xs: &[f64], digits: usize) -> String {
        if xs.is_empty() || xs.iter().any(|x| x.is_nan()) {
            return "-".into();
        }
        match mean_std(xs) {
            (m, Some(s)) => format!("{m:.digits$} ± {s:.digits$}"),
            (m, None) => format!("{m:.digits$}"),
        }
    }

    /// The table's header and rows, ranked best first; then the configurations
    /// with no result yet.
    fn table(&self) -> (Vec<String>, Vec<Vec<String>>) {
        let axes: Vec<&String> = self.axes.iter().filter(|a| a.as_str() != SEED).collect();
        let mut header: Vec<String> = axes.iter().map(|a| a.to_string()).collect();
        header.extend(["seeds".into(), "test acc".into()]);
        if self.ranked_by_val {
            header.push("val acc".into());
        }
        header.extend(["best acc".into(), "train loss".into(), "seconds".into()]);
        let mut rows = Vec::new();
        let ranked = self.ranked();
        let unranked = self.groups.iter().filter(|g| g.results.is_empty());
        for g in ranked.iter().copied().chain(unranked) {
            let mut row: Vec<String> = axes
                .iter()
                .map(|a| g.key.iter().find(|(k, _)| k == *a).map_or("-".into(), |(_, v)| v.clone()))
                .collect();
            row.push(format!("{}/{}", g.results.len(), g.trials.len()));
            row.push(Self::fmt_mean(&g.of(|r| r.test_acc), 4));
            if self.ranked_by_val {
                row.push(Self::fmt_mean(&g.of(|r| r.val_acc.unwrap_or(f64::NAN)), 4));
            }
            row.push(Self::fmt_mean(&g.of(|r| r.best_acc), 4));
            row.push(Self::fmt_mean(&g.of(|r| r.train_loss), 3));
            row.push(Self::fmt_mean(&g.of(|r| r.seconds), 0));
            rows.push(row);
        }
        (header, rows)
    }

    /// The report as text: the summary, the table (best first), the missing trials.
    pub fn to_text(&self) -> String {
        let mut s = format!("sweep {}: {}\n", self.name, self.summary_line());
        let (header, rows) = self.table();
        let widths: Vec<usize> = (0..header.len())
            .map(|i| rows.iter().map(|r| r[i].chars().count()).chain([header[i].chars().count()]).max().unwrap_or(0))
            .collect();
        let line = |cells: &[String]| {
            cells.iter().zip(&widths).map(|(c, w)| format!("{c:>w$}")).collect::<Vec<_>>().join("  ") + "\n"
        };
        s += "\n";
        s += &line(&header);
        for r in &rows {
            s += &line(r);
        }
        match self.best() {
            Some(b) => {
                let (m, sd) = mean_std(&b.scores(self.ranked_by_val));
                let sd = sd.map_or(String::new(), |sd| format!(" ± {sd:.4}"));
                let _ =
                    writeln!(s, "\nbest: {} ({} {m:.4}{sd} over {} seeds)", b.label(), self.metric(), b.results.len());
            }
            None => s += "\nno trial has finished yet\n",
        }
        let missing = self.missing();
        if !missing.is_empty() {
            let _ = writeln!(s, "\n{} trials without a result:", missing.len());
            for (t, why) in missing {
                let _ = writeln!(s, "  {:>4}  {}: {}", t.index, t.name, why);
            }
        }
        s
    }

    /// A self-contained HTML page: summary, best configuration, table, a plot per
    /// swept axis, and the trials without a result.
    pub fn to_html(&self) -> Result<String> {
        let mut h = page_head(&format!("lenet sweep {}", self.name));
        writeln!(h, "<p class=\"summary\" id=\"summary\">{}</p>", esc(&self.summary_line()))?;
        match self.best() {
            Some(b) => {
                let (m, sd) = mean_std(&b.scores(self.ranked_by_val));
                let sd = sd.map_or(String::new(), |sd| format!(" ± {sd:.4}"));
                writeln!(
                    h,
                    "<p id=\"best\">Best configuration: <b>{}</b>, {} {m:.4}{sd} over {} seeds.</p>",
                    esc(&b.label()),
                    self.metric(),
                    b.results.len()
                )?;
            }
            None => h += "<p id=\"best\">No trial has finished yet.</p>\n",
        }
        h += "<section>\n<h2>Configurations</h2>\n";
        writeln!(
            h,
            "<p class=\"note\">Mean ± sample standard deviation over the seeds that finished, at the last epoch; \
             ranked by {}. Best acc: best.safetensors' accuracy (validation, else test).</p>",
            self.metric()
        )?;
        let (header, rows) = self.table();
        h += "<table id=\"configs\">\n<thead><tr>";
        for c in &header {
            write!(h, "<th>{}</th>", esc(c))?;
        }
        h += "</tr></thead>\n<tbody>\n";
        for (i, r) in rows.iter().enumerate() {
            h += if i == 0 && self.best().is_some() { "<tr class=\"best\">" } else { "<tr>" };
            for c in r {
                write!(h, "<td>{}</td>", esc(c))?;
            }
            h += "</tr>\n";
        }
        h += "</tbody>\n</table>\n</section>\n";
        let plots = self.axis_plots();
        if !plots.is_empty() {
            h += "<section>\n<h2>Per swept axis</h2>\n<div class=\"row\">\n";
            for p in &plots {
                writeln!(
                    h,
                    "<figure class=\"plot axis\" data-axis=\"{}\">\n{}\n<figcaption>Test accuracy of each finished \
                     trial (dots) and the mean per value (line) against {}.</figcaption>\n</figure>",
                    esc(&p.axis),
                    strip_xml_decl(&to_svg(p)?),
                    esc(&p.axis)
                )?;
            }
            h += "</div>\n</section>\n";
        }
        let missing = self.missing();
        h += "<section>\n<h2>Trials without a result</h2>\n";
        if missing.is_empty() {
            h += "<p id=\"missing\">None: every trial finished.</p>\n";
        } else {
            h += "<table id=\"missing\">\n<thead><tr><th>trial</th><th>settings</th><th>status</th></tr></thead>\n<tbody>\n";
            for (t, why) in missing {
                writeln!(h, "<tr><td>{}</td><td>{}</td><td>{}</td></tr>", t.index, esc(&t.name), esc(&why))?;
            }
            h += "</tbody>\n</table>\n";
        }
        h += "</section>\n";
        h += "<footer>lenet sweep report; each trial's run folder is runs/NNNN (lenet report runs/NNNN for one).</footer>\n";
        h += "</body>\n</html>\n";
        Ok(h)
    }

    /// One plot per swept axis but the seed, over the finished trials.
    pub fn axis_plots(&self) -> Vec<AxisPlot> {
        let done: Vec<&TrialResult> = self.groups.iter().flat_map(|g| &g.results).collect();
        let mut plots = Vec::new();
        for axis in self.axes.iter().filter(|a| a.as_str() != SEED) {
            // The axis' values in the order the trials take them.
            let mut values: Vec<String> = Vec::new();
            for t in &self.trials {
                if let Some(v) = t.swept.get(axis).map(show) {
                    if !values.contains(&v) {
                        values.push(v);
                    }
                }
            }
            let nums: Option<Vec<f64>> = values.iter().map(|v| v.parse::<f64>().ok()).collect();
            // Many numbers (a random axis) go on a numeric axis, log-scaled when they
            // span decades; a few values are categories, evenly spaced.
            let scale = match nums {
                Some(n) if values.len() > 6 => {
                    let (lo, hi) = n.iter().fold((f64::MAX, f64::MIN), |(a, b), &x| (a.min(x), b.max(x)));
                    if lo > 0.0 && hi / lo > 20.0 {
                        Scale::Log(lo.log10(), hi.log10())
                    } else {
                        Scale::Linear(lo, hi)
                    }
                }
                _ => Scale::Categories,
            };
            let x_of = |v: &str| -> f64 {
                match scale {
                    Scale::Categories => values.iter().position(|x| x == v).unwrap_or(0) as f64,
                    Scale::Log(..) => v.parse::<f64>().unwrap_or(1.0).log10(),
                    Scale::Linear(..) => v.parse().unwrap_or(0.0),
                }
            };
            let points: Vec<(f64, f64)> =
                done.iter().filter_map(|r| r.swept.get(axis).map(|v| (x_of(&show(v)), r.test_acc))).collect();
            let means: Vec<(f64, f64)> = values
                .iter()
                .filter_map(|v| {
                    let at: Vec<f64> = done
                        .iter()
                        .filter(|r| r.swept.get(axis).map(show).as_deref() == Some(v.as_str()))
                        .map(|r| r.test_acc)
                        .collect();
                    (!at.is_empty()).then(|| (x_of(v), mean_std(&at).0))
                })
                .collect();
            let mut means = means;
            means.sort_by(|a, b| a.0.total_cmp(&b.0));
            plots.push(AxisPlot { axis: axis.clone(), values, scale, points, means });
        }
        plots
    }
}

#[derive(Clone, Copy, Debug, Default)]
pub struct Counts {
    pub done: usize,
    pub failed: usize,
    pub running: usize,
    pub stopped: usize,
    pub pending: usize,
}

#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Scale {
    Categories,
    Linear(f64, f64),
    /// log10 of the lowest and highest value.
    Log(f64, f64),
}

/// Test accuracy against one swept axis.
pub struct AxisPlot {
    pub axis: String,
    pub values: Vec<String>,
    pub scale: Scale,
    /// (x, test acc) of each finished trial.
    pub points: Vec<(f64, f64)>,
    /// (x, mean test acc) per value.
    pub means: Vec<(f64, f64)>,
}

impl Plot for AxisPlot {
    fn size(&self) -> (u32, u32) {
        (520, 360)
    }

    fn draw<DB: DrawingBackend>(&self, root: &DrawingArea<DB, Shift>) -> Result<()> {
        let (x0, x1) = match self.scale {
            Scale::Categories => (-0.5, self.values.len() as f64 - 0.5),
            Scale::Linear(lo, hi) | Scale::Log(lo, hi) => {
                let pad = ((hi - lo) * 0.05).max(1e-9);
                (lo - pad, hi + pad)
            }
        };
        let ys = self.points.iter().map(|p| p.1);
        let (lo, hi) = ys.fold((f64::MAX, f64::MIN), |(a, b), y| (a.min(y), b.max(y)));
        let (y0, y1) = if lo > hi { (0.0, 1.0) } else { ((lo - 0.02).max(0.0), (hi + 0.02).min(1.0)) };
        let values = &self.values;
        let scale = self.scale;
        let label = move |x: &f64| -> String {
            match scale {
                Scale::Categories => {
                    let i = x.round();
                    if (x - i).abs() < 1e-6 && i >= 0.0 {
                        values.get(i as usize).cloned().unwrap_or_default()
                    } else {
                        String::new()
                    }
                }
                Scale::Log(..) => format!("{:.2e}", 10f64.powf(*x)),
                Scale::Linear(..) => format!("{x:.3}"),
            }
        };
        let mut chart = ChartBuilder::on(root)
            .margin(14)
            .caption(format!("test accuracy by {}", self.axis), (FONT, 17))
            .x_label_area_size(40)
            .y_label_area_size(56)
            .build_cartesian_2d(x0..x1, y0..y1)
            .map_err(plot_err)?;
        let x_labels = match self.scale {
            Scale::Categories => self.values.len() * 2 + 1,
            _ => 6,
        };
        let x_desc = match self.scale {
            Scale::Log(..) => format!("{} (log scale)", self.axis),
            _ => self.axis.clone(),
        };
        house_mesh(&mut chart.configure_mesh(), 13)
            .x_desc(x_desc)
            .y_desc("test acc")
            .x_labels(x_labels)
            .x_label_formatter(&label)
            .y_label_formatter(&|v| format!("{v:.3}"))
            .draw()
            .map_err(plot_err)?;
        let dots = RGBColor(31, 119, 180);
        let line = RGBColor(214, 39, 40);
        chart.draw_series(self.points.iter().map(|&p| Circle::new(p, 3, dots.mix(0.6).filled()))).map_err(plot_err)?;
        chart.draw_series(LineSeries::new(self.means.clone(), line.stroke_width(2))).map_err(plot_err)?;
        chart.draw_series(self.means.iter().map(|&p| Cross::new(p, 5, line.stroke_width(2)))).map_err(plot_err)?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sample_standard_deviation() {
        let (m, s) = mean_std(&[0.8, 0.9, 1.0]);
        assert!((m - 0.9).abs() < 1e-12);
        assert!((s.unwrap() - 0.1).abs() < 1e-12, "n-1 in the denominator");
        assert_eq!(mean_std(&[0.5]), (0.5, None));
    }
}
