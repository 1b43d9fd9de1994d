//! The informed per-release check (design.md section 5 step 8): with the list of issued
//! release ids, score each release's fingerprint against the aligned chips of a copy.
//!
//! The chips are first projected off everything the scheme puts there that is shared or
//! payload-dependent: the sync direction and the 282 coded-bit directions (carrier chips of
//! each bit). What is left can only correlate with a release through that release's own
//! fingerprint `FP[id]`. For an innocent release, `FP[id]` is independent of the copy, so
//!
//! `z_r = <FP[r], v'> / ||v'||`
//!
//! has mean 0 and variance exactly 1 whatever the image holds, with the sub-Gaussian bound
//! `P(z >= t) <= exp(-t^2 / 2)` (Hoeffding; the chips are +-1). A ledger of N releases is
//! then tested at `p = N * Q(z)`.
//!
//! Tile variants (see [`crate::mark::pattern::VARIANTS`]): a copy's chips are in the
//! scrambled frame of whichever variant(s) it carries, and colluders' copies of one image
//! may carry different ones. The residual is formed in each variant's unscrambled frame and
//! a release scores its best variant; the family is then `N * VARIANTS` tests. Given the
//! variant the sync peak chose, half the false-accusation budget goes to that variant's
//! `N` tests and half to the `N * VARIANTS` ([`accuse`]).
//!
//! Never accuse from the correlation with a release's *payload codeword*: codewords of
//! random ids overlap, and under a strong mark innocents then reach z of 9 (design.md).
//! The codeword only chooses which releases are tested more cheaply: the [`PRESELECT`]
//! releases whose codewords agree best with the copy's coded bits are judged among
//! `PRESELECT` tests instead of `N` ([`accuse`]). The choice never looks at a fingerprint,
//! so a chosen innocent's fingerprint score is still unit-variance, and the union bound
//! over the chosen holds whoever they are.

use crate::coding::{self, CODED_BITS};
use crate::mark::detect::Detection;
use crate::mark::pattern::{KeyPatterns, N_CHIPS, VARIANTS};
use crate::stats;

/// The chips of a copy with the sync and payload subspace removed, normalised to unit
/// length, in each variant's unscrambled frame; ready to be scored against fingerprints.
pub struct Residual {
    units: Vec<Vec<f32>>,
    /// Per variant: each coded bit's soft value (its carrier chips' sum over the square
    /// root of their count, the sync's least-squares part removed first).
    bits: Vec<Vec<f32>>,
}

impl Residual {
    /// Unscrambles `chips` (from [`crate::mark::detect::Detection::chips`], in the
    /// scrambled frame) for every variant and projects each off the sync and coded-bit
    /// directions of `patterns`. `None` when nothing is left (an empty copy).
    pub fn new(patterns: &KeyPatterns, chips: &[f32]) -> Option<Self> {
        assert_eq!(chips.len(), N_CHIPS, "chip count");
        // Each coded bit's soft value ([`KeyPatterns::soft_bits`], where the sync's part is
        // removed: it is common to every release, but its share of each bit's chips is not,
        // and would add a mark-sized offset to every release's codeword score) is divided by
        // the square root of its chip count: unit variance per bit for white chips. The
        // counts come from the key alone, so they are taken once for every variant.
        let mut count = vec![0u32; CODED_BITS];
        for &j in &patterns.bit_of_chip {
            count[j as usize] += 1;
        }
        let roots: Vec<f32> = count.iter().map(|&n| (n.max(1) as f32).sqrt()).collect();
        let mut bits = Vec::with_capacity(VARIANTS);
        let units: Vec<Vec<f32>> = patterns
            .scramble
            .iter()
            .map(|s| {
                let c: Vec<f32> = chips
                    .iter()
                    .zip(s)
                    .map(|(&x, &k)| x * f32::from(k))
                    .collect();
                let soft = patterns.soft_bits(&c);
                bits.push(soft.iter().zip(&roots).map(|(&b, &r)| b / r).collect());
                Self::unit(patterns, &c)
            })
            .collect::<Option<_>>()?;
        Some(Residual { units, bits })
    }

    /// How well a release's payload codeword (`code`, [`coding::encode`]) agrees with the
    /// copy's coded bits in `variant`'s frame: their correlation over the soft values. It
    /// ranks releases for [`accuse`]'s preselection and never names one: codewords of
    /// different ids overlap.
    pub fn codeword_score(&self, variant: usize, code: &[u8]) -> f64 {
        self.bits[variant]
            .iter()
            .zip(code)
            .map(|(&b, &c)| if c == 0 { f64::from(b) } else { -f64::from(b) })
            .sum()
    }

    /// Projects unscrambled `chips` off the sync and coded-bit directions of `patterns`,
    /// normalised to unit length. `None` when nothing is left (an empty copy).
    ///
    /// # Panics
    /// When `chips.len()` is not the chip count.
    fn unit(patterns: &KeyPatterns, chips: &[f32]) -> Option<Vec<f32>> {
        let mut v: Vec<f64> = chips.iter().map(|&c| f64::from(c)).collect();
        // The coded-bit directions d_j (carrier on bit j's chips) are mutually orthogonal
        // (disjoint supports): remove them one by one; then the sync direction with its
        // own d_j parts removed, which is orthogonal to all d_j (Gram-Schmidt).
        let remove_bits = |x: &mut [f64]| {
            let mut dot = vec![0f64; CODED_BITS];
            let mut norm = vec![0f64; CODED_BITS];
            let chips = patterns.bit_of_chip.iter().zip(&patterns.carrier);
            for (xk, (&j, &c)) in x.iter().zip(chips.clone()) {
                dot[j as usize] += xk * f64::from(c);
                norm[j as usize] += 1.0;
            }
            for (xk, (&j, &c)) in x.iter_mut().zip(chips) {
                *xk -= dot[j as usize] / norm[j as usize] * f64::from(c);
            }
        };
        remove_bits(&mut v);
        let mut s: Vec<f64> = patterns.sync.iter().map(|&c| f64::from(c)).collect();
        remove_bits(&mut s);
        let ss: f64 = s.iter().map(|x| x * x).sum();
        if ss > 0.0 {
            let vs: f64 = v.iter().zip(&s).map(|(a, b)| a * b).sum();
            v.iter_mut().zip(&s).for_each(|(a, b)| *a -= vs / ss * b);
        }
        let norm = v.iter().map(|x| x * x).sum::<f64>().sqrt();
        if norm <= 1e-12 {
            return None;
        }
        Some(v.iter().map(|x| (x / norm) as f32).collect())
    }

    /// The score z of one release in one variant's frame: unit variance for an innocent.
    pub fn score_variant(&self, patterns: &KeyPatterns, release: u64, variant: usize) -> f64 {
        dot(&self.units[variant], &patterns.fingerprint(release))
    }

    /// The score z of one release: its best variant.
    pub fn score(&self, patterns: &KeyPatterns, release: u64) -> f64 {
        self.scores(patterns, release)
            .into_iter()
            .fold(f64::NEG_INFINITY, f64::max)
    }

    /// The score z of one release in every variant's frame (each unit variance for an
    /// innocent).
    pub fn scores(&self, patterns: &KeyPatterns, release: u64) -> Vec<f64> {
        let fp = patterns.fingerprint(release);
        self.units.iter().map(|u| dot(u, &fp)).collect()
    }
}

fn dot(unit: &[f32], fp: &[i8]) -> f64 {
    let s: f32 = unit.iter().zip(fp).map(|(&u, &f)| u * f32::from(f)).sum();
    f64::from(s)
}

/// A release named by the informed check.
#[derive(Clone, Debug, PartialEq)]
pub struct Accusation {
    /// The release id.
    pub release: u64,
    /// Its score.
    pub z: f64,
    /// log10 of its family-wise false-accusation probability over the releases examined
    /// ([`accuse`]: `N * VARIANTS * Q(z)`, or with the sync's variant the smallest of
    /// `2 PRESELECT Q(z)` in it for a preselected release, `4 N Q(z)` in it and
    /// `4 N VARIANTS Q(z)` in the best).
    pub log10_p: f64,
}

impl Accusation {
    /// A release's score `z`, judged among `n` releases: `log10(N * Q(z))`.
    pub fn judge(release: u64, z: f64, n: usize) -> Self {
        Accusation {
            release,
            z,
            log10_p: stats::log10_p_one_sided(z, n as f64),
        }
    }

    /// A release's scores in every variant (`scores[v]`, [`Residual::scores`]) judged among
    /// `n` releases by [`accuse`]'s rule: without the sync's `variant`, its best variant
    /// among `n * VARIANTS` tests. Given it, the best of three tests, each at its share of
    /// the budget (a weighted Bonferroni): its score in `variant` among the
    /// [`PRESELECT`] releases the codeword chose, when it is one of them
    /// (`preselected`), at half; its score in `variant` among `n` at a quarter; its best
    /// variant among `n * VARIANTS` at a quarter. The p-value is that test's `count * Q(z)`
    /// over its share, and `z` its score.
    ///
    /// # Panics
    /// When `variant` is not an index of `scores`.
    pub fn judge_variants(
        release: u64,
        scores: &[f64],
        n: usize,
        variant: Option<usize>,
        preselected: bool,
    ) -> Self {
        let best = scores.iter().copied().fold(f64::NEG_INFINITY, f64::max);
        let Some(v) = variant else {
            return Accusation::judge(release, best, n * VARIANTS);
        };
        let mut tests = vec![
            (scores[v], n as f64 / SHARE_VARIANT),
            (best, (n * VARIANTS) as f64 / SHARE_ANY),
        ];
        if preselected {
            tests.push((scores[v], n.min(PRESELECT) as f64 / SHARE_PRESELECTED));
        }
        tests
            .into_iter()
            .map(|(z, count)| Accusation {
                release,
                z,
                log10_p: stats::log10_p_one_sided(z, count),
            })
            .min_by(|a, b| a.log10_p.total_cmp(&b.log10_p))
            .expect("two tests at least")
    }

    /// Whether it is named at family-wise false-accusation probability `max_p`.
    pub fn named(&self, max_p: f64) -> bool {
        self.log10_p <= max_p.log10()
    }
}

/// Releases the codeword preselection passes to its own test ([`accuse`]): enough for the
/// colluders of one averaged copy, few enough that the test needs a score of 5.3 at 1e-6
/// (6.2 among 1,001 releases).
pub const PRESELECT: usize = 8;

/// Shares of the false-accusation budget given the sync's variant ([`Accusation::judge_variants`]):
/// the preselected releases' test, every release's test in the sync's variant, every
/// release's best variant.
const SHARE_PRESELECTED: f64 = 0.5;
const SHARE_VARIANT: f64 = 0.25;
const SHARE_ANY: f64 = 0.25;

/// Which of `releases` the codeword chooses in `variant`'s frame: the [`PRESELECT`] (all
/// when fewer) whose payload codewords agree best with the copy's coded bits
/// ([`Residual::codeword_score`]), ties to the earlier. It looks at the codewords and the
/// copy only, never at a fingerprint.
pub fn preselect(residual: &Residual, releases: &[u64], variant: usize) -> Vec<bool> {
    let mut chosen = vec![false; releases.len()];
    let scores: Vec<f64> = releases
        .iter()
        .map(|&r| residual.codeword_score(variant, &coding::encode(r)))
        .collect();
    let mut order: Vec<usize> = (0..releases.len()).collect();
    let by_score = |a: &usize, b: &usize| scores[*b].total_cmp(&scores[*a]).then(a.cmp(b));
    if order.len() > PRESELECT {
        order.select_nth_unstable_by(PRESELECT - 1, by_score);
        order.truncate(PRESELECT);
    }
    for i in order {
        chosen[i] = true;
    }
    chosen
}

/// Which alignment of a copy the informed check scores, when the detection's searches
/// read no payload and claimed no mark, and found it at several: `0` for the detection
/// itself, `i` for its `alternatives[i - 1]` ([`Detection::alternatives`]), with that
/// alignment's residual. It is the one whose coded bits, in its own sync variant, agree
/// best with some release's payload codeword (the largest [`Residual::codeword_score`]
/// over `releases`, over the soft values' norm). Where the sync is weak the strongest
/// statistic can be a noise peak of one search while another search holds the mark; the
/// codeword has twice the fingerprint's energy and tells them apart. A claimed mark's
/// alignment is kept (its peak is the mark's at the claim's p-value). The choice looks at
/// the chips and the codewords, never at a fingerprint, so the informed check on the
/// chosen alignment keeps its p-values (an innocent's score there is unit-variance like
/// anywhere). `None` when no alignment has anything left to score (an empty copy).
pub fn choose(
    patterns: &KeyPatterns,
    detection: &Detection,
    releases: &[u64],
) -> Option<(usize, Residual)> {
    let alignments: &[Detection] = if detection.marked || detection.payload.is_some() {
        &[]
    } else {
        &detection.alternatives
    };
    let mut options: Vec<(usize, usize, Residual)> = std::iter::once(detection)
        .chain(alignments)
        .enumerate()
        .filter_map(|(i, d)| Residual::new(patterns, &d.chips).map(|r| (i, d.variant, r)))
        .collect();
    if options.len() > 1 && !releases.is_empty() {
        let norms: Vec<f64> = options
            .iter()
            .map(|(_, v, r)| {
                let n = r.bits[*v]
                    .iter()
                    .map(|&b| f64::from(b).powi(2))
                    .sum::<f64>();
                n.sqrt().max(1e-12)
            })
            .collect();
        let mut best = vec![f64::NEG_INFINITY; options.len()];
        for &release in releases {
            let code = coding::encode(release);
            for ((_, v, r), (b, n)) in options.iter().zip(best.iter_mut().zip(&norms)) {
                *b = b.max(r.codeword_score(*v, &code) / n);
            }
        }
        let k = (0..options.len())
            .max_by(|&a, &b| best[a].total_cmp(&best[b]).then(b.cmp(&a)))
            .expect("two options at least");
        let (i, _, r) = options.swap_remove(k);
        return Some((i, r));
    }
    options.into_iter().next().map(|(i, _, r)| (i, r))
}

/// Scores every release and names those whose fingerprint stands out at family-wise
/// false-accusation probability `max_p`, strongest first.
///
/// Without `variant`, each release scores its best variant, judged among `N * VARIANTS`
/// tests. With `variant`, the tile variant the detection's sync peak chose (from the copy
/// and the key's sync alone, never a fingerprint, so an innocent's score in it is still
/// unit-variance), `max_p` is shared among three tests ([`Accusation::judge_variants`]):
/// the [`PRESELECT`] releases whose payload codewords agree best with the copy's coded bits
/// ([`preselect`]) are judged by their score in that variant among `PRESELECT` tests at
/// `max_p / 2`; every release by its score there among `N` at `max_p / 4`, and by its best
/// variant's among `N * VARIANTS` at `max_p / 4`. The codeword carries twice the
/// fingerprint's energy, so the true release of a copy as released is among the chosen
/// well before its fingerprint is strong enough to be named, and then needs a score of
/// 5.3 instead of 6.1 (among 1,001 releases at 1e-6). The choice never looks at a
/// fingerprint: a chosen innocent's score is unit-variance like any other, whichever
/// innocents the codeword's overlaps chose. Colluders' copies in other variants are found
/// by the last test.
pub fn accuse(
    patterns: &KeyPatterns,
    residual: &Residual,
    releases: &[u64],
    max_p: f64,
    variant: Option<usize>,
) -> Vec<Accusation> {
    let n = releases.len();
    let chosen = match variant {
        Some(v) => preselect(residual, releases, v),
        None => vec![false; n],
    };
    let mut out: Vec<Accusation> = releases
        .iter()
        .zip(chosen)
        .map(|(&r, pre)| {
            Accusation::judge_variants(r, &residual.scores(patterns, r), n, variant, pre)
        })
        .filter(|a| a.named(max_p))
        .collect();
    out.sort_by(|a, b| b.z.total_cmp(&a.z));
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::key::SecretKey;

    /// Chips of a copy carrying `payload`, plus Gaussian-ish noise.
    fn chips_of(p: &KeyPatterns, payload: u64, amplitude: f32, seed: u64) -> Vec<f32> {
        let mut x = seed;
        p.chip_values(payload)
            .iter()
            .map(|&c| {
                let mut n = 0.0;
                for _ in 0..4 {
                    x = x
                        .wrapping_mul(6364136223846793005)
                        .wrapping_add(1442695040888963407);
                    n += (x >> 40) as f32 / (1u64 << 24) as f32 - 0.5;
                }
                amplitude * c + n
            })
            .collect()
    }

    #[test]
    fn innocents_have_unit_variance_and_the_true_release_stands_out() {
        let p = KeyPatterns::new(&SecretKey::from_bytes([21; 32]));
        let truth = 0x1234_5678_9abc_def0;
        // Fingerprint amplitude 0.5 * 0.15 per chip against noise sd 0.577: expected z = 0.075 * 64 / 0.577 = 8.3.
        let r = Residual::new(&p, &chips_of(&p, truth, 0.15, 1)).unwrap();
        let innocents: Vec<f64> = (0..3000u64)
            .map(|i| r.score_variant(&p, i.wrapping_mul(0x9E37_79B9_7F4A_7C15), (i % 16) as usize))
            .collect();
        let mean = innocents.iter().sum::<f64>() / innocents.len() as f64;
        let var =
            innocents.iter().map(|z| (z - mean).powi(2)).sum::<f64>() / innocents.len() as f64;
        assert!(
            mean.abs() < 0.06 && (var - 1.0).abs() < 0.08,
            "mean {mean} var {var}"
        );
        assert!(innocents.iter().all(|z| z.abs() < 5.0));
        assert!(r.score(&p, truth) > 7.0, "{}", r.score(&p, truth));
        let mut releases: Vec<u64> = (0..999u64)
            .map(|i| i.wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ 0xABCD)
            .collect();
        releases.push(truth);
        let named = accuse(&p, &r, &releases, 1e-6, None);
        assert_eq!(named.len(), 1);
        assert_eq!(named[0].release, truth);
    }

    /// Given the variant the sync found, the true release's codeword puts it among the
    /// preselected, and a score below every other test's threshold (5.3 among the chosen
    /// 8, 6.2 among 1,000 releases in the sync's variant, 6.5 in the best of 16, at 1e-6)
    /// names it, at p = 2 PRESELECT Q(z), where the best-variant test alone names nobody;
    /// with a wrong variant the codeword chooses at random and a strong mark is still named
    /// by its best variant, at p = 4 N VARIANTS Q(z); innocents never.
    #[test]
    fn the_sync_variant_and_the_codeword_lower_the_score_a_release_needs() {
        let p = KeyPatterns::new(&SecretKey::from_bytes([25; 32]));
        let truth = 0x0bad_cafe_f00d_u64;
        let mut releases: Vec<u64> = (0..999u64).map(|i| i.wrapping_mul(0x2545_F491)).collect();
        releases.push(truth);
        let n = releases.len() as f64;
        let between = (0..200)
            .map(|i| Residual::new(&p, &chips_of(&p, truth, 0.06 + 0.0005 * i as f32, 3)).unwrap())
            .find(|r| (5.4..5.9).contains(&r.score_variant(&p, truth, 0)))
            .expect("an amplitude puts the score between the thresholds");
        let z = between.score_variant(&p, truth, 0);
        assert!(accuse(&p, &between, &releases, 1e-6, None).is_empty());
        assert!(preselect(&between, &releases, 0)[releases.len() - 1]);
        let named = accuse(&p, &between, &releases, 1e-6, Some(0));
        assert_eq!(
            named.iter().map(|a| a.release).collect::<Vec<_>>(),
            vec![truth]
        );
        let want = stats::log10_p_one_sided(z, 2.0 * PRESELECT as f64);
        assert!((named[0].z - z).abs() < 1e-12 && (named[0].log10_p - want).abs() < 1e-9);
        // Not among the chosen, the same score is judged among all N: not named.
        let alone =
            Accusation::judge_variants(truth, &between.scores(&p, truth), 1000, Some(0), false);
        assert!(!alone.named(1e-6), "{alone:?}");
        let strong = Residual::new(&p, &chips_of(&p, truth, 0.3, 4)).unwrap();
        let named = accuse(&p, &strong, &releases, 1e-6, Some(3));
        assert_eq!(
            named.iter().map(|a| a.release).collect::<Vec<_>>(),
            vec![truth]
        );
        let best = strong.score(&p, truth);
        let want = stats::log10_p_one_sided(best, 4.0 * n * VARIANTS as f64);
        assert!((named[0].log10_p - want).abs() < 1e-9, "{named:?}");
    }

    /// The attacker's case for the preselection: a strong mark of a release that is not in
    /// the ledger, whose ledger holds releases with the nearest codewords (ids one bit
    /// away) beside random ones. The codeword chooses those neighbours, and their
    /// fingerprint scores are still unit-variance: none is named, over 200 copies (each of
    /// another absent release, so that the chosen fingerprints are fresh draws).
    #[test]
    fn innocents_the_codeword_chooses_are_not_named() {
        let p = KeyPatterns::new(&SecretKey::from_bytes([26; 32]));
        let mut chosen_scores = Vec::new();
        let mut neighbours_chosen = 0;
        for trial in 0..200u64 {
            let absent = (trial + 1).wrapping_mul(0x9E37_79B9_7F4A_7C15);
            let neighbours: Vec<u64> = (0..16).map(|b| absent ^ (1 << (4 * b))).collect();
            let mut releases: Vec<u64> = (0..984u64)
                .map(|i| (i + 1000 * trial).wrapping_mul(0xD1B5_4A32_D192_ED03))
                .collect();
            releases.extend(&neighbours);
            let r = Residual::new(&p, &chips_of(&p, absent, 0.4, 100 + trial)).unwrap();
            assert!(accuse(&p, &r, &releases, 1e-6, Some(0)).is_empty());
            for (&id, chosen) in releases.iter().zip(preselect(&r, &releases, 0)) {
                if chosen {
                    neighbours_chosen += usize::from(neighbours.contains(&id));
                    chosen_scores.push(r.score_variant(&p, id, 0));
                }
            }
        }
        assert_eq!(chosen_scores.len(), 200 * PRESELECT);
        assert_eq!(
            neighbours_chosen,
            200 * PRESELECT,
            "the codeword chose others"
        );
        let m = chosen_scores.len() as f64;
        let mean = chosen_scores.iter().sum::<f64>() / m;
        let var = chosen_scores
            .iter()
            .map(|z| (z - mean).powi(2))
            .sum::<f64>()
            / m;
        assert!(
            mean.abs() < 0.1 && (var - 1.0).abs() < 0.15,
            "mean {mean} var {var}"
        );
        assert!(chosen_scores.iter().all(|z| z.abs() < 5.0));
    }

    /// Searches that read no payload and claimed no mark: the strongest statistic is a
    /// noise alignment, another search's alignment holds a weak mark in variant 5. The
    /// codeword chooses the second, where the release is named; innocents never. A
    /// claimed detection keeps its own alignment.
    #[test]
    fn the_codeword_chooses_the_alignment_that_holds_the_mark() {
        use crate::mark::detect::{DetectOptions, Detector};
        use crate::raster::Plane;
        let key = SecretKey::from_bytes([27; 32]);
        let det = Detector::new(&key);
        let p = det.patterns();
        let mut x = 7u64;
        let data: Vec<f32> = (0..256 * 256)
            .map(|_| {
                x = x.wrapping_mul(6364136223846793005).wrapping_add(1);
                (x >> 56) as f32
            })
            .collect();
        let plane = Plane {
            width: 256,
            height: 256,
            data,
        };
        let base = det.detect(&plane, &DetectOptions::default()).unwrap();
        assert!(!base.marked && base.payload.is_none());
        let truth = 0x00c0_ffee_1234_5678_u64;
        let mut releases: Vec<u64> = (0..1000u64).map(|i| i.wrapping_mul(0x2545_F491)).collect();
        releases.push(truth);
        let noise = chips_of(p, 0, 0.0, 30);
        let marked: Vec<f32> = chips_of(p, truth, 0.11, 31)
            .iter()
            .zip(&p.scramble[5])
            .map(|(&c, &k)| c * f32::from(k))
            .collect();
        let mut primary = base.clone();
        (primary.chips, primary.z, primary.variant) = (noise, 6.5, 2);
        let mut other = base.clone();
        (other.chips, other.z, other.variant) = (marked, 4.0, 5);
        primary.alternatives = vec![base.clone(), other];
        let (i, r) = choose(p, &primary, &releases).unwrap();
        assert_eq!(i, 2);
        let named = accuse(p, &r, &releases, 1e-6, Some(5));
        assert_eq!(
            named.iter().map(|a| a.release).collect::<Vec<_>>(),
            vec![truth]
        );
        // The noise alignment the strongest statistic gave names nobody.
        let (_, r0) = choose(
            p,
            &Detection {
                alternatives: Vec::new(),
                ..primary.clone()
            },
            &releases,
        )
        .unwrap();
        assert!(accuse(p, &r0, &releases, 1e-6, Some(2)).is_empty());
        primary.marked = true;
        assert_eq!(choose(p, &primary, &releases).unwrap().0, 0);
    }

    #[test]
    fn payload_codeword_overlap_does_not_raise_innocents() {
        // A strong mark of release A; release B shares most of A's codeword (ids differ in
        // one bit) but has an independent fingerprint: B must not be named.
        let p = KeyPatterns::new(&SecretKey::from_bytes([22; 32]));
        let a = 0x0f0f_0f0f_0f0f_0f0f;
        let r = Residual::new(&p, &chips_of(&p, a, 1.0, 2)).unwrap();
        let named = accuse(&p, &r, &[a, a ^ 1, a ^ 2], 1e-6, Some(0));
        assert_eq!(named.iter().map(|x| x.release).collect::<Vec<_>>(), vec![a]);
    }

    #[test]
    fn averaged_copies_name_every_colluder() {
        let p = KeyPatterns::new(&SecretKey::from_bytes([23; 32]));
        let colluders = [11u64, 22, 33];
        let mut avg = vec![0f32; N_CHIPS];
        for (i, &c) in colluders.iter().enumerate() {
            for (s, v) in avg.iter_mut().zip(chips_of(&p, c, 0.3, i as u64 + 10)) {
                *s += v / 3.0;
            }
        }
        let r = Residual::new(&p, &avg).unwrap();
        let mut releases: Vec<u64> = (1000..2000u64).collect();
        releases.extend(colluders);
        let named: Vec<u64> = accuse(&p, &r, &releases, 1e-6, Some(0))
            .iter()
            .map(|a| a.release)
            .collect();
        let mut sorted = named.clone();
        sorted.sort();
        assert_eq!(sorted, vec![11, 22, 33]);
    }

    /// Colluders whose copies of one image carry different tile variants are each named.
    #[test]
    fn colluders_in_different_variants_are_each_named() {
        let p = KeyPatterns::new(&SecretKey::from_bytes([24; 32]));
        let colluders = [(11u64, 0usize), (22, 5), (33, 9)];
        let mut avg = vec![0f32; N_CHIPS];
        for (i, &(c, v)) in colluders.iter().enumerate() {
            let chips = chips_of(&p, c, 0.3, i as u64 + 20);
            for ((s, x), &k) in avg.iter_mut().zip(chips).zip(&p.scramble[v]) {
                *s += x * f32::from(k) / 3.0;
            }
        }
        let r = Residual::new(&p, &avg).unwrap();
        let mut releases: Vec<u64> = (1000..2000u64).collect();
        releases.extend(colluders.iter().map(|c| c.0));
        // The sync peak finds one of the variants; the others' colluders are named too.
        let mut named: Vec<u64> = accuse(&p, &r, &releases, 1e-6, Some(5))
            .iter()
            .map(|a| a.release)
            .collect();
        named.sort();
        assert_eq!(named, vec![11, 22, 33]);
    }
}
