//! A sweep file expanded into its numbered trials.
//!
//! ```toml
//! [base]                       # `lenet train` options by their long names
//! dataset = "mnist"
//! epochs = 5
//! [grid]                       # every combination is a trial (the last key varies fastest)
//! arch = ["relu", "d2l", "nets/wide.toml"]
//! lr = [0.001, 0.003]
//! seed = [1, 2]
//! [random]                     # optional: `samples` draws, each crossed with the grid
//! samples = 8
//! seed = 0                     # the draws' own seed (default 0)
//! momentum = { uniform = [0.8, 0.99] }
//! weight-decay = { log-uniform = [1e-5, 1e-3] }
//! batch = { choice = [64, 128, 256] }
//! epochs = { int = [2, 8] }    # inclusive
//! ```
//!
//! The expansion is a pure function of the file: the same file gives the same
//! trials, in the same order, with the same random draws.

use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

/// Options a sweep may not set: the sweep owns the run folder, and a trial's own log
/// is no terminal.
const RESERVED: [&str; 4] = ["run-dir", "resume", "live", "help"];

/// The axis that replicates a configuration; the report averages over it.
pub const SEED: &str = "seed";

/// One training run of a sweep.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Trial {
    pub index: usize,
    /// The swept values, `arch=relu lr=0.001 seed=1`.
    pub name: String,
    /// The values of the swept axes (grid and random), by option name.
    pub swept: Map<String, Value>,
    /// Every `lenet train` option of the trial (base and swept), by long name. An
    /// architecture file is `arch/<file>` inside the sweep folder.
    pub options: Map<String, Value>,
}

/// A parsed sweep file, before expansion.
#[derive(Clone, Debug)]
pub struct SweepFile {
    base: Vec<(String, Value)>,
    grid: Vec<(String, Vec<Value>)>,
    random: Option<RandomSearch>,
    /// The folder the file's relative paths (architecture files) start from.
    dir: PathBuf,
}

#[derive(Clone, Debug)]
struct RandomSearch {
    samples: usize,
    seed: u64,
    axes: Vec<(String, Distribution)>,
}

#[derive(Clone, Debug, PartialEq)]
enum Distribution {
    Uniform(f64, f64),
    LogUniform(f64, f64),
    Int(i64, i64),
    Choice(Vec<Value>),
}

impl Distribution {
    fn parse(key: &str, v: &toml::Value) -> Result<Self> {
        let table = v.as_table().with_context(|| {
            format!("[random] {key}: a distribution, e.g. {{ uniform = [0.8, 0.99] }}, {{ log-uniform = [1e-4, 1e-1] }}, {{ int = [2, 8] }} or {{ choice = [64, 128] }}")
        })?;
        if table.len() != 1 {
            bail!("[random] {key}: exactly one of uniform, log-uniform, int, choice");
        }
        let (kind, arg) = table.iter().next().expect("one entry");
        let pair = |what: &str| -> Result<(f64, f64)> {
            let a = arg
                .as_array()
                .filter(|a| a.len() == 2)
                .with_context(|| format!("[random] {key}: {what} takes [low, high]"))?;
            let num = |x: &toml::Value| x.as_float().or(x.as_integer().map(|i| i as f64));
            match (num(&a[0]), num(&a[1])) {
                (Some(lo), Some(hi)) if lo.is_finite() && hi.is_finite() && lo < hi => Ok((lo, hi)),
                _ => bail!("[random] {key}: {what} takes [low, high] with low < high, got {arg}"),
            }
        };
        Ok(match kind.as_str() {
            "uniform" => {
                let (lo, hi) = pair("uniform")?;
                Distribution::Uniform(lo, hi)
            }
            "log-uniform" | "log_uniform" => {
                let (lo, hi) = pair("log-uniform")?;
                if lo <= 0.0 {
                    bail!("[random] {key}: log-uniform needs low > 0, got {lo}");
                }
                Distribution::LogUniform(lo, hi)
            }
            "int" => {
                let a = arg.as_array().filter(|a| a.len() == 2);
                match a.map(|a| (a[0].as_integer(), a[1].as_integer())) {
                    Some((Some(lo), Some(hi))) if lo <= hi => Distribution::Int(lo, hi),
                    _ => bail!("[random] {key}: int takes [low, high], whole numbers with low <= high, got {arg}"),
                }
            }
            "choice" => {
                let a = arg
                    .as_array()
                    .filter(|a| !a.is_empty())
                    .with_context(|| format!("[random] {key}: choice takes a non-empty list"))?;
                Distribution::Choice(a.iter().map(|v| to_json(key, v)).collect::<Result<_>>()?)
            }
            other => bail!("[random] {key}: unknown distribution '{other}' (uniform, log-uniform, int, choice)"),
        })
    }

    fn draw(&self, rng: &mut ChaCha8Rng) -> Value {
        match self {
            Distribution::Uniform(lo, hi) => float(round_sig(rng.gen_range(*lo..*hi))),
            Distribution::LogUniform(lo, hi) => float(round_sig(rng.gen_range(lo.ln()..hi.ln()).exp())),
            Distribution::Int(lo, hi) => Value::from(rng.gen_range(*lo..=*hi)),
            Distribution::Choice(values) => values[rng.gen_range(0..values.len())].clone(),
        }
    }
}

/// Four significant digits: draws a person can read and type (0.002347, not 0.0023471830).
fn round_sig(x: f64) -> f64 {
    if x == 0.0 || !x.is_finite() {
        return x;
    }
    let scale = 10f64.powi(3 - x.abs().log10().floor() as i32);
    (x * scale).round() / scale
}

fn float(x: f64) -> Value {
    serde_json::Number::from_f64(x).map_or(Value::Null, Value::Number)
}

/// An option name as `lenet train` spells it: `weight_decay` is `weight-decay`.
fn option_name(key: &str) -> String {
    key.replace('_', "-")
}

fn to_json(key: &str, v: &toml::Value) -> Result<Value> {
    Ok(match v {
        toml::Value::String(s) => Value::from(s.clone()),
        toml::Value::Integer(i) => Value::from(*i),
        toml::Value::Float(f) => float(*f),
        toml::Value::Boolean(b) => Value::from(*b),
        toml::Value::Array(a) if a.iter().all(|x| x.is_integer() || x.is_float()) => {
            // A list-valued option (class-weights): the whole list is one value.
            Value::Array(a.iter().map(|x| to_json(key, x)).collect::<Result<_>>()?)
        }
        other => bail!("{key}: {other} is not an option value (a string, number, boolean or list of numbers)"),
    })
}

/// How a value reads in a trial's name and on the command line.
pub fn show(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        Value::Array(a) => a.iter().map(show).collect::<Vec<_>>().join(","),
        // Rust's shortest form, never an exponent: 1e9 reads 1000000000, not 1000000000.0.
        Value::Number(n) if n.is_f64() => n.as_f64().map_or_else(|| n.to_string(), |f| f.to_string()),
        other => other.to_string(),
    }
}

impl SweepFile {
    /// Read a sweep file; its relative architecture paths start from its folder.
    pub fn load(path: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))?;
        let dir = path.parent().map(Path::to_path_buf).unwrap_or_default();
        Self::parse(&text, &dir).with_context(|| format!("{}: not a sweep file", path.display()))
    }

    pub fn parse(text: &str, dir: &Path) -> Result<Self> {
        let doc: toml::Table = toml::from_str(text)?;
        for key in doc.keys() {
            if !["base", "grid", "random"].contains(&key.as_str()) {
                bail!("unknown table [{key}]: a sweep file has [base], [grid] and [random]");
            }
        }
        let table = |name: &str| -> Result<toml::Table> {
            match doc.get(name) {
                None => Ok(toml::Table::new()),
                Some(toml::Value::Table(t)) => Ok(t.clone()),
                Some(_) => bail!("{name} must be a table, [{name}]"),
            }
        };
        let mut seen: Vec<String> = Vec::new();
        let mut claim = |section: &str, key: &str| -> Result<String> {
            let name = option_name(key);
            if RESERVED.contains(&name.as_str()) {
                bail!("[{section}] {key}: the sweep sets --{name} itself");
            }
            if seen.contains(&name) {
                bail!("[{section}] {key}: --{name} is set twice (in [base], [grid] or [random])");
            }
            seen.push(name.clone());
            Ok(name)
        };
        let mut base = Vec::new();
        for (key, v) in table("base")? {
            base.push((claim("base", &key)?, to_json(&key, &v)?));
        }
        let mut grid = Vec::new();
        for (key, v) in table("grid")? {
            let values = v
                .as_array()
                .filter(|a| !a.is_empty())
                .with_context(|| format!("[grid] {key}: a list of the values to try, e.g. {key} = [{v}]"))?;
            let values: Vec<Value> = values.iter().map(|x| to_json(&key, x)).collect::<Result<_>>()?;
            grid.push((claim("grid", &key)?, values));
        }
        let random = match doc.get("random") {
            None => None,
            Some(_) => {
                let mut t = table("random")?;
                let samples = match t.remove("samples") {
                    Some(toml::Value::Integer(n)) if n > 0 => n as usize,
                    Some(v) => bail!("[random] samples must be a positive whole number, got {v}"),
                    None => bail!("[random] needs samples = N, how many draws"),
                };
                let seed = match t.remove("seed") {
                    // `seed` in [random] is the draws' seed; the training seed is swept in [grid].
                    Some(toml::Value::Integer(s)) if s >= 0 => s as u64,
                    Some(v) => bail!("[random] seed (the draws' seed) must be a whole number >= 0, got {v}"),
                    None => 0,
                };
                let mut axes = Vec::new();
                for (key, v) in &t {
                    axes.push((claim("random", key)?, Distribution::parse(key, v)?));
                }
                Some(RandomSearch { samples, seed, axes })
            }
        };
        Ok(Self { base, grid, random, dir: dir.to_path_buf() })
    }

    /// The swept axes in file order: the grid's, then the random ones, the seed last.
    pub fn axes(&self) -> Vec<String> {
        // The seed last: a trial's name reads as its configuration, then its replicate.
        let random = self.random.iter().flat_map(|r| r.axes.iter().map(|(k, _)| k.clone()));
        let grid = self.grid.iter().map(|(k, _)| k.clone());
        let (seed, rest): (Vec<String>, Vec<String>) = grid.chain(random).partition(|k| k == SEED);
        rest.into_iter().chain(seed).collect()
    }

    /// The architecture files the trials name (`arch = "x.toml"` in [base] or [grid]),
    /// as written and as found from the sweep file's folder.
    pub fn arch_files(&self) -> Vec<(String, PathBuf)> {
        let base = self.base.iter().filter(|(k, _)| k == "arch").map(|(_, v)| v);
        let grid = self.grid.iter().filter(|(k, _)| k == "arch").flat_map(|(_, vs)| vs);
        let mut files: Vec<(String, PathBuf)> = Vec::new();
        for v in base.chain(grid) {
            if let Some(s) = v.as_str().filter(|s| is_arch_file(s)) {
                if !files.iter().any(|(f, _)| f == s) {
                    files.push((s.to_string(), self.dir.join(s)));
                }
            }
        }
        files
    }

    /// Every trial: each random draw (or none) crossed with every grid combination.
    pub fn trials(&self) -> Vec<Trial> {
        let draws: Vec<Vec<(String, Value)>> = match &self.random {
            None => vec![Vec::new()],
            Some(r) => {
                let mut rng = ChaCha8Rng::seed_from_u64(r.seed);
                (0..r.samples).map(|_| r.axes.iter().map(|(k, d)| (k.clone(), d.draw(&mut rng))).collect()).collect()
            }
        };
        let combos = self.grid.iter().fold(vec![Vec::new()], |acc, (key, values)| {
            acc.iter()
                .flat_map(|prefix: &Vec<(String, Value)>| {
                    values.iter().map(move |v| {
                        let mut c = prefix.clone();
                        c.push((key.clone(), v.clone()));
                        c
                    })
                })
                .collect()
        });
        let mut trials = Vec::new();
        for draw in &draws {
            for combo in &combos {
                let (seed, grid): (Vec<_>, Vec<_>) = combo.iter().partition(|(k, _)| k == SEED);
                let swept: Vec<(String, Value)> = grid.into_iter().chain(draw).chain(seed).cloned().collect();
                let name = swept.iter().map(|(k, v)| format!("{k}={}", show(v))).collect::<Vec<_>>().join(" ");
                let mut options = Map::new();
                for (k, v) in self.base.iter().chain(&swept) {
                    let v = match v.as_str() {
                        Some(s) if k == "arch" && is_arch_file(s) => Value::from(arch_copy(s)),
                        _ => v.clone(),
                    };
                    options.insert(k.clone(), v);
                }
                trials.push(Trial { index: trials.len(), name, swept: swept.into_iter().collect(), options });
            }
        }
        trials
    }
}

/// An `arch` value naming a TOML layer list rather than a preset.
fn is_arch_file(s: &str) -> bool {
    s.ends_with(".toml")
}

/// Where the sweep folder keeps its copy of an architecture file: `arch/<name>`, so
/// that a worker on another machine (another mount point) finds it.
pub fn arch_copy(file: &str) -> String {
    let name = Path::new(file).file_name().map_or_else(|| file.to_string(), |n| n.to_string_lossy().into_owned());
    format!("arch/{name}")
}

impl Trial {
    /// The trial's options as `lenet train` arguments, `--lr 0.001 --nesterov ...`;
    /// architecture copies resolved inside `sweep_dir`. `data-dir` is not a train
    /// option but the command's: it is left out (see [`Trial::data_dir`]).
    pub fn train_args(&self, sweep_dir: &Path) -> Vec<String> {
        let mut args = Vec::new();
        for (key, v) in &self.options {
            if key == "data-dir" {
                continue;
            }
            match v {
                Value::Bool(true) => args.push(format!("--{key}")),
                Value::Bool(false) | Value::Null => {}
                _ => {
                    args.push(format!("--{key}"));
                    let s = show(v);
                    args.push(if key == "arch" && s.starts_with("arch/") {
                        sweep_dir.join(&s).to_string_lossy().into_owned()
                    } else {
                        s
                    });
                }
            }
        }
        args
    }

    /// The `data-dir` the sweep file gives, if any.
    pub fn data_dir(&self) -> Option<PathBuf> {
        self.options.get("data-dir").and_then(Value::as_str).map(PathBuf::from)
    }

    /// The configuration this trial replicates: its swept values but the seed.
    pub fn config_key(&self) -> Vec<(String, String)> {
        self.swept.iter().filter(|(k, _)| k.as_str() != SEED).map(|(k, v)| (k.clone(), show(v))).collect()
    }

    /// The trial's training seed (`lenet train`'s default, 0, when not set).
    pub fn seed(&self) -> u64 {
        self.options.get(SEED).and_then(Value::as_u64).unwrap_or(0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> SweepFile {
        SweepFile::parse(text, Path::new("sweeps")).unwrap()
    }

    #[test]
    fn a_grid_is_every_combination_with_the_last_key_fastest() {
        let f = parse(
            "[base]\ndataset = \"mnist\"\nepochs = 2\n[grid]\narch = [\"relu\", \"d2l\"]\nlr = [0.001, 0.003]\nseed = [1, 2]\n",
        );
        let t = f.trials();
        assert_eq!(t.len(), 8);
        assert_eq!(t[0].name, "arch=relu lr=0.001 seed=1");
        assert_eq!(t[1].name, "arch=relu lr=0.001 seed=2");
        assert_eq!(t[2].name, "arch=relu lr=0.003 seed=1");
        assert_eq!(t[7].name, "arch=d2l lr=0.003 seed=2");
        assert_eq!(t[5].index, 5);
        assert_eq!(
            t[5].train_args(Path::new("/s")),
            // The options in name order (a JSON map).
            ["--arch", "d2l", "--dataset", "mnist", "--epochs", "2", "--lr", "0.001", "--seed", "2"]
        );
        assert_eq!(t[5].config_key(), [("arch".to_string(), "d2l".to_string()), ("lr".into(), "0.001".into())]);
        assert_eq!(f.axes(), ["arch", "lr", "seed"]);
    }

    #[test]
    fn random_draws_are_seeded_rounded_and_crossed_with_the_grid() {
        let text = "[grid]\nseed = [1, 2]\n[random]\nsamples = 3\nlr = { log-uniform = [1e-4, 1e-1] }\n\
                    batch = { choice = [64, 128] }\nepochs = { int = [2, 4] }\nmomentum = { uniform = [0.8, 0.99] }\n";
        let (a, b) = (parse(text).trials(), parse(text).trials());
        assert_eq!(a, b, "the same file gives the same trials");
        assert_eq!(a.len(), 6);
        // Each draw is run once per seed: the seeds replicate it.
        for pair in a.chunks(2) {
            assert_eq!(pair[0].config_key(), pair[1].config_key());
            assert_eq!((pair[0].seed(), pair[1].seed()), (1, 2));
        }
        for t in &a {
            let lr = t.swept["lr"].as_f64().unwrap();
            assert!((1e-4..1e-1).contains(&lr), "{lr}");
            assert_eq!(lr, round_sig(lr));
            assert!([64, 128].contains(&t.swept["batch"].as_i64().unwrap()));
            assert!((2..=4).contains(&t.swept["epochs"].as_i64().unwrap()));
            let m = t.swept["momentum"].as_f64().unwrap();
            assert!((0.8..0.99).contains(&m));
        }
        assert_ne!(a[0].swept["lr"], a[2].swept["lr"], "draws differ");
        let other = parse(&text.replace("samples = 3", "samples = 3\nseed = 7")).trials();
        assert_ne!(a[0].swept["lr"], other[0].swept["lr"], "the draws' seed changes them");
    }

    #[test]
    fn flags_lists_and_architecture_files_become_arguments() {
        let f =
            parse("[base]\nnesterov = true\nclass_weights = [1, 2.5]\n[grid]\narch = [\"nets/wide.toml\", \"relu\"]\n");
        assert_eq!(f.arch_files(), [("nets/wide.toml".to_string(), PathBuf::from("sweeps/nets/wide.toml"))]);
        let t = f.trials();
        assert_eq!(t[0].name, "arch=nets/wide.toml");
        assert_eq!(
            t[0].train_args(Path::new("/s")),
            ["--arch", "/s/arch/wide.toml", "--class-weights", "1,2.5", "--nesterov"]
        );
    }

    #[test]
    fn mistakes_are_named() {
        let err = |text: &str| format!("{:#}", SweepFile::parse(text, Path::new(".")).unwrap_err());
        assert!(err("[grid]\nlr = 0.1\n").contains("[grid] lr: a list"));
        assert!(err("[base]\nrun-dir = \"x\"\n").contains("sets --run-dir itself"));
        assert!(err("[base]\nlr = 1\n[grid]\nlr = [1, 2]\n").contains("--lr is set twice"));
        assert!(err("[random]\nlr = { uniform = [0, 1] }\n").contains("needs samples"));
        assert!(err("[random]\nsamples = 2\nlr = { log-uniform = [0, 1] }\n").contains("low > 0"));
        assert!(err("[random]\nsamples = 2\nlr = { normal = [0, 1] }\n").contains("unknown distribution"));
        assert!(err("[grids]\n").contains("unknown table [grids]"));
    }
}
