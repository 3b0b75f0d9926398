//! Runtime CPU feature detection. The SIMD tiers (a later issue) hang their fn tables off this;
//! for now it reports what the CPU has and which tier each type would use (the scalar reference).

use std::sync::OnceLock;

/// CPU features that matter to our kernels, detected once.
#[derive(Debug, Clone, Copy, Default)]
pub struct Features {
    pub avx2: bool,
    pub fma: bool,
    pub f16c: bool,
    pub avx512f: bool,
    pub avx512bw: bool,
    pub avx512vnni: bool,
    pub amx_tile: bool,
    pub amx_int8: bool,
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
            f.avx512vnni = std::arch::is_x86_feature_detected!("avx512vnni");
            // `is_x86_feature_detected!("amx-tile")` is unstable: read CPUID leaf 7 (EDX bits
            // 24/25) directly. The OS must also grant tile state (arch_prctl), which the AMX
            // tier requests when it is first used.
            let max_leaf = std::arch::x86_64::__cpuid(0).eax;
            if max_leaf >= 7 {
                let l7 = std::arch::x86_64::__cpuid_count(7, 0);
                f.amx_tile = l7.edx & (1 << 24) != 0;
                f.amx_int8 = l7.edx & (1 << 25) != 0;
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
            ("avx512vnni", self.avx512vnni),
            ("amx-tile", self.amx_tile),
            ("amx-int8", self.amx_int8),
            ("neon", self.neon),
            ("dotprod", self.dotprod),
        ]
    }
}

/// The kernel tier that would serve a weight type. Only the scalar reference exists so far.
pub fn tier_for(_ty: crate::GgmlType) -> &'static str {
    "scalar"
}
