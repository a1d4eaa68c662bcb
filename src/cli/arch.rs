//! The architecture flags shared by `summary`, `train` and `eval`.

use std::path::Path;

use anyhow::{bail, Context, Result};
use clap::Args;

use lenet::spec::{Activation, Fit, LenetOptions, Normalize, Pooling, Spec};

#[derive(Args, Debug, Clone, Default)]
pub struct ArchArgs {
    /// A preset (d2l, relu, lenet5) or a TOML file with a whole layer list.
    #[arg(long, value_name = "PRESET|FILE")]
    pub arch: Option<String>,
    /// Activation everywhere: sigmoid, tanh, relu, leaky-relu[:slope].
    #[arg(long)]
    pub activation: Option<Activation>,
    /// Pooling: avg or max.
    #[arg(long)]
    pub pool: Option<Pooling>,
    /// Input side: 28, or 32 (the data is padded or resized; the first conv then has no padding).
    #[arg(long, value_name = "28|32")]
    pub input: Option<usize>,
    /// How 28×28 images reach a 32×32 input: pad or resize.
    #[arg(long, value_name = "pad|resize")]
    pub fit: Option<String>,
    /// No padding on the first convolution (28×28 input gives 16·4·4 = 256 FC inputs).
    #[arg(long)]
    pub no_pad: bool,
    /// Pixel scaling: unit ([0, 1], default), mnist (0.1307, 0.3081), fashion-mnist, or MEAN,STD.
    #[arg(long)]
    pub normalize: Option<Normalize>,
}

impl ArchArgs {
    pub fn is_set(&self) -> bool {
        self.arch.is_some() || self.has_overrides()
    }

    fn has_overrides(&self) -> bool {
        self.activation.is_some() || self.pool.is_some() || self.input.is_some() || self.fit.is_some() || self.no_pad
    }

    /// Build the architecture these flags describe (default: `default_preset`).
    pub fn spec(&self, default_preset: &str) -> Result<Spec> {
        let arch = self.arch.as_deref().unwrap_or(default_preset);
        let mut spec = match arch {
            "d2l" | "relu" => {
                let mut o = if arch == "d2l" { LenetOptions::d2l() } else { LenetOptions::relu() };
                let mut name = arch.to_string();
                if let Some(a) = self.activation {
                    o.activation = a;
                    name += &format!("-{}", format!("{a:?}").to_lowercase());
                }
                if let Some(p) = self.pool {
                    o.pooling = p;
                    name += &format!("-{}pool", format!("{p:?}").to_lowercase());
                }
                if let Some(n) = self.input {
                    if n != 28 && n != 32 {
                        bail!("--input must be 28 or 32, got {n}");
                    }
                    o.input_size = n;
                    name += &format!("-{n}");
                }
                if let Some(f) = &self.fit {
                    o.fit = match f.as_str() {
                        "pad" => Fit::Pad,
                        "resize" => Fit::Resize,
                        _ => bail!("--fit must be pad or resize, got {f}"),
                    };
                    name += &format!("-{f}");
                }
                if self.no_pad {
                    o.pad_first_conv = false;
                    name += "-nopad";
                }
                Spec::lenet(&name, &o)
            }
            "lenet5" => {
                if self.has_overrides() {
                    bail!(
                        "--activation, --pool, --input, --fit and --no-pad apply to d2l and relu; lenet5 is the \
                         paper's network (write a TOML architecture to vary it: `lenet summary --arch lenet5 --toml`)"
                    );
                }
                Spec::lenet5()
            }
            file => {
                let path = Path::new(file);
                if !path.is_file() {
                    bail!("--arch {file}: not a preset ({}) and no such file", Spec::PRESETS.join(", "));
                }
                if self.has_overrides() {
                    bail!("--activation, --pool, --input, --fit and --no-pad apply to presets; edit {file} instead");
                }
                let text = std::fs::read_to_string(path).with_context(|| format!("cannot read {file}"))?;
                Spec::from_toml(&text).map_err(|e| anyhow::anyhow!("{file}: {e}"))?
            }
        };
        if let Some(n) = self.normalize {
            spec.input.normalize = n;
        }
        spec.resolve()?;
        Ok(spec)
    }
}
