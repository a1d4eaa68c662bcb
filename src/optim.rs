//! Optimizers over the flat parameter buffer: SGD (momentum, Nesterov, L2 weight decay),
//! Adam (L2 weight decay) and AdamW (decoupled weight decay), plus gradient-norm clipping.
//!
//! All parameters of a network live in one flat `f32` buffer and their gradients in
//! another of the same length (see [`crate::init::ParamInfo`]); the optimizer keeps its
//! state (momentum buffer, first and second moments) as flat buffers of that length too.
//!
//! The updates follow PyTorch's `torch.optim.SGD`, `Adam` and `AdamW` (the single-tensor
//! code path PyTorch uses for CPU tensors) operation by operation:
//!
//! - scalars that PyTorch computes in Python (`1 - beta2`, `lr / bias_correction1`,
//!   `1 - lr * weight_decay`, `beta1 ** step`) are computed here in `f64` and rounded to
//!   `f32` where PyTorch hands them to a kernel, so hyperparameters and the learning rate
//!   are `f64`, like Python floats;
//! - each tensor operation is one `f32` operation here, in the same order.
//!
//! What cannot be matched bit for bit: PyTorch's vectorised CPU kernels fuse some
//! multiply-adds (`add(x, alpha=a)` is `fmadd(x, a, self)`, `lerp` likewise), which rounds
//! once where this code rounds twice. Expect agreement to about one ulp per step, not
//! identical bits, when comparing against PyTorch.
//!
//! Nothing here is parallel: an update touches each parameter once, which is cheap next to
//! a forward and backward pass, and the loops are kept plain so the compiler vectorises
//! them.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// Which optimizer to run, with its hyperparameters (the learning rate is passed to each
/// [`Optimizer::step`], as it comes from the schedule).
///
/// Serialised with a `type` tag: `{"type": "sgd", "momentum": 0.9, "nesterov": false,
/// "weight_decay": 0.0}`, `{"type": "adam", ...}`, `{"type": "adamw", ...}`. Missing
/// fields take PyTorch's defaults. On the command line see [`OptimizerKind::from_str`].
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "kebab-case", deny_unknown_fields)]
pub enum OptimizerKind {
    /// `torch.optim.SGD(params, lr, momentum, dampening=0, weight_decay, nesterov)`.
    Sgd {
        /// Momentum factor (`--momentum`, or `sgd:momentum=M`), >= 0; 0, the default, is none.
        #[serde(default)]
        momentum: f64,
        /// Nesterov momentum (`--nesterov`, or `sgd:nesterov`); needs `momentum > 0`.
        #[serde(default)]
        nesterov: bool,
        /// L2 penalty: `weight_decay * p` is added to the gradient.
        #[serde(default)]
        weight_decay: f64,
    },
    /// `torch.optim.Adam(params, lr, betas=(beta1, beta2), eps, weight_decay)`.
    Adam {
        /// Decay rate of the first moment, the gradients' running mean (`adam:beta1=B`), in
        /// [0, 1); default 0.9.
        #[serde(default = "default_beta1")]
        beta1: f64,
        /// Decay rate of the second moment, the squared gradients' running mean
        /// (`adam:beta2=B`), in [0, 1); default 0.999.
        #[serde(default = "default_beta2")]
        beta2: f64,
        /// Added to the denominator `sqrt(v) / sqrt(1 - beta2^t)` (`adam:eps=E`), >= 0;
        /// default 1e-8.
        #[serde(default = "default_eps")]
        eps: f64,
        /// L2 penalty: `weight_decay * p` is added to the gradient before the moments.
        #[serde(default)]
        weight_decay: f64,
    },
    /// `torch.optim.AdamW(params, lr, betas=(beta1, beta2), eps, weight_decay)`.
    #[serde(rename = "adamw")]
    AdamW {
        /// Decay rate of the first moment, the gradients' running mean (`adamw:beta1=B`), in
        /// [0, 1); default 0.9.
        #[serde(default = "default_beta1")]
        beta1: f64,
        /// Decay rate of the second moment, the squared gradients' running mean
        /// (`adamw:beta2=B`), in [0, 1); default 0.999.
        #[serde(default = "default_beta2")]
        beta2: f64,
        /// Added to the denominator `sqrt(v) / sqrt(1 - beta2^t)` (`adamw:eps=E`), >= 0;
        /// default 1e-8.
        #[serde(default = "default_eps")]
        eps: f64,
        /// Decoupled decay: `p *= 1 - lr * weight_decay` before the Adam update.
        #[serde(default = "default_adamw_weight_decay")]
        weight_decay: f64,
    },
    /// Stochastic diagonal Levenberg–Marquardt (LeCun et al. 1998, appendix C): each
    /// parameter steps by `lr / (mu + h)` times its gradient, `h` being the Gauss–Newton
    /// estimate of the Hessian's diagonal entry, averaged over `samples` training
    /// patterns before each pass ([`crate::curvature`]).
    Sdlm {
        /// μ, added to every curvature estimate so that a flat parameter's step stays bounded
        /// (`sdlm:mu=M`), > 0; default 1.
        #[serde(default = "default_mu")]
        mu: f64,
        /// Training patterns the Hessian's diagonal is estimated on before each pass
        /// (`sdlm:samples=N`), in 1..=1048576; default 500.
        #[serde(default = "default_samples")]
        samples: usize,
    },
}

/// The paper's μ is 0.02. With its η of 0.0005 that lets a weight of little
/// curvature step by 0.025 × its gradient, and lenet5 diverged here within 500
/// patterns (the loss climbing to ~200, every unit saturated; as plain SGD at 0.025
/// does). With the paper's η schedule kept, μ was measured on MNIST (4 passes, test
/// accuracy after each): 0.2: 0.788 0.971 0.977 0.979; 0.5: 0.970 0.979 0.984 0.985;
/// 1: 0.978 0.985 0.988 0.989; 2: 0.977 0.985 0.988 0.989. The diagonal misses how
/// much the many weights into one unit move that unit together, and μ is what holds
/// their steps back; 1 it is.
fn default_mu() -> f64 {
    1.0
}

fn default_samples() -> usize {
    500
}

fn default_beta1() -> f64 {
    0.9
}
fn default_beta2() -> f64 {
    0.999
}
fn default_eps() -> f64 {
    1e-8
}
fn default_adamw_weight_decay() -> f64 {
    1e-2
}

impl OptimizerKind {
    /// Plain SGD, PyTorch's defaults (no momentum, no weight decay). d2l's choice.
    pub fn sgd() -> Self {
        OptimizerKind::Sgd { momentum: 0.0, nesterov: false, weight_decay: 0.0 }
    }

    /// Adam with PyTorch's defaults: betas (0.9, 0.999), eps 1e-8, no weight decay.
    pub fn adam() -> Self {
        OptimizerKind::Adam { beta1: 0.9, beta2: 0.999, eps: 1e-8, weight_decay: 0.0 }
    }

    /// AdamW with PyTorch's defaults: betas (0.9, 0.999), eps 1e-8, weight decay 0.01.
    pub fn adamw() -> Self {
        OptimizerKind::AdamW { beta1: 0.9, beta2: 0.999, eps: 1e-8, weight_decay: 1e-2 }
    }

    /// SDLM with the Hessian re-estimated on 500 patterns as in the paper, and μ = 1
    /// (the paper's 0.02 diverges here: see `default_mu`).
    pub fn sdlm() -> Self {
        OptimizerKind::Sdlm { mu: default_mu(), samples: default_samples() }
    }

    /// `"sgd"`, `"adam"`, `"adamw"` or `"sdlm"`.
    pub fn name(&self) -> &'static str {
        match self {
            OptimizerKind::Sgd { .. } => "sgd",
            OptimizerKind::Adam { .. } => "adam",
            OptimizerKind::AdamW { .. } => "adamw",
            OptimizerKind::Sdlm { .. } => "sdlm",
        }
    }

    /// The patterns the Hessian's diagonal is estimated on before each pass (SDLM), or
    /// None for optimizers that need no estimate.
    pub fn curvature_samples(&self) -> Option<usize> {
        match *self {
            OptimizerKind::Sdlm { samples, .. } => Some(samples),
            _ => None,
        }
    }

    /// The same checks PyTorch's constructors make, plus finiteness.
    pub fn validate(&self) -> Result<(), OptimError> {
        let bad = |msg: String| Err(OptimError::InvalidConfig(msg));
        let check_nonneg = |what: &str, v: f64| {
            if v.is_finite() && v >= 0.0 {
                Ok(())
            } else {
                Err(OptimError::InvalidConfig(format!("{}: {what} must be finite and >= 0, got {v}", self.name())))
            }
        };
        match *self {
            OptimizerKind::Sgd { momentum, nesterov, weight_decay } => {
                check_nonneg("momentum", momentum)?;
                check_nonneg("weight_decay", weight_decay)?;
                if nesterov && momentum <= 0.0 {
                    return bad("sgd: nesterov momentum needs momentum > 0".into());
                }
            }
            OptimizerKind::Adam { beta1, beta2, eps, weight_decay }
            | OptimizerKind::AdamW { beta1, beta2, eps, weight_decay } => {
                for (what, b) in [("beta1", beta1), ("beta2", beta2)] {
                    if !(0.0..1.0).contains(&b) {
                        return bad(format!("{}: {what} must be in [0, 1), got {b}", self.name()));
                    }
                }
                check_nonneg("eps", eps)?;
                check_nonneg("weight_decay", weight_decay)?;
            }
            OptimizerKind::Sdlm { mu, samples } => {
                if !(mu.is_finite() && mu > 0.0) {
                    return bad(format!("sdlm: mu must be finite and > 0, got {mu}"));
                }
                if !(1..=1 << 20).contains(&samples) {
                    return bad(format!("sdlm: samples must be in 1..=1048576, got {samples}"));
                }
            }
        }
        Ok(())
    }
}

impl Default for OptimizerKind {
    fn default() -> Self {
        OptimizerKind::sgd()
    }
}

/// Command-line syntax: a name, optionally followed by `:` and comma-separated settings.
///
/// ```text
/// sgd                              plain SGD
/// sgd:momentum=0.9,nesterov,wd=5e-4
/// adam                             betas 0.9, 0.999, eps 1e-8, wd 0
/// adam:beta1=0.8,beta2=0.99,eps=1e-6,wd=1e-4
/// adamw                            as adam, but decoupled wd, default 0.01
/// adamw:wd=0.05
/// ```
///
/// `wd` and `weight_decay` are the same setting; `nesterov` alone means `nesterov=true`.
/// Settings left out take PyTorch's defaults. The result is validated.
impl FromStr for OptimizerKind {
    type Err = OptimError;

    fn from_str(s: &str) -> Result<Self, OptimError> {
        let s = s.trim();
        let (name, settings) = match s.split_once(':') {
            Some((n, rest)) => (n.trim(), rest.trim()),
            None => (s, ""),
        };
        let mut kind = match name.to_ascii_lowercase().as_str() {
            "sgd" => OptimizerKind::sgd(),
            "adam" => OptimizerKind::adam(),
            "adamw" => OptimizerKind::adamw(),
            "sdlm" => OptimizerKind::sdlm(),
            _ => {
                return Err(OptimError::InvalidConfig(format!(
                    "unknown optimizer {name:?}: expected sgd, adam, adamw or sdlm (e.g. sgd:momentum=0.9)"
                )))
            }
        };
        for item in settings.split(',').map(str::trim).filter(|i| !i.is_empty()) {
            let (key, value) = match item.split_once('=') {
                Some((k, v)) => (k.trim(), Some(v.trim())),
                None => (item, None),
            };
            let num = || -> Result<f64, OptimError> {
                let v = value.ok_or_else(|| OptimError::InvalidConfig(format!("{name}: {key} needs a value")))?;
                v.parse::<f64>().map_err(|_| OptimError::InvalidConfig(format!("{name}: {key}={v} is not a number")))
            };
            match (&mut kind, key) {
                (OptimizerKind::Sgd { momentum, .. }, "momentum") => *momentum = num()?,
                (OptimizerKind::Sgd { nesterov, .. }, "nesterov") => {
                    *nesterov = match value {
                        None | Some("true") | Some("1") => true,
                        Some("false") | Some("0") => false,
                        Some(v) => {
                            return Err(OptimError::InvalidConfig(format!("sgd: nesterov={v}: expected true or false")))
                        }
                    }
                }
                (OptimizerKind::Sgd { weight_decay, .. }, "wd" | "weight_decay")
                | (OptimizerKind::Adam { weight_decay, .. }, "wd" | "weight_decay")
                | (OptimizerKind::AdamW { weight_decay, .. }, "wd" | "weight_decay") => *weight_decay = num()?,
                (OptimizerKind::Adam { beta1, .. } | OptimizerKind::AdamW { beta1, .. }, "beta1") => *beta1 = num()?,
                (OptimizerKind::Adam { beta2, .. } | OptimizerKind::AdamW { beta2, .. }, "beta2") => *beta2 = num()?,
                (OptimizerKind::Adam { eps, .. } | OptimizerKind::AdamW { eps, .. }, "eps") => *eps = num()?,
                (OptimizerKind::Sdlm { mu, .. }, "mu") => *mu = num()?,
                (OptimizerKind::Sdlm { samples, .. }, "samples") => {
                    let v = num()?;
                    if v.fract() != 0.0 || v < 0.0 {
                        return Err(OptimError::InvalidConfig(format!("sdlm: samples={v} is not a whole number")));
                    }
                    *samples = v as usize;
                }
                _ => {
                    let known = match kind {
                        OptimizerKind::Sgd { .. } => "momentum, nesterov, wd",
                        OptimizerKind::Sdlm { .. } => "mu, samples",
                        _ => "beta1, beta2, eps, wd",
                    };
                    return Err(OptimError::InvalidConfig(format!(
                        "{name}: unknown setting {key:?} (settings of {name}: {known})"
                    )));
                }
            }
        }
        kind.validate()?;
        Ok(kind)
    }
}

/// Writes the [`FromStr`] syntax, every setting spelled out, so it parses back.
impl fmt::Display for OptimizerKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            OptimizerKind::Sgd { momentum, nesterov, weight_decay } => {
                write!(f, "sgd:momentum={momentum},nesterov={nesterov},wd={weight_decay}")
            }
            OptimizerKind::Adam { beta1, beta2, eps, weight_decay }
            | OptimizerKind::AdamW { beta1, beta2, eps, weight_decay } => {
                write!(f, "{}:beta1={beta1},beta2={beta2},eps={eps},wd={weight_decay}", self.name())
            }
            OptimizerKind::Sdlm { mu, samples } => write!(f, "sdlm:mu={mu},samples={samples}"),
        }
    }
}

/// An optimizer setting that PyTorch would refuse, or optimizer state that does not fit.
#[derive(Debug, thiserror::Error)]
pub enum OptimError {
    /// A hyperparameter out of range, or an optimizer string that does not parse.
    #[error("invalid optimizer setting: {0}")]
    InvalidConfig(String),
    /// Saved state that does not fit this optimizer: a tensor missing, extra, repeated or
    /// of the wrong shape.
    #[error("cannot load optimizer state: {0}")]
    State(String),
}

/// Name of the step-count tensor in [`Optimizer::state_tensors`].
pub const STEP_NAME: &str = "optim.step";
/// Name of SGD's momentum buffer (PyTorch: `state[p]["momentum_buffer"]`).
pub const MOMENTUM_BUFFER_NAME: &str = "optim.momentum_buffer";
/// Name of Adam's first moment (PyTorch: `state[p]["exp_avg"]`).
pub const EXP_AVG_NAME: &str = "optim.exp_avg";
/// Name of Adam's second moment (PyTorch: `state[p]["exp_avg_sq"]`).
pub const EXP_AVG_SQ_NAME: &str = "optim.exp_avg_sq";
/// Name of SDLM's estimate of the Hessian's diagonal.
pub const HESSIAN_DIAG_NAME: &str = "optim.hessian_diag";

/// A named state tensor: name, shape, values (row-major).
pub type StateTensor = (String, Vec<usize>, Vec<f32>);

/// An optimizer with its state, for a flat parameter buffer of fixed length.
#[derive(Clone, Debug)]
pub struct Optimizer {
    kind: OptimizerKind,
    len: usize,
    /// Number of steps taken (PyTorch's `state["step"]`).
    step: u64,
    /// SGD: the momentum buffer (empty when momentum is 0; meaningful after the first
    /// step, as PyTorch creates it then). Adam/AdamW: `exp_avg`. SDLM: the estimate
    /// of the Hessian's diagonal.
    buf1: Vec<f32>,
    /// Adam/AdamW: `exp_avg_sq`; empty for SGD and SDLM.
    buf2: Vec<f32>,
    /// The id of the GPU engine whose device holds the current values of `buf1` and
    /// `buf2`, which are then stale here: a GPU keeps the state where the updates run and
    /// hands it back only for a checkpoint ([`crate::engine::Engine::optimizer_state`]).
    pub(crate) held_by: Option<u64>,
}

/// One update as a device kernel takes it (src/engine/gpu/shaders/optim.wgsl): the entry
/// point, its switches and its scalars, computed as [`Optimizer::step`] computes them.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct DeviceUpdate {
    /// The kernel's entry point: `"sgd"`, `"adam"` (Adam and AdamW) or `"sdlm"`.
    pub entry: &'static str,
    /// Switches as bits. SGD: 0 weight decay, 1 momentum, 2 Nesterov, 3 first step. Adam:
    /// 0 small-weight `lerp`, 1 L2 penalty, 2 decoupled decay. SDLM: none.
    pub flags: u32,
    /// The step's scalars, unused slots 0. SGD: -lr, momentum, wd. SDLM: lr, mu. Adam:
    /// 1 - beta1, beta2, 1 - beta2, sqrt(1 - beta2^t), eps, -lr / (1 - beta1^t), L2 wd, decay.
    pub scalars: [f32; 8],
}

impl Optimizer {
    /// A fresh optimizer (step 0, zero state) for `len` parameters.
    pub fn new(kind: OptimizerKind, len: usize) -> Result<Self, OptimError> {
        kind.validate()?;
        let (n1, n2) = match kind {
            OptimizerKind::Sgd { momentum, .. } => (if momentum != 0.0 { len } else { 0 }, 0),
            OptimizerKind::Adam { .. } | OptimizerKind::AdamW { .. } => (len, len),
            OptimizerKind::Sdlm { .. } => (len, 0),
        };
        Ok(Self { kind, len, step: 0, buf1: vec![0.0; n1], buf2: vec![0.0; n2], held_by: None })
    }

    /// The optimizer and hyperparameters this state belongs to.
    pub fn kind(&self) -> &OptimizerKind {
        &self.kind
    }

    /// The number of parameters this optimizer updates.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether it updates no parameters ([`Optimizer::len`] is 0).
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Steps taken so far (restored by [`Optimizer::load_state`]).
    pub fn step_count(&self) -> u64 {
        self.step
    }

    /// SDLM: the estimate of the Hessian's diagonal the next steps use.
    ///
    /// Panics for another optimizer, or `h` of another length (programming errors).
    pub fn set_curvature(&mut self, h: &[f32]) {
        assert!(matches!(self.kind, OptimizerKind::Sdlm { .. }), "{} takes no curvature", self.kind.name());
        assert_eq!(h.len(), self.len, "curvature of {} values for {} parameters", h.len(), self.len);
        self.buf1.copy_from_slice(h);
        self.held_by = None;
    }

    /// One update of `params` from `grads` at learning rate `lr`.
    ///
    /// Panics if `params` or `grads` are not [`Optimizer::len`] long, or `lr` is negative or
    /// not finite (programming errors, not data errors).
    pub fn step(&mut self, params: &mut [f32], grads: &[f32], lr: f64) {
        assert_eq!(params.len(), self.len, "optimizer built for {} parameters, got {}", self.len, params.len());
        assert_eq!(grads.len(), self.len, "optimizer built for {} gradients, got {}", self.len, grads.len());
        let first = self.count_step(lr);
        match self.kind {
            OptimizerKind::Sgd { momentum, nesterov, weight_decay } => {
                sgd(params, grads, &mut self.buf1, lr, momentum, nesterov, weight_decay, first)
            }
            OptimizerKind::Adam { beta1, beta2, eps, .. } | OptimizerKind::AdamW { beta1, beta2, eps, .. } => {
                let h = AdamScalars::new(lr, beta1, beta2, eps, self.step);
                let (l2, decay) = self.adam_weight_decay(lr);
                adam(params, grads, &mut self.buf1, &mut self.buf2, &h, l2, decay)
            }
            OptimizerKind::Sdlm { mu, .. } => sdlm(params, grads, &self.buf1, lr as f32, mu as f32),
        }
    }

    /// Count a step at `lr` (which must be finite and >= 0); whether it is the first.
    fn count_step(&mut self, lr: f64) -> bool {
        assert!(lr.is_finite() && lr >= 0.0, "learning rate must be finite and >= 0, got {lr}");
        self.step += 1;
        self.step == 1
    }

    /// Adam's and AdamW's weight decay at `lr`, as the update takes it: (the L2 penalty
    /// added to the gradient, the factor the parameters are multiplied by first). Adam:
    /// (wd, 1); AdamW: (0, 1 − lr·wd), PyTorch's `param.mul_(1 - lr * weight_decay)` with
    /// the factor computed in Python.
    fn adam_weight_decay(&self, lr: f64) -> (f32, f32) {
        match self.kind {
            OptimizerKind::Adam { weight_decay, .. } => (weight_decay as f32, 1.0),
            OptimizerKind::AdamW { weight_decay, .. } if weight_decay != 0.0 => (0.0, (1.0 - lr * weight_decay) as f32),
            _ => (0.0, 1.0),
        }
    }

    /// The state a checkpoint needs to continue bit-identically: `optim.step` (shape `[]`,
    /// the step count as `f32`, as PyTorch stores it; exact up to 2^24 steps), and after
    /// the first step the buffers of this kind, each of shape `[len]`:
    /// `optim.momentum_buffer` (SGD with momentum), or `optim.exp_avg` and
    /// `optim.exp_avg_sq` (Adam, AdamW). Before the first step there are no buffers, as in
    /// PyTorch, where the state is created by the first step.
    ///
    /// Panics when the state lives on an engine's device: read it there, with
    /// [`crate::network::Network::optimizer_state`].
    pub fn state_tensors(&self) -> Vec<StateTensor> {
        assert!(self.held_by.is_none(), "the optimizer's state is on the GPU: use Network::optimizer_state");
        self.state_tensors_with(&self.buf1, &self.buf2)
    }

    /// [`Self::state_tensors`] with the buffers' values given (read back from a device).
    pub fn state_tensors_with(&self, buf1: &[f32], buf2: &[f32]) -> Vec<StateTensor> {
        let mut out = vec![(STEP_NAME.to_string(), Vec::new(), vec![self.step as f32])];
        if self.step > 0 {
            for (name, buf) in self.buffer_names().iter().zip([buf1, buf2]) {
                out.push((name.to_string(), vec![self.len], buf.to_vec()));
            }
        }
        out
    }

    /// The state buffers as kept here (`buf1`: momentum, `exp_avg` or the curvature;
    /// `buf2`: `exp_avg_sq`; either may be empty), for an engine to move to its device.
    pub fn buffers(&self) -> (&[f32], &[f32]) {
        (&self.buf1, &self.buf2)
    }

    /// Count one step at `lr` and give the update as a device kernel runs it: the same
    /// step count and scalars as [`Self::step`], for an engine whose device holds the
    /// state. Panics as [`Self::step`] does on a bad `lr`.
    pub fn advance(&mut self, lr: f64) -> DeviceUpdate {
        let first = self.count_step(lr);
        let mut scalars = [0.0f32; 8];
        let (entry, flags) = match self.kind {
            OptimizerKind::Sgd { momentum, nesterov, weight_decay } => {
                let s = SgdScalars { neg_lr: (-lr) as f32, momentum: momentum as f32, wd: weight_decay as f32 };
                scalars[..3].copy_from_slice(&[s.neg_lr, s.momentum, s.wd]);
                let flags = (weight_decay != 0.0) as u32
                    | ((momentum != 0.0) as u32) << 1
                    | ((momentum != 0.0 && nesterov) as u32) << 2
                    | (first as u32) << 3;
                ("sgd", flags)
            }
            OptimizerKind::Adam { beta1, beta2, eps, .. } | OptimizerKind::AdamW { beta1, beta2, eps, .. } => {
                let h = AdamScalars::new(lr, beta1, beta2, eps, self.step);
                let (l2, decay) = self.adam_weight_decay(lr);
                scalars = [h.w1, h.beta2, h.one_minus_beta2, h.bc2_sqrt, h.eps, h.neg_step_size, l2, decay];
                ("adam", h.small as u32 | ((l2 != 0.0) as u32) << 1 | ((decay != 1.0) as u32) << 2)
            }
            OptimizerKind::Sdlm { mu, .. } => {
                scalars[..2].copy_from_slice(&[lr as f32, mu as f32]);
                ("sdlm", 0)
            }
        };
        DeviceUpdate { entry, flags, scalars }
    }

    /// Restores what [`Optimizer::state_tensors`] saved. `tensors` must hold exactly the
    /// tensors that this optimizer's kind has after the saved step (pass only the names
    /// starting with `optim.`), each with this optimizer's length. On any error the
    /// optimizer is left unchanged.
    ///
    /// Adam and AdamW state are interchangeable (the same two moments), as in PyTorch;
    /// SGD state does not load into Adam or back, nor SGD-with-momentum state into SGD
    /// without momentum.
    pub fn load_state(&mut self, tensors: &[StateTensor]) -> Result<(), OptimError> {
        let err = |msg: String| Err(OptimError::State(msg));
        let describe = self.kind.to_string();
        let find = |name: &str| tensors.iter().find(|(n, _, _)| n == name);
        for (i, (name, _, _)) in tensors.iter().enumerate() {
            if tensors[..i].iter().any(|(n, _, _)| n == name) {
                return err(format!("tensor {name} appears twice"));
            }
        }

        let Some((_, shape, data)) = find(STEP_NAME) else {
            return err(format!("no {STEP_NAME} tensor (the step count)"));
        };
        if !(shape.is_empty() || shape == &[1]) || data.len() != 1 {
            return err(format!("{STEP_NAME} must hold one value, got shape {shape:?} with {} values", data.len()));
        }
        let s = data[0];
        if !(s.is_finite() && s >= 0.0 && s.fract() == 0.0) {
            return err(format!("{STEP_NAME} must be a whole number >= 0, got {s}"));
        }
        let step = s as u64;

        let expected: &[&str] = if step > 0 { self.buffer_names() } else { &[] };
        for (name, _, _) in tensors {
            if name != STEP_NAME && !expected.contains(&name.as_str()) {
                let why = match name.as_str() {
                    MOMENTUM_BUFFER_NAME | EXP_AVG_NAME | EXP_AVG_SQ_NAME | HESSIAN_DIAG_NAME if step == 0 => {
                        "at step 0 there is no state beyond the step count".to_string()
                    }
                    MOMENTUM_BUFFER_NAME => "it is state of sgd with momentum".to_string(),
                    EXP_AVG_NAME | EXP_AVG_SQ_NAME => "it is state of adam or adamw".to_string(),
                    HESSIAN_DIAG_NAME => "it is state of sdlm".to_string(),
                    _ => "it is not optimizer state".to_string(),
                };
                return err(format!("tensor {name} does not belong to optimizer {describe}: {why}"));
            }
        }
        let mut bufs = Vec::new();
        for &name in expected {
            let Some((_, shape, data)) = find(name) else {
                return err(format!(
                    "optimizer {describe} after {step} steps needs tensor {name}, which is missing \
                     (was the state saved by a different optimizer?)"
                ));
            };
            if shape != &[self.len] || data.len() != self.len {
                return err(format!(
                    "tensor {name} has shape {shape:?} ({} values), but the model has {} parameters",
                    data.len(),
                    self.len
                ));
            }
            bufs.push(data);
        }

        self.step = step;
        self.held_by = None;
        let mut bufs = bufs.into_iter();
        for buf in [&mut self.buf1, &mut self.buf2] {
            if buf.is_empty() {
                continue;
            }
            match bufs.next() {
                Some(data) => buf.copy_from_slice(data),
                // Step 0: a fresh state, as Optimizer::new makes it.
                None => buf.fill(0.0),
            }
        }
        Ok(())
    }

    fn buffer_names(&self) -> &'static [&'static str] {
        match self.kind {
            OptimizerKind::Sgd { momentum, .. } if momentum != 0.0 => &[MOMENTUM_BUFFER_NAME],
            OptimizerKind::Sgd { .. } => &[],
            OptimizerKind::Adam { .. } | OptimizerKind::AdamW { .. } => &[EXP_AVG_NAME, EXP_AVG_SQ_NAME],
            OptimizerKind::Sdlm { .. } => &[HESSIAN_DIAG_NAME],
        }
    }
}

/// SGD update, PyTorch `_single_tensor_sgd` with dampening 0:
///
/// ```text
/// d_p = g + wd * p                        (if wd != 0)
/// buf = d_p                               (first step)
/// buf = momentum * buf + d_p              (later steps)
/// d_p = d_p + momentum * buf  (nesterov)  or  d_p = buf
/// p   = p + (-lr) * d_p
/// ```
#[allow(clippy::too_many_arguments)]
fn sgd(p: &mut [f32], g: &[f32], buf: &mut [f32], lr: f64, momentum: f64, nesterov: bool, wd: f64, first: bool) {
    let s = SgdScalars { neg_lr: (-lr) as f32, momentum: momentum as f32, wd: wd as f32 };
    let use_wd = wd != 0.0;
    if momentum == 0.0 {
        match use_wd {
            false => sgd_kernel::<false, false, false, false>(p, g, buf, &s),
            true => sgd_kernel::<true, false, false, false>(p, g, buf, &s),
        }
        return;
    }
    match (use_wd, nesterov, first) {
        (false, false, false) => sgd_kernel::<false, true, false, false>(p, g, buf, &s),
        (false, false, true) => sgd_kernel::<false, true, false, true>(p, g, buf, &s),
        (false, true, false) => sgd_kernel::<false, true, true, false>(p, g, buf, &s),
        (false, true, true) => sgd_kernel::<false, true, true, true>(p, g, buf, &s),
        (true, false, false) => sgd_kernel::<true, true, false, false>(p, g, buf, &s),
        (true, false, true) => sgd_kernel::<true, true, false, true>(p, g, buf, &s),
        (true, true, false) => sgd_kernel::<true, true, true, false>(p, g, buf, &s),
        (true, true, true) => sgd_kernel::<true, true, true, true>(p, g, buf, &s),
    }
}

struct SgdScalars {
    neg_lr: f32,
    momentum: f32,
    wd: f32,
}

/// The SGD loop, one instance per combination of switches so that each loop body is
/// branch-free and vectorises.
fn sgd_kernel<const WD: bool, const MOMENTUM: bool, const NESTEROV: bool, const FIRST: bool>(
    p: &mut [f32],
    g: &[f32],
    buf: &mut [f32],
    s: &SgdScalars,
) {
    if MOMENTUM {
        for ((pi, &gi), bi) in p.iter_mut().zip(g).zip(buf.iter_mut()) {
            let mut d = gi;
            if WD {
                d += s.wd * *pi; // grad.add(param, alpha=wd)
            }
            let b = if FIRST { d } else { *bi * s.momentum + d }; // buf.mul_(m).add_(d)
            *bi = b;
            d = if NESTEROV { d + s.momentum * b } else { b }; // d.add(buf, alpha=m)
            *pi += s.neg_lr * d; // param.add_(d, alpha=-lr)
        }
    } else {
        for (pi, &gi) in p.iter_mut().zip(g) {
            let mut d = gi;
            if WD {
                d += s.wd * *pi;
            }
            *pi += s.neg_lr * d;
        }
    }
}

/// The per-step scalars of Adam, computed as PyTorch computes them in Python (`f64`) and
/// rounded to `f32` where they enter a kernel.
struct AdamScalars {
    /// `1 - beta1`, the `lerp_` weight.
    w1: f32,
    /// Whether `lerp_` takes its small-weight form (`|w| < 0.5`).
    small: bool,
    beta2: f32,
    /// `1 - beta2`, the `addcmul_` value.
    one_minus_beta2: f32,
    /// `sqrt(1 - beta2^step)`.
    bc2_sqrt: f32,
    eps: f32,
    /// `-lr / (1 - beta1^step)`, the `addcdiv_` value.
    neg_step_size: f32,
}

impl AdamScalars {
    fn new(lr: f64, beta1: f64, beta2: f64, eps: f64, step: u64) -> Self {
        // PyTorch keeps the step as an f32 tensor and reads it back as a Python float.
        let t = step as f32 as f64;
        let bias_correction1 = 1.0 - beta1.powf(t);
        let bias_correction2 = 1.0 - beta2.powf(t);
        let step_size = lr / bias_correction1;
        let w1 = (1.0 - beta1) as f32;
        Self {
            w1,
            small: w1.abs() < 0.5,
            beta2: beta2 as f32,
            one_minus_beta2: (1.0 - beta2) as f32,
            bc2_sqrt: bias_correction2.sqrt() as f32,
            eps: eps as f32,
            neg_step_size: (-step_size) as f32,
        }
    }
}

/// Adam / AdamW update, PyTorch `_single_tensor_adam` (amsgrad off):
///
/// ```text
/// p     = p * decay                            (AdamW: decay = 1 - lr*wd; Adam: skipped)
/// g     = g + wd * p                           (Adam with wd != 0)
/// m     = m.lerp(g, 1 - beta1)                 m + w*(g-m) for w < 0.5, else g - (g-m)*(1-w)
/// v     = v * beta2 + ((1 - beta2) * g) * g
/// denom = sqrt(v) / sqrt(1 - beta2^t) + eps
/// p     = p + (-lr / (1 - beta1^t)) * m / denom
/// ```
fn adam(p: &mut [f32], g: &[f32], m: &mut [f32], v: &mut [f32], h: &AdamScalars, l2: f32, decay: f32) {
    match (l2 != 0.0, decay != 1.0, h.small) {
        (false, false, true) => adam_kernel::<false, false, true>(p, g, m, v, h, l2, decay),
        (false, false, false) => adam_kernel::<false, false, false>(p, g, m, v, h, l2, decay),
        (true, _, true) => adam_kernel::<true, false, true>(p, g, m, v, h, l2, decay),
        (true, _, false) => adam_kernel::<true, false, false>(p, g, m, v, h, l2, decay),
        (false, true, true) => adam_kernel::<false, true, true>(p, g, m, v, h, l2, decay),
        (false, true, false) => adam_kernel::<false, true, false>(p, g, m, v, h, l2, decay),
    }
}

fn adam_kernel<const L2: bool, const DECAY: bool, const SMALL: bool>(
    p: &mut [f32],
    g: &[f32],
    m: &mut [f32],
    v: &mut [f32],
    h: &AdamScalars,
    l2: f32,
    decay: f32,
) {
    for (((pi, &gi), mi), vi) in p.iter_mut().zip(g).zip(m.iter_mut()).zip(v.iter_mut()) {
        let mut p_ = *pi;
        if DECAY {
            p_ *= decay; // param.mul_(1 - lr * wd)
        }
        let mut g_ = gi;
        if L2 {
            g_ += l2 * p_; // grad.add(param, alpha=wd)
        }
        // exp_avg.lerp_(grad, 1 - beta1)
        let m_ = if SMALL { *mi + h.w1 * (g_ - *mi) } else { g_ - (g_ - *mi) * (1.0 - h.w1) };
        *mi = m_;
        // exp_avg_sq.mul_(beta2).addcmul_(grad, grad, value=1 - beta2)
        let v_ = *vi * h.beta2 + h.one_minus_beta2 * g_ * g_;
        *vi = v_;
        let denom = v_.sqrt() / h.bc2_sqrt + h.eps;
        *pi = p_ + h.neg_step_size * m_ / denom; // param.addcdiv_(m, denom, value=-step_size)
    }
}

/// SDLM update (appendix C of the paper): `p = p − lr / (mu + h) · g`, each parameter
/// with its own step size from its curvature estimate `h` (≥ 0).
fn sdlm(p: &mut [f32], g: &[f32], h: &[f32], lr: f32, mu: f32) {
    for ((pi, &gi), &hi) in p.iter_mut().zip(g).zip(h) {
        *pi -= lr / (mu + hi) * gi;
    }
}

/// Scales `grads` in place so that their joint L2 norm is at most `max_norm`, like
/// `torch.nn.utils.clip_grad_norm_` over all parameters: with `norm` the L2 norm of all
/// gradients (accumulated in `f64`), `coef = max_norm / (norm + 1e-6)`, and the gradients
/// are multiplied by `coef` when `coef < 1` (or is NaN, as PyTorch's clamp keeps NaN).
/// Returns `norm`, the norm before clipping.
pub fn clip_grad_norm(grads: &mut [f32], max_norm: f32) -> f32 {
    let sum_sq: f64 = grads.iter().map(|&x| (x as f64) * (x as f64)).sum();
    let norm = sum_sq.sqrt() as f32;
    let coef = max_norm / (norm + 1e-6);
    if coef < 1.0 || coef.is_nan() {
        for x in grads.iter_mut() {
            *x *= coef;
        }
    }
    norm
}
