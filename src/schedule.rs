//! Learning-rate schedules, stepped once per epoch, matching PyTorch's `StepLR` and
//! `CosineAnnealingLR` when `scheduler.step()` is called at the end of every epoch.
//!
//! Learning rates are `f64`, like Python floats: PyTorch computes the schedule in Python
//! and rounds to `f32` only inside the optimizer's kernels (see [`crate::optim`]).
//!
//! Command-line syntax ([`LrSchedule::from_str`]):
//!
//! ```text
//! constant                  the base learning rate throughout (the default)
//! step:STEP_SIZE[:GAMMA]    multiply by GAMMA (default 0.1) every STEP_SIZE epochs: step:5:0.5
//! cosine[:T_MAX[:ETA_MIN]]  cosine from the base rate down to ETA_MIN (default 0) over
//!                           T_MAX epochs; T_MAX left out or 0 means the whole run:
//!                           cosine, cosine:10, cosine:10:1e-4
//! lenet5                    LeNet-5's passes (appendix C of the paper): the base rate
//!                           (0.0005 there) for 2 passes, 0.4× for 3, 0.2× for 3, 0.1×
//!                           for 4, then 0.02×
//! ```

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// A learning-rate schedule over epochs (0-based: epoch 0 runs at the base rate).
///
/// Serialised with a `type` tag: `{"type": "constant"}`,
/// `{"type": "step", "step_size": 5, "gamma": 0.5}`,
/// `{"type": "cosine", "t_max": 10, "eta_min": 0.0}`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "kebab-case", deny_unknown_fields)]
pub enum LrSchedule {
    /// The base learning rate in every epoch.
    #[default]
    Constant,
    /// `torch.optim.lr_scheduler.StepLR(opt, step_size, gamma)`: the rate is multiplied by
    /// `gamma` at the start of epochs `step_size`, `2*step_size`, ...:
    /// `base * gamma^(epoch / step_size)`.
    Step {
        /// Epochs between decays (> 0).
        step_size: usize,
        /// Factor the rate is multiplied by at each decay (`step:STEP_SIZE:GAMMA`), >= 0;
        /// default 0.1.
        #[serde(default = "default_gamma")]
        gamma: f64,
    },
    /// `torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max, eta_min)`:
    /// `eta_min + (base - eta_min) * (1 + cos(pi * epoch / t_max)) / 2`. Past `t_max` the
    /// rate rises again (the cosine continues, as in PyTorch; it is not clamped).
    ///
    /// `t_max == 0` stands for "the number of epochs of the run": call
    /// [`LrSchedule::resolved`] with that number before [`LrSchedule::lr_at`].
    Cosine {
        /// Epochs from the base rate down to `eta_min` (`cosine:T_MAX`); 0: the whole run.
        #[serde(default)]
        t_max: usize,
        /// The lowest learning rate, reached at epoch `t_max` (`cosine:T_MAX:ETA_MIN`), >= 0;
        /// default 0.
        #[serde(default)]
        eta_min: f64,
    },
    /// LeCun et al. 1998, appendix C: η = 0.0005 for the first 2 passes, 0.0002 for the
    /// next 3, 0.0001 for the next 3, 0.00005 for the next 4, then 0.00001; as
    /// multiples of the base rate, so that the paper's base of 0.0005 gives exactly those.
    Lenet5,
}

/// (first epoch, multiple of the base rate) of [`LrSchedule::Lenet5`].
const LENET5_STEPS: [(usize, f64); 5] = [(0, 1.0), (2, 0.4), (5, 0.2), (8, 0.1), (12, 0.02)];

fn default_gamma() -> f64 {
    0.1
}

impl LrSchedule {
    /// The schedule with a cosine `t_max` of 0 ("the whole run") replaced by `epochs`.
    /// Other schedules are returned unchanged.
    pub fn resolved(self, epochs: usize) -> Self {
        match self {
            LrSchedule::Cosine { t_max: 0, eta_min } => LrSchedule::Cosine { t_max: epochs.max(1), eta_min },
            other => other,
        }
    }

    /// Checks what PyTorch would divide by or what would make no sense.
    pub fn validate(&self) -> Result<(), ScheduleError> {
        match *self {
            LrSchedule::Constant | LrSchedule::Lenet5 => Ok(()),
            LrSchedule::Step { step_size, gamma } => {
                if step_size == 0 {
                    return Err(ScheduleError("step: step_size must be at least 1 epoch".into()));
                }
                if !(gamma.is_finite() && gamma >= 0.0) {
                    return Err(ScheduleError(format!("step: gamma must be finite and >= 0, got {gamma}")));
                }
                Ok(())
            }
            LrSchedule::Cosine { eta_min, .. } => {
                if !(eta_min.is_finite() && eta_min >= 0.0) {
                    return Err(ScheduleError(format!("cosine: eta_min must be finite and >= 0, got {eta_min}")));
                }
                Ok(())
            }
        }
    }

    /// The learning rate of `epoch` (0-based) for a run whose base rate is `base_lr`: the
    /// value PyTorch's scheduler holds after `epoch` calls of `scheduler.step()`.
    ///
    /// Computed the way PyTorch computes it, in `f64`: StepLR multiplies by `gamma` once per
    /// completed period; CosineAnnealingLR uses its recursive ("chainable") form, each
    /// epoch's rate derived from the previous one, which is what `scheduler.step()` runs
    /// (equal to the closed form up to rounding).
    ///
    /// Panics on a cosine schedule with `t_max == 0` (not yet [`LrSchedule::resolved`]) or a
    /// step schedule with `step_size == 0`.
    pub fn lr_at(&self, base_lr: f64, epoch: usize) -> f64 {
        match *self {
            LrSchedule::Constant => base_lr,
            LrSchedule::Lenet5 => {
                let factor = LENET5_STEPS.iter().rev().find(|(from, _)| epoch >= *from).map_or(1.0, |s| s.1);
                base_lr * factor
            }
            LrSchedule::Step { step_size, gamma } => {
                assert!(step_size > 0, "step schedule with step_size 0");
                let mut lr = base_lr;
                for _ in 0..epoch / step_size {
                    lr *= gamma;
                }
                lr
            }
            LrSchedule::Cosine { t_max, eta_min } => {
                assert!(t_max > 0, "cosine schedule with t_max 0: call LrSchedule::resolved(epochs) first");
                let pi = std::f64::consts::PI;
                let t = t_max as f64;
                let mut lr = base_lr;
                for e in 1..=epoch {
                    // (e - 1 - T) % (2T) == 0 in Python's modulo (always >= 0).
                    lr = if (e as i64 - 1 - t_max as i64).rem_euclid(2 * t_max as i64) == 0 {
                        lr + (base_lr - eta_min) * (1.0 - (pi / t).cos()) / 2.0
                    } else {
                        (1.0 + (pi * e as f64 / t).cos()) / (1.0 + (pi * (e - 1) as f64 / t).cos()) * (lr - eta_min)
                            + eta_min
                    };
                }
                lr
            }
        }
    }
}

/// A schedule string or setting that does not make sense.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("invalid learning-rate schedule: {0}")]
pub struct ScheduleError(pub String);

/// Parses the syntax in the [module documentation](self): `constant`, `step:5`,
/// `step:5:0.5`, `cosine`, `cosine:10`, `cosine:10:1e-4`. The result is validated.
impl FromStr for LrSchedule {
    type Err = ScheduleError;

    fn from_str(s: &str) -> Result<Self, ScheduleError> {
        let parts: Vec<&str> = s.trim().split(':').map(str::trim).collect();
        let usage = "expected constant, step:STEP_SIZE[:GAMMA], cosine[:T_MAX[:ETA_MIN]] or lenet5";
        let bad = |what: &str, v: &str| ScheduleError(format!("{s:?}: {what} {v:?} is not a number ({usage})"));
        let sched = match (parts[0].to_ascii_lowercase().as_str(), &parts[1..]) {
            ("constant", []) => LrSchedule::Constant,
            ("lenet5", []) => LrSchedule::Lenet5,
            ("step", [size, rest @ ..]) if rest.len() <= 1 => {
                let step_size = size.parse().map_err(|_| bad("step size", size))?;
                let gamma = match rest {
                    [g] => g.parse().map_err(|_| bad("gamma", g))?,
                    _ => default_gamma(),
                };
                LrSchedule::Step { step_size, gamma }
            }
            ("cosine", rest) if rest.len() <= 2 => {
                let t_max = match rest.first() {
                    Some(t) if !t.is_empty() => t.parse().map_err(|_| bad("t_max", t))?,
                    _ => 0,
                };
                let eta_min = match rest.get(1) {
                    Some(e) => e.parse().map_err(|_| bad("eta_min", e))?,
                    None => 0.0,
                };
                LrSchedule::Cosine { t_max, eta_min }
            }
            _ => return Err(ScheduleError(format!("{s:?}: {usage}"))),
        };
        sched.validate()?;
        Ok(sched)
    }
}

/// Writes the [`FromStr`] syntax, so that it parses back to the same schedule.
impl fmt::Display for LrSchedule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            LrSchedule::Constant => write!(f, "constant"),
            LrSchedule::Lenet5 => write!(f, "lenet5"),
            LrSchedule::Step { step_size, gamma } => write!(f, "step:{step_size}:{gamma}"),
            LrSchedule::Cosine { t_max, eta_min } => write!(f, "cosine:{t_max}:{eta_min}"),
        }
    }
}
