//! The corrections that make a restore exact: `x = y - step` holds for every sample but
//! those the stamp clipped at the stored range (and, through a VOI LUT, those whose step the
//! restorer can only estimate). Both are recorded at stamping by running the restorer's own
//! prediction against the original, so the restore is exact by construction:
//!
//! - clip candidates (`y` at a bound the step pushed towards) need no position: the
//!   restorer finds them itself; only the original's offset from the bound is stored;
//! - any other sample whose prediction is wrong is an exception: its distance from the
//!   previous exception and its error, as varints.

/// The restore's side of the corrections ([`Player`]): the original of each sample the
/// stamp may have changed. [`Recorder`] is the stamping side.
pub trait Coder {
    /// The original of the sample at `index` (any increasing numbering), stamped as `y`
    /// after a change of `step` clipped to `lo..=hi`.
    fn sample(&mut self, index: usize, y: i32, step: i64, lo: i32, hi: i32) -> i32;
}

/// The two streams of corrections.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Corrections {
    /// Clip candidates seen (the restorer checks the count).
    pub candidates: u64,
    /// Each candidate's original, as a zigzag varint offset from its bound.
    pub clip: Vec<u8>,
    /// Exceptions recorded.
    pub exceptions: u64,
    /// (gap to the previous exception, zigzag error) varint pairs.
    pub except: Vec<u8>,
}

fn candidate(y: i32, step: i64, lo: i32, hi: i32) -> Option<i32> {
    if y == lo && step < 0 {
        Some(lo)
    } else if y == hi && step > 0 {
        Some(hi)
    } else {
        None
    }
}

fn predict(y: i32, step: i64) -> i64 {
    i64::from(y) - step
}

/// Records corrections at stamping, where the original of every sample is known.
#[derive(Debug, Default)]
pub struct Recorder {
    last: usize,
    /// What has been recorded so far.
    pub corrections: Corrections,
}

impl Recorder {
    /// An empty recorder.
    pub fn new() -> Self {
        Self::default()
    }

    /// Records what the restore of the sample at `index` (original `x`, stamped as `y`
    /// after a change of `step` clipped to `lo..=hi`) needs beyond `y - step`; indices
    /// must increase from call to call.
    #[inline]
    pub fn record(&mut self, index: usize, x: i32, y: i32, step: i64, lo: i32, hi: i32) {
        let c = &mut self.corrections;
        if let Some(bound) = candidate(y, step, lo, hi) {
            c.candidates += 1;
            put_varint(&mut c.clip, zigzag(i64::from(x) - i64::from(bound)));
        } else {
            let err = i64::from(x) - predict(y, step);
            if err != 0 {
                c.exceptions += 1;
                put_varint(&mut c.except, (index - self.last) as u64);
                put_varint(&mut c.except, zigzag(err));
                self.last = index;
            }
        }
    }
}

/// Replays corrections at restore.
pub struct Player<'a> {
    clip: Reader<'a>,
    except: Reader<'a>,
    /// Index of the next exception, if any is left.
    next: Option<(usize, i64)>,
    candidates: u64,
    exceptions_left: u64,
    /// Set when the streams ran out or did not parse: the restore is then refused.
    pub broken: bool,
}

impl<'a> Player<'a> {
    /// A player over recorded corrections.
    pub fn new(c: &'a Corrections) -> Self {
        let mut p = Player {
            clip: Reader::new(&c.clip),
            except: Reader::new(&c.except),
            next: None,
            candidates: 0,
            exceptions_left: c.exceptions,
            broken: false,
        };
        p.advance(0);
        p
    }

    fn advance(&mut self, from: usize) {
        if self.exceptions_left == 0 {
            self.next = None;
            return;
        }
        self.exceptions_left -= 1;
        match (self.except.varint(), self.except.varint()) {
            (Some(gap), Some(err)) => self.next = Some((from + gap as usize, unzigzag(err))),
            _ => {
                self.broken = true;
                self.next = None;
            }
        }
    }

    /// Whether every stream was used exactly: the candidates seen match the count recorded
    /// and nothing is left over.
    pub fn finished(&self, c: &Corrections) -> bool {
        !self.broken
            && self.candidates == c.candidates
            && self.clip.done()
            && self.next.is_none()
            && self.except.done()
    }
}

impl Coder for Player<'_> {
    fn sample(&mut self, index: usize, y: i32, step: i64, lo: i32, hi: i32) -> i32 {
        if let Some(bound) = candidate(y, step, lo, hi) {
            self.candidates += 1;
            return match self.clip.varint() {
                Some(v) => (i64::from(bound) + unzigzag(v)) as i32,
                None => {
                    self.broken = true;
                    y
                }
            };
        }
        let mut x = predict(y, step);
        if let Some((at, err)) = self.next
            && at == index
        {
            x += err;
            self.advance(index);
        }
        x as i32
    }
}

/// Appends `v` as an unsigned LEB128 varint.
pub fn put_varint(out: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        out.push((v as u8) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

/// Signed to unsigned, small magnitudes small.
pub fn zigzag(v: i64) -> u64 {
    ((v << 1) ^ (v >> 63)) as u64
}

/// The inverse of [`zigzag`].
pub fn unzigzag(v: u64) -> i64 {
    ((v >> 1) as i64) ^ -((v & 1) as i64)
}

/// Reads varints and byte strings from a slice.
pub struct Reader<'a> {
    bytes: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    /// A reader at the start of `bytes`.
    pub fn new(bytes: &'a [u8]) -> Self {
        Reader { bytes, pos: 0 }
    }

    /// The next varint; `None` past the end or for more than 64 bits.
    pub fn varint(&mut self) -> Option<u64> {
        let mut v = 0u64;
        for shift in (0..64).step_by(7) {
            let b = *self.bytes.get(self.pos)?;
            self.pos += 1;
            v |= u64::from(b & 0x7F) << shift;
            if b < 0x80 {
                return Some(v);
            }
        }
        None
    }

    /// The next `n` bytes.
    pub fn bytes(&mut self, n: usize) -> Option<&'a [u8]> {
        let end = self.pos.checked_add(n)?;
        let b = self.bytes.get(self.pos..end)?;
        self.pos = end;
        Some(b)
    }

    /// A length-prefixed byte string.
    pub fn blob(&mut self) -> Option<&'a [u8]> {
        let n = usize::try_from(self.varint()?).ok()?;
        self.bytes(n)
    }

    /// Whether everything was read.
    pub fn done(&self) -> bool {
        self.pos == self.bytes.len()
    }
}

/// Appends a length-prefixed byte string.
pub fn put_blob(out: &mut Vec<u8>, b: &[u8]) {
    put_varint(out, b.len() as u64);
    out.extend_from_slice(b);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn recorded_corrections_replay_to_the_original() {
        // Samples 0..=255 stamped with steps that clip at both ends, and a few wrong
        // predictions (as through a LUT).
        let lo = 0;
        let hi = 255;
        let x: Vec<i32> = (0..2000).map(|i| i * 37 % 256).collect();
        let steps: Vec<i64> = (0..2000).map(|i| (i % 9) as i64 - 4).collect();
        let y: Vec<i32> = x
            .iter()
            .zip(&steps)
            .enumerate()
            .map(|(i, (&v, &s))| {
                let t = (i64::from(v) + s).clamp(i64::from(lo), i64::from(hi)) as i32;
                if i % 97 == 0 {
                    t.saturating_add(1).min(hi)
                } else {
                    t
                }
            })
            .collect();
        let mut rec = Recorder::new();
        for i in 0..x.len() {
            rec.record(i, x[i], y[i], steps[i], lo, hi);
        }
        let c = rec.corrections;
        assert!(c.candidates > 0 && c.exceptions > 0);
        let mut play = Player::new(&c);
        let back: Vec<i32> = (0..x.len())
            .map(|i| play.sample(i, y[i], steps[i], lo, hi))
            .collect();
        assert_eq!(back, x);
        assert!(play.finished(&c));
        // A stamped value changed after stamping is restored wrongly, not silently right:
        // the pixel hash catches it.
        let mut y2 = y.clone();
        y2[500] ^= 1;
        let mut play = Player::new(&c);
        let back: Vec<i32> = (0..x.len())
            .map(|i| play.sample(i, y2[i], steps[i], lo, hi))
            .collect();
        assert_ne!(back, x);
    }

    #[test]
    fn varints_round_trip() {
        let mut out = Vec::new();
        for v in [0u64, 1, 127, 128, 300, u64::MAX] {
            put_varint(&mut out, v);
        }
        let mut r = Reader::new(&out);
        for v in [0u64, 1, 127, 128, 300, u64::MAX] {
            assert_eq!(r.varint(), Some(v));
        }
        assert!(r.done());
        for v in [0i64, -1, 1, i64::MIN, i64::MAX] {
            assert_eq!(unzigzag(zigzag(v)), v);
        }
    }
}
