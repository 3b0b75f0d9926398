//! Runtime CPU feature detection and the kernel tier: detected once, or pinned with
//! `AUTOROUND_ISA=scalar|avx2|avx512|amx|neon` (a tier the CPU lacks is an error, never a
//! SIGILL).

use std::sync::OnceLock;

/// CPU features that matter to our kernels, detected once.
#[derive(Debug, Clone, Copy, Default)]
pub struct Features {
    pub avx2: bool,
    pub fma: bool,
    pub f16c: bool,
    pub avx512f: bool,
    pub avx512bw: bool,
    pub avx512vl: bool,
    pub avx512vnni: bool,
    pub amx_tile: bool,
    pub amx_int8: bool,
    pub amx_bf16: bool,
    pub avx512bf16: bool,
    pub neon: bool,
    pub dotprod: bool,
}

impl Features {
    /// The features of this CPU (detected on first call).
    pub fn get() -> Features {
        static F: OnceLock<Features> = OnceLock::new();
        *F.get_or_init(Features::detect)
    }

    #[allow(unused_mut)]
    fn detect() -> Features {
        let mut f = Features::default();
        #[cfg(target_arch = "x86_64")]
        {
            f.avx2 = std::arch::is_x86_feature_detected!("avx2");
            f.fma = std::arch::is_x86_feature_detected!("fma");
            f.f16c = std::arch::is_x86_feature_detected!("f16c");
            f.avx512f = std::arch::is_x86_feature_detected!("avx512f");
            f.avx512bw = std::arch::is_x86_feature_detected!("avx512bw");
            f.avx512vl = std::arch::is_x86_feature_detected!("avx512vl");
            f.avx512vnni = std::arch::is_x86_feature_detected!("avx512vnni");
            f.avx512bf16 = std::arch::is_x86_feature_detected!("avx512bf16");
            // `is_x86_feature_detected!("amx-tile")` is unstable: read CPUID leaf 7 (EDX bits
            // 22/24/25) directly. The OS must also grant tile state (arch_prctl), which the AMX
            // tier requests when it is first used.
            let max_leaf = std::arch::x86_64::__cpuid(0).eax;
            if max_leaf >= 7 {
                let l7 = std::arch::x86_64::__cpuid_count(7, 0);
                f.amx_tile = l7.edx & (1 << 24) != 0;
                f.amx_int8 = l7.edx & (1 << 25) != 0;
                f.amx_bf16 = l7.edx & (1 << 22) != 0;
            }
        }
        #[cfg(target_arch = "aarch64")]
        {
            f.neon = std::arch::is_aarch64_feature_detected!("neon");
            f.dotprod = std::arch::is_aarch64_feature_detected!("dotprod");
        }
        f
    }

    /// (name, present) pairs for display.
    pub fn list(&self) -> Vec<(&'static str, bool)> {
        vec![
            ("avx2", self.avx2),
            ("fma", self.fma),
            ("f16c", self.f16c),
            ("avx512f", self.avx512f),
            ("avx512bw", self.avx512bw),
            ("avx512vl", self.avx512vl),
            ("avx512vnni", self.avx512vnni),
            ("amx-tile", self.amx_tile),
            ("amx-int8", self.amx_int8),
            ("neon", self.neon),
            ("dotprod", self.dotprod),
        ]
    }
}

/// A kernel tier, ordered: each x86 tier includes the ones below it. NEON (AArch64) sits below
/// the x86 tiers, so that `tier >= Tier::Avx2` means "x86 SIMD" wherever it is asked.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Tier {
    /// The scalar reference, as written.
    Scalar,
    /// AArch64 NEON, with the dot-product extension's `sdot` where the CPU has it: the fast
    /// path's decode kernels ([`crate::dot`]).
    Neon,
    /// AVX2/FMA/F16C (x86-64): the exact path's reference compiled with them, and the fast
    /// path's hand-written kernels ([`crate::dot`]).
    Avx2,
    /// AVX-512 F/BW/VL with VNNI: `vpdpbusd` in the fast path's 32-element block kernels.
    Avx512,
    /// AVX-512 plus AMX tiles: prefill products on bf16 tiles ([`crate::amx`]).
    Amx,
}

/// `AUTOROUND_ISA` asked for a tier this build or CPU cannot run.
#[derive(Debug, Clone, thiserror::Error)]
#[error("AUTOROUND_ISA={requested}: {why}")]
pub struct TierError {
    pub requested: String,
    pub why: String,
}

impl Tier {
    /// The tier in use: `AUTOROUND_ISA` (`scalar`, `avx2`, `avx512`, `amx`, `neon`) if set, else
    /// the best the CPU supports. Decided once per process.
    pub fn selected() -> Result<Tier, TierError> {
        static T: OnceLock<Result<Tier, TierError>> = OnceLock::new();
        T.get_or_init(|| {
            Tier::choose(
                std::env::var("AUTOROUND_ISA").ok().as_deref(),
                &Features::get(),
            )
        })
        .clone()
    }

    /// The choice for a given request and CPU (pure, for tests).
    pub fn choose(request: Option<&str>, f: &Features) -> Result<Tier, TierError> {
        let err = |why: &str| TierError {
            requested: request.unwrap_or("").into(),
            why: why.into(),
        };
        let best = [Tier::Amx, Tier::Avx512, Tier::Avx2, Tier::Neon]
            .into_iter()
            .find(|&t| Tier::has(t, f))
            .unwrap_or(Tier::Scalar);
        let want = |t: Tier, lacks: &str| {
            if Tier::has(t, f) {
                Ok(t)
            } else {
                Err(err(lacks))
            }
        };
        match request.map(|s| s.trim().to_ascii_lowercase()).as_deref() {
            None | Some("") => Ok(best),
            Some("scalar") => Ok(Tier::Scalar),
            Some("avx2") => want(Tier::Avx2, "this CPU lacks AVX2/FMA/F16C"),
            Some("avx512") => want(
                Tier::Avx512,
                "this CPU lacks AVX-512 F/BW/VL with VNNI (or AVX2/FMA/F16C)",
            ),
            Some("amx") => want(
                Tier::Amx,
                "this CPU lacks AMX tiles with bf16 (or the AVX-512 tier, or the OS refuses tile state)",
            ),
            Some("neon") => want(Tier::Neon, "this CPU lacks NEON (an AArch64 tier)"),
            Some(_) => Err(err(
                "unknown tier (expected scalar, avx2, avx512, amx or neon)",
            )),
        }
    }

    /// Whether a CPU with features `f` runs tier `t`.
    pub fn has(t: Tier, f: &Features) -> bool {
        let avx2 = f.avx2 && f.fma && f.f16c;
        let avx512 = avx2 && f.avx512f && f.avx512bw && f.avx512vl && f.avx512vnni;
        match t {
            Tier::Scalar => true,
            Tier::Neon => f.neon,
            Tier::Avx2 => avx2,
            Tier::Avx512 => avx512,
            Tier::Amx => avx512 && f.amx_tile && f.amx_bf16 && crate::amx::available(),
        }
    }

    /// Whether this CPU runs tier `t`.
    pub fn supported(t: Tier) -> bool {
        Tier::has(t, &Features::get())
    }

    pub fn name(self) -> &'static str {
        match self {
            Tier::Scalar => "scalar",
            Tier::Neon if Features::get().dotprod => "neon (sdot)",
            Tier::Neon => "neon",
            Tier::Avx2 => "avx2",
            Tier::Avx512 => "avx512 (vnni)",
            Tier::Amx => "amx (tiles for prefill, avx512 vnni for decode)",
        }
    }
}

/// The kernel that serves a weight type's decode products (the fast path).
pub fn tier_for(ty: crate::GgmlType) -> &'static str {
    match Tier::selected() {
        Ok(Tier::Scalar) => "scalar",
        Ok(t) if !crate::dot::has_simd_on(t, ty) => "scalar (no SIMD kernel for this type yet)",
        Ok(Tier::Amx) => "avx512 (vnni)",
        Ok(t) => t.name(),
        Err(_) => "invalid AUTOROUND_ISA",
    }
}

/// The kernel that serves group-wise integer weights' decode products (auto_round / GPTQ / AWQ
/// checkpoints, [`crate::groupwise`]).
pub fn tier_for_groupwise() -> &'static str {
    match Tier::selected() {
        Ok(Tier::Scalar) => "scalar",
        Ok(t) if !crate::groupwise::has_simd_on(t) => "scalar (no SIMD kernel on this tier yet)",
        Ok(Tier::Amx) => "avx512 (vnni)",
        Ok(t) => t.name(),
        Err(_) => "invalid AUTOROUND_ISA",
    }
}

/// The kernel that serves a weight type's prefill products (batches of 16 tokens or more) in
/// the fast path.
pub fn prefill_for(ty: crate::GgmlType) -> &'static str {
    if crate::qgemm::available() && crate::qgemm::supports(ty) {
        "amx int8 (exact block sums)"
    } else if !crate::reference::can_dequantize(ty) {
        "none"
    } else if crate::amx::available() {
        "dequantized slabs, amx bf16"
    } else {
        "dequantized slabs, f32 gemm"
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tier_requests_are_checked_against_the_cpu() {
        let none = Features::default();
        let avx2 = Features {
            avx2: true,
            fma: true,
            f16c: true,
            ..Default::default()
        };
        assert_eq!(Tier::choose(None, &avx2).unwrap(), Tier::Avx2);
        assert_eq!(Tier::choose(None, &none).unwrap(), Tier::Scalar);
        assert_eq!(Tier::choose(Some("scalar"), &avx2).unwrap(), Tier::Scalar);
        assert!(Tier::choose(Some("avx2"), &none)
            .unwrap_err()
            .to_string()
            .contains("lacks AVX2"));
        assert!(Tier::choose(Some("amx"), &avx2)
            .unwrap_err()
            .to_string()
            .contains("lacks AMX"));
        assert!(Tier::choose(Some("avx512"), &avx2)
            .unwrap_err()
            .to_string()
            .contains("lacks AVX-512"));
        let avx512 = Features {
            avx512f: true,
            avx512bw: true,
            avx512vl: true,
            avx512vnni: true,
            ..avx2
        };
        assert_eq!(Tier::choose(None, &avx512).unwrap(), Tier::Avx512);
        assert_eq!(Tier::choose(Some("avx2"), &avx512).unwrap(), Tier::Avx2);
        assert!(Tier::choose(Some("neon"), &avx512)
            .unwrap_err()
            .to_string()
            .contains("lacks NEON"));
        let arm = Features {
            neon: true,
            dotprod: true,
            ..Default::default()
        };
        assert_eq!(Tier::choose(None, &arm).unwrap(), Tier::Neon);
        assert_eq!(Tier::choose(Some("neon"), &arm).unwrap(), Tier::Neon);
        assert!(Tier::choose(Some("avx2"), &arm).is_err());
        assert!(Tier::choose(Some("sse9"), &avx2)
            .unwrap_err()
            .to_string()
            .contains("unknown tier"));
    }
}
