//! The run-time choice of instruction set for the kernels (see the private
//! `lanes` module for the vectors themselves). The choice is made once per
//! process, so a machine always runs the same instructions and gets the same bits.

use std::sync::OnceLock;

/// The instruction sets the kernels are compiled for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Isa {
    Avx512,
    Avx2,
    Baseline,
}

impl Isa {
    /// The value of `LENET_ISA` that asks for this set.
    pub fn env_name(self) -> &'static str {
        match self {
            Isa::Avx512 => "avx512",
            Isa::Avx2 => "avx2",
            Isa::Baseline => "baseline",
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Isa::Avx512 => "avx512",
            Isa::Avx2 => "avx2+fma",
            Isa::Baseline => "baseline",
        }
    }
}

/// The best instruction set this CPU supports (`LENET_ISA=avx2|baseline` asks for
/// less, e.g. to compare).
pub fn isa() -> Isa {
    static ISA: OnceLock<Isa> = OnceLock::new();
    *ISA.get_or_init(|| detect(&std::env::var("LENET_ISA").unwrap_or_default()))
}

/// Every instruction set this CPU can run, the baseline first and the best last.
pub fn available() -> Vec<Isa> {
    let best = detect("");
    [Isa::Baseline, Isa::Avx2, Isa::Avx512].into_iter().filter(|&i| i == best || detect(i.env_name()) == i).collect()
}

#[cfg(target_arch = "x86_64")]
fn detect(want: &str) -> Isa {
    let avx2 = is_x86_feature_detected!("avx2") && is_x86_feature_detected!("fma");
    let avx512 = avx2 && is_x86_feature_detected!("avx512f");
    match want {
        "baseline" => Isa::Baseline,
        "avx2" if avx2 => Isa::Avx2,
        _ if avx512 => Isa::Avx512,
        _ if avx2 => Isa::Avx2,
        _ => Isa::Baseline,
    }
}

#[cfg(not(target_arch = "x86_64"))]
fn detect(_want: &str) -> Isa {
    Isa::Baseline
}
