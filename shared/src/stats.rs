//! Tail probabilities for the detection statistics.
//!
//! The blind statistic is a robust z-score normalised per chip phase (design.md section 5
//! step 5), Gaussian under the null down to the depth the prototype could measure. The
//! p-value of a claim is Bonferroni over every shift, orientation and geometry candidate
//! examined: `p = min(1, n_tests * 2 Q(z))`.

/// ln(erfc(x)) for x >= 0, from the Chebyshev fit of Numerical Recipes (erfcc, relative
/// error below 1.2e-7 everywhere), evaluated in the log domain so that it never underflows.
fn ln_erfc_nonneg(x: f64) -> f64 {
    let t = 1.0 / (1.0 + 0.5 * x);
    let poly = -1.265_512_23
        + t * (1.000_023_68
            + t * (0.374_091_96
                + t * (0.096_784_18
                    + t * (-0.186_288_06
                        + t * (0.278_868_07
                            + t * (-1.135_203_98
                                + t * (1.488_515_87 + t * (-0.822_152_23 + t * 0.170_872_77))))))));
    t.ln() - x * x + poly
}

/// Upper Gaussian tail Q(z) = P(N(0,1) > z).
pub fn q(z: f64) -> f64 {
    if z >= 0.0 {
        0.5 * ln_erfc_nonneg(z / std::f64::consts::SQRT_2).exp()
    } else {
        1.0 - q(-z)
    }
}

/// log10 of the two-sided Bonferroni p-value `n_tests * 2 Q(|z|)`, capped at 0 (p <= 1).
pub fn log10_p_two_sided(z: f64, n_tests: f64) -> f64 {
    // 2 Q(z) = erfc(z / sqrt 2).
    let ln_two_q = ln_erfc_nonneg(z.abs() / std::f64::consts::SQRT_2);
    ((n_tests.ln() + ln_two_q) / std::f64::consts::LN_10).min(0.0)
}

/// log10 of the one-sided Bonferroni p-value `n_tests * Q(z)`, capped at 0.
pub fn log10_p_one_sided(z: f64, n_tests: f64) -> f64 {
    if z <= 0.0 {
        return 0.0;
    }
    let ln_q = -std::f64::consts::LN_2 + ln_erfc_nonneg(z / std::f64::consts::SQRT_2);
    ((n_tests.ln() + ln_q) / std::f64::consts::LN_10).min(0.0)
}

/// The smallest z whose two-sided Bonferroni p-value over `n_tests` is at most `p`.
pub fn z_threshold_two_sided(p: f64, n_tests: f64) -> f64 {
    let target = p.log10();
    let (mut lo, mut hi) = (0.0f64, 40.0f64);
    for _ in 0..100 {
        let mid = 0.5 * (lo + hi);
        if log10_p_two_sided(mid, n_tests) > target {
            lo = mid;
        } else {
            hi = mid;
        }
    }
    hi
}

/// Median of a slice (reorders it).
///
/// # Panics
/// On an empty slice.
pub fn median_in_place(v: &mut [f32]) -> f32 {
    let mid = v.len() / 2;
    let (_, m, _) = v.select_nth_unstable_by(mid, f32::total_cmp);
    *m
}

/// The median of `v` and its MAD scaled to a standard deviation (1.4826 times the median
/// absolute deviation), the robust location and scale of the sync statistic. Leaves the
/// absolute deviations in `v`.
///
/// # Panics
/// On an empty slice.
pub fn median_and_mad(v: &mut [f32]) -> (f32, f32) {
    let med = median_in_place(v);
    for x in v.iter_mut() {
        *x = (*x - med).abs();
    }
    (med, median_in_place(v) * 1.4826)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gaussian_tail_known_values() {
        for (z, want) in [
            (0.0, 0.5),
            (1.0, 0.158_655_25),
            (3.0, 1.349_898e-3),
            (6.0, 9.865_876e-10),
        ] {
            let got = q(z);
            assert!(
                (got / want - 1.0).abs() < 1e-6,
                "Q({z}) = {got}, want {want}"
            );
        }
        // Far tail in the log domain: Q(40) = 3.655893e-350.
        let l = log10_p_one_sided(40.0, 1.0);
        assert!((l - (-349.437)).abs() < 1e-2, "{l}");
    }

    #[test]
    fn threshold_inverts_p_value() {
        let n = 5.0 * 4.0 * 16384.0;
        let z = z_threshold_two_sided(1e-6, n);
        assert!((log10_p_two_sided(z, n) + 6.0).abs() < 1e-6);
        assert!(z > 6.5 && z < 7.5, "{z}");
    }
}
