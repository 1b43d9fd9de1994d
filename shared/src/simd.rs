//! Hot loops compiled twice: for the baseline x86-64 (SSE2) every build targets, and for
//! AVX2, chosen at run time when the CPU has it (RustFFT's way). Both are the same Rust
//! code, and Rust never reassociates or fuses floating-point operations, so the two give
//! the same bits: a stamp does not depend on the machine that made it.

/// Defines `fn $name(args) -> R` that calls `$imp(args)` compiled with AVX2 when the CPU
/// has it and as built otherwise. `$imp` should be `#[inline(always)]` so that its body,
/// not a call to the baseline copy, is what the AVX2 version holds.
macro_rules! avx2_kernel {
    ($(#[$m:meta])* fn $name:ident($($a:ident: $t:ty),* $(,)?) -> $r:ty = $imp:ident) => {
        $(#[$m])*
        fn $name($($a: $t),*) -> $r {
            #[cfg(target_arch = "x86_64")]
            {
                #[target_feature(enable = "avx2")]
                fn avx2($($a: $t),*) -> $r {
                    $imp($($a),*)
                }
                if std::arch::is_x86_feature_detected!("avx2") {
                    // SAFETY: the CPU has AVX2, checked on the line above.
                    return unsafe { avx2($($a),*) };
                }
            }
            $imp($($a),*)
        }
    };
}

pub(crate) use avx2_kernel;
