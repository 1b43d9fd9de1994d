//! Content binding (issue 10): a compact descriptor of each released image, kept in the
//! ledger, and the test of whether a copy shows the content of a released image.
//!
//! A mark proves that a release's pattern is present; it does not prove that the image is
//! one of the release's files: a stamped copy's mark can be estimated and pasted onto any
//! other image. The descriptor closes that gap. It is the mean display level of square
//! cells (8 px on images up to 1024 px a side, coarser on larger ones, at most 128 cells
//! along the longer side: 1 byte a cell, at most 16 KB), stored sealed in the ledger. It
//! describes the image before marking: a descriptor of the marked image holds the mark
//! where the image is flat, and a copy made of the mark alone correlates with it there.
//!
//! A copy is compared with a descriptor in the released image's own frame: the sync gives
//! the geometry (scale, rotation, aspect, the tile origin modulo 128 px), so each cell of
//! the copy is averaged from the pixels that map into it, and only the tile offset (a
//! multiple of 128 px: where a crop came from) is searched. The statistic is the
//! correlation of the two grids' cell-level Laplacians (detail, not brightness), each
//! replaced by its rank (so any monotone tone change, window change or gamma leaves it
//! unchanged; inversion is known from the sync's sign). Under the null (the copy is not
//! that image), Fisher's `z = atanh(r) sqrt((n - 3) / kappa)` is approximately standard
//! normal, where `kappa = sum_l rho_copy(l) rho_original(l)` over lags up to 2 cells is
//! Bartlett's variance inflation for two spatially correlated fields, and `n` counts the
//! overlap's cells only as far as both sides spread their detail over them (an image flat
//! but for a few details counts as a few cells: `effective_cells`). The p-value counts
//! every tile offset tried; a match also needs `r >= MIN_CORRELATION`, which an unrelated
//! image does not reach (measured in the tests and the forgery benchmark).

use crate::mark::pattern::TILE;
use crate::raster::Plane;
use crate::stats;

/// Smallest cell side, px.
pub const MIN_CELL: usize = 8;
/// Largest cell side, px (a divisor of the tile, so tile offsets are whole cells).
pub const MAX_CELL: usize = TILE;
/// The longer side of the grid, in cells, is at most this (unless the cell is capped).
const MAX_GRID: usize = 128;
/// Fewest cell features a comparison needs (a 10 x 10 cell overlap: 80 x 80 px at 8 px
/// cells), on each side and counted as effective cells (`effective_cells`): an overlap
/// flat but for a few details is too little to compare.
pub const MIN_FEATURES: usize = 64;
/// The rank correlation a content match needs besides its p-value: the copy must look like
/// the released image, not merely be statistically related to it.
pub const MIN_CORRELATION: f64 = 0.5;
/// Cell details (Laplacians, display levels) smaller than this count as none.
const DEAD_ZONE: f32 = 1.0;
/// Largest lag (cells) of the variance inflation.
const LAGS: isize = 2;
/// Fraction of a cell's expected samples a copy cell needs to count.
const MIN_COVERAGE: f64 = 0.75;
/// Largest copy footprint, in cells (a bound on memory for absurd geometries).
const MAX_FOOTPRINT_CELLS: usize = 1 << 22;

const MAGIC: &[u8; 4] = b"TMC1";

/// The descriptor of one released image (or frame).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Descriptor {
    /// Image width, px.
    pub width: u32,
    /// Image height, px.
    pub height: u32,
    /// Cell side, px.
    pub cell: u16,
    /// Cells across (whole cells only).
    pub cols: u16,
    /// Cells down.
    pub rows: u16,
    /// Mean display level of each cell, rounded, row-major.
    pub cells: Vec<u8>,
}

/// The cell side for an image `width x height`.
pub fn cell_side(width: usize, height: usize) -> usize {
    let mut cell = MIN_CELL;
    while cell < MAX_CELL && width.max(height) > cell * MAX_GRID {
        cell *= 2;
    }
    cell
}

/// Describes a display plane (8-bit display units).
pub fn describe(plane: &Plane) -> Descriptor {
    let (w, h) = (plane.width, plane.height);
    let cell = cell_side(w, h);
    let (cols, rows) = (w / cell, h / cell);
    // Row sums of each cell in f32 (at most 128 values of at most 255), cells in f64.
    let mut sums = vec![0f64; cols];
    let mut cells = Vec::with_capacity(cols * rows);
    for gy in 0..rows {
        sums.iter_mut().for_each(|s| *s = 0.0);
        for y in gy * cell..(gy + 1) * cell {
            let row = &plane.data[y * w..y * w + cols * cell];
            for (s, chunk) in sums.iter_mut().zip(row.chunks_exact(cell)) {
                *s += f64::from(chunk.iter().sum::<f32>());
            }
        }
        let n = (cell * cell) as f64;
        cells.extend(sums.iter().map(|s| (s / n).round().clamp(0.0, 255.0) as u8));
    }
    Descriptor {
        width: w as u32,
        height: h as u32,
        cell: cell as u16,
        cols: cols as u16,
        rows: rows as u16,
        cells,
    }
}

/// Serialises descriptors (one per image or frame of a file).
pub fn encode(descriptors: &[Descriptor]) -> Vec<u8> {
    let mut out = Vec::new();
    out.extend_from_slice(MAGIC);
    out.extend_from_slice(&(descriptors.len() as u32).to_be_bytes());
    for d in descriptors {
        out.extend_from_slice(&d.width.to_be_bytes());
        out.extend_from_slice(&d.height.to_be_bytes());
        out.extend_from_slice(&d.cell.to_be_bytes());
        out.extend_from_slice(&d.cols.to_be_bytes());
        out.extend_from_slice(&d.rows.to_be_bytes());
        out.extend_from_slice(&d.cells);
    }
    out
}

/// Parses [`encode`]'s output; `None` when it is not one.
pub fn decode(bytes: &[u8]) -> Option<Vec<Descriptor>> {
    let mut rest = bytes.strip_prefix(MAGIC)?;
    let mut take = |n: usize| -> Option<&[u8]> {
        let (a, b) = rest.split_at_checked(n)?;
        rest = b;
        Some(a)
    };
    let count = u32::from_be_bytes(take(4)?.try_into().ok()?);
    let mut out = Vec::new();
    for _ in 0..count {
        let width = u32::from_be_bytes(take(4)?.try_into().ok()?);
        let height = u32::from_be_bytes(take(4)?.try_into().ok()?);
        let cell = u16::from_be_bytes(take(2)?.try_into().ok()?);
        let cols = u16::from_be_bytes(take(2)?.try_into().ok()?);
        let rows = u16::from_be_bytes(take(2)?.try_into().ok()?);
        if cell == 0 || !TILE.is_multiple_of(usize::from(cell)) {
            return None;
        }
        let cells = take(usize::from(cols) * usize::from(rows))?.to_vec();
        out.push(Descriptor {
            width,
            height,
            cell,
            cols,
            rows,
            cells,
        });
    }
    rest.is_empty().then_some(out)
}

/// Where each pixel of a copy lies in the stamped original: `p = linear * (x, y) + offset`,
/// modulo the tile (128 px) in each axis. From the detector's geometry.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Registration {
    /// Row-major 2 x 2 map from copy pixels to original pixels.
    pub linear: [f64; 4],
    /// Offset, px (modulo the tile).
    pub offset: [f64; 2],
}

impl Registration {
    /// The copy is the original (no geometry change).
    pub fn identity() -> Self {
        Registration {
            linear: [1.0, 0.0, 0.0, 1.0],
            offset: [0.0, 0.0],
        }
    }

    fn map(&self, x: f64, y: f64) -> (f64, f64) {
        let [a, b, c, d] = self.linear;
        (
            a * x + b * y + self.offset[0],
            c * x + d * y + self.offset[1],
        )
    }

    /// Where the corners of a `width x height` copy lie in the original (px; top left, top
    /// right, bottom right, bottom left), with the tile offset a content match found.
    pub fn corners(&self, width: usize, height: usize, tile_shift: [i64; 2]) -> [[f64; 2]; 4] {
        let (w, h) = (width as f64, height as f64);
        [(0.0, 0.0), (w, 0.0), (w, h), (0.0, h)].map(|(x, y)| {
            let (u, v) = self.map(x, y);
            [u + tile_shift[0] as f64, v + tile_shift[1] as f64]
        })
    }

    /// Original pixels per copy pixel (the inverse of the copy's scale).
    fn magnification(&self) -> f64 {
        let [a, b, c, d] = self.linear;
        (a * d - b * c).abs().sqrt()
    }
}

/// The outcome of comparing a copy with one descriptor.
#[derive(Clone, Debug, PartialEq)]
pub struct ContentMatch {
    /// Rank correlation of the cell details at the best tile offset, as a magnitude (an
    /// inverted copy correlates negatively).
    pub r: f64,
    /// Its null z (Fisher, variance-inflated).
    pub z: f64,
    /// log10 of the chance-match probability, every tile offset counted.
    pub log10_p: f64,
    /// Cell features compared at the best offset.
    pub cells: usize,
    /// Tile offsets tried.
    pub offsets: usize,
    /// Where the copy's (0, 0) lies in the original at the best offset, px.
    pub origin: [i64; 2],
    /// The best tile offset, px (multiples of the tile): the registration, known modulo the
    /// tile, plus this is where the copy's pixels lie in the original.
    pub tile_shift: [i64; 2],
}

impl ContentMatch {
    /// Whether this is a match at chance probability `max_p` (after a further factor of
    /// `tests` for the descriptors compared).
    pub fn matches(&self, max_p: f64, tests: usize) -> bool {
        self.r >= MIN_CORRELATION && self.log10_p_among(tests) <= max_p.log10()
    }

    /// log10 of the chance-match probability with a further factor of `tests` for the
    /// descriptors compared (at most 0: a probability).
    pub fn log10_p_among(&self, tests: usize) -> f64 {
        (self.log10_p + (tests.max(1) as f64).log10()).min(0.0)
    }
}

/// A grid of cell values with validity, and its cell-level Laplacian ranks.
struct Grid {
    cols: usize,
    rows: usize,
    /// Rank of the Laplacian, normalised to zero mean and unit variance over valid cells;
    /// NaN where the Laplacian is undefined.
    feature: Vec<f32>,
    /// Autocorrelation of `feature` at lags `-LAGS..=LAGS` in each axis.
    acf: Vec<f64>,
}

impl Grid {
    fn new(cols: usize, rows: usize, values: &[f32]) -> Grid {
        let at = |x: usize, y: usize| values[y * cols + x];
        let mut lap = vec![f32::NAN; cols * rows];
        for y in 1..rows.saturating_sub(1) {
            for x in 1..cols.saturating_sub(1) {
                let v = at(x, y);
                let n = at(x - 1, y) + at(x + 1, y) + at(x, y - 1) + at(x, y + 1);
                // NaN when any input is NaN. Details below one level are no detail: a
                // mark pasted onto a flat image must not rank as structure.
                let l = v - n / 4.0;
                lap[y * cols + x] = if l.abs() < DEAD_ZONE { 0.0 } else { l };
            }
        }
        let mut order: Vec<usize> = (0..lap.len()).filter(|&i| lap[i].is_finite()).collect();
        order.sort_by(|&a, &b| lap[a].total_cmp(&lap[b]));
        let n = order.len();
        let mut feature = vec![f32::NAN; cols * rows];
        // Mid-ranks for ties, centred and scaled to unit variance.
        let mut i = 0;
        let sd = ((n * n) as f64 / 12.0).sqrt().max(1e-9);
        while i < n {
            let mut j = i;
            while j + 1 < n && lap[order[j + 1]] == lap[order[i]] {
                j += 1;
            }
            let rank = (i + j) as f64 / 2.0 - (n as f64 - 1.0) / 2.0;
            for &k in &order[i..=j] {
                feature[k] = (rank / sd) as f32;
            }
            i = j + 1;
        }
        let mut g = Grid {
            cols,
            rows,
            feature,
            acf: Vec::new(),
        };
        g.acf = g.autocorrelation();
        g
    }

    fn autocorrelation(&self) -> Vec<f64> {
        let side = (2 * LAGS + 1) as usize;
        let mut out = vec![0f64; side * side];
        for ly in -LAGS..=LAGS {
            for lx in -LAGS..=LAGS {
                let (mut sxy, mut sxx, mut syy) = (0f64, 0f64, 0f64);
                for y in 0..self.rows as isize {
                    for x in 0..self.cols as isize {
                        let (x2, y2) = (x + lx, y + ly);
                        if x2 < 0 || y2 < 0 || x2 >= self.cols as isize || y2 >= self.rows as isize
                        {
                            continue;
                        }
                        let a = self.feature[(y * self.cols as isize + x) as usize];
                        let b = self.feature[(y2 * self.cols as isize + x2) as usize];
                        if a.is_finite() && b.is_finite() {
                            sxy += f64::from(a) * f64::from(b);
                            sxx += f64::from(a) * f64::from(a);
                            syy += f64::from(b) * f64::from(b);
                        }
                    }
                }
                let r = if sxx > 0.0 && syy > 0.0 {
                    sxy / (sxx * syy).sqrt()
                } else {
                    0.0
                };
                out[((ly + LAGS) as usize) * side + (lx + LAGS) as usize] = r;
            }
        }
        out
    }
}

/// The copy's cells in the original's frame (at tile offset zero): its grid, and where the
/// grid's cell (0, 0) lies in original cells.
struct CopyCells {
    grid: Grid,
    x0: i64,
    y0: i64,
}

fn copy_cells(copy: &Plane, reg: &Registration, cell: usize) -> Option<CopyCells> {
    let (w, h) = (copy.width as f64, copy.height as f64);
    let corners = [(0.0, 0.0), (w, 0.0), (0.0, h), (w, h)].map(|(x, y)| reg.map(x, y));
    let c = cell as f64;
    let lo = |i: usize| {
        corners
            .iter()
            .map(|p| if i == 0 { p.0 } else { p.1 })
            .fold(f64::INFINITY, f64::min)
    };
    let hi = |i: usize| {
        corners
            .iter()
            .map(|p| if i == 0 { p.0 } else { p.1 })
            .fold(f64::NEG_INFINITY, f64::max)
    };
    let (x0, y0) = ((lo(0) / c).floor() as i64, (lo(1) / c).floor() as i64);
    let (x1, y1) = ((hi(0) / c).floor() as i64, (hi(1) / c).floor() as i64);
    let (cols, rows) = ((x1 - x0 + 1) as usize, (y1 - y0 + 1) as usize);
    if cols.checked_mul(rows)? > MAX_FOOTPRINT_CELLS || cols < 3 || rows < 3 {
        return None;
    }
    // Copy pixels per original cell side; sample every `step`-th pixel when there are many.
    let per_cell = c / reg.magnification();
    let step = ((per_cell / 6.0).floor() as usize).max(1);
    let expected = (per_cell / step as f64).powi(2);
    let mut sum = vec![0f32; cols * rows];
    let mut count = vec![0u32; cols * rows];
    let [a, b, cc, d] = reg.linear;
    let inv = 1.0 / c;
    for y in (0..copy.height).step_by(step) {
        let row = &copy.data[y * copy.width..(y + 1) * copy.width];
        let yf = y as f64 + 0.5;
        let (mut u, mut v) = (
            (a * 0.5 + b * yf + reg.offset[0]) * inv - x0 as f64,
            (cc * 0.5 + d * yf + reg.offset[1]) * inv - y0 as f64,
        );
        let (du, dv) = (a * step as f64 * inv, cc * step as f64 * inv);
        for x in (0..copy.width).step_by(step) {
            let (gx, gy) = (u.floor(), v.floor());
            if gx >= 0.0 && gy >= 0.0 && (gx as usize) < cols && (gy as usize) < rows {
                let k = gy as usize * cols + gx as usize;
                let val = row[x];
                sum[k] += val;
                count[k] += 1;
            }
            u += du;
            v += dv;
        }
    }
    let values: Vec<f32> = sum
        .iter()
        .zip(&count)
        .map(|(&s, &n)| {
            if f64::from(n) >= MIN_COVERAGE * expected {
                // Whole levels, as the descriptor keeps them.
                (s / n as f32).round()
            } else {
                f32::NAN
            }
        })
        .collect();
    Some(CopyCells {
        grid: Grid::new(cols, rows, &values),
        x0,
        y0,
    })
}

/// Compares a copy (display plane) with one released image's descriptor, in the original's
/// frame given by `reg`; searches the tile offset. `None` when the copy and the original
/// cannot overlap by [`MIN_FEATURES`] cells at any offset, or no overlap holds that many
/// effective cells of detail on both sides.
pub fn compare(copy: &Plane, reg: &Registration, d: &Descriptor) -> Option<ContentMatch> {
    compare_cells(&copy_cells(copy, reg, usize::from(d.cell))?, d)
}

/// [`compare`] with the copy's cells already accumulated at the descriptor's cell size.
fn compare_cells(cc: &CopyCells, d: &Descriptor) -> Option<ContentMatch> {
    let cell = usize::from(d.cell);
    let (cols, rows) = (usize::from(d.cols), usize::from(d.rows));
    if cols < 3 || rows < 3 || d.cells.len() != cols * rows {
        return None;
    }
    let values: Vec<f32> = d.cells.iter().map(|&v| f32::from(v)).collect();
    let original = Grid::new(cols, rows, &values);
    let side = (2 * LAGS + 1) as usize;
    let kappa = (0..side * side)
        .map(|i| cc.grid.acf[i] * original.acf[i])
        .sum::<f64>()
        .max(1.0);
    let step = (TILE / cell) as i64;
    // Tile offsets (kx, ky) whose placement overlaps the original.
    let (gc, gr) = (cc.grid.cols as i64, cc.grid.rows as i64);
    let range = |origin: i64, len: i64, extent: i64| {
        let lo = (-(origin + len) as f64 / step as f64).floor() as i64;
        let hi = ((extent - origin) as f64 / step as f64).ceil() as i64;
        lo..=hi
    };
    let mut best: Option<ContentMatch> = None;
    let mut offsets = 0usize;
    for ky in range(cc.y0, gr, rows as i64) {
        for kx in range(cc.x0, gc, cols as i64) {
            let (ox, oy) = (cc.x0 + kx * step, cc.y0 + ky * step);
            let (mut n, mut sxy) = (0usize, 0f64);
            let (mut a_sums, mut b_sums) = (Moments::default(), Moments::default());
            for gy in 0..gr {
                let y = gy + oy;
                if y < 0 || y >= rows as i64 {
                    continue;
                }
                for gx in 0..gc {
                    let x = gx + ox;
                    if x < 0 || x >= cols as i64 {
                        continue;
                    }
                    let a = cc.grid.feature[(gy * gc + gx) as usize];
                    let b = original.feature[(y as usize) * cols + x as usize];
                    if a.is_finite() && b.is_finite() {
                        let (a, b) = (f64::from(a), f64::from(b));
                        n += 1;
                        sxy += a * b;
                        a_sums.add(a);
                        b_sums.add(b);
                    }
                }
            }
            if n < MIN_FEATURES {
                continue;
            }
            offsets += 1;
            let nf = n as f64;
            let cov = sxy - a_sums.s1 * b_sums.s1 / nf;
            let (va, vb) = (a_sums.centred_square(nf), b_sums.centred_square(nf));
            let r = if va > 0.0 && vb > 0.0 {
                (cov / (va * vb).sqrt()).clamp(-0.999_999, 0.999_999)
            } else {
                0.0
            };
            // Either polarity: an inverted copy shows the image with every detail's sign
            // flipped. (The sync's sign does not say: a copy from which another variant's
            // pattern was subtracted carries that pattern inverted.)
            // The cells count as samples only as far as both sides spread their detail
            // over them: a side whose overlap is flat but for a few cells (the rest tied
            // in the dead zone) correlates with the other side's few strongest cells, not
            // with its image (see `effective_cells`).
            let n_eff = effective_cells(nf, &a_sums).min(effective_cells(nf, &b_sums));
            if n_eff < MIN_FEATURES as f64 {
                // Tried (and counted), but too little detail on one side to compare.
                continue;
            }
            let z = r.abs().atanh() * ((n_eff - 3.0) / kappa).sqrt();
            if best.as_ref().is_none_or(|b| z > b.z) {
                best = Some(ContentMatch {
                    r: r.abs(),
                    z,
                    log10_p: 0.0,
                    cells: n,
                    offsets: 0,
                    origin: [ox * cell as i64, oy * cell as i64],
                    tile_shift: [kx * TILE as i64, ky * TILE as i64],
                });
            }
        }
    }
    best.map(|mut m| {
        m.offsets = offsets;
        m.log10_p = stats::log10_p_one_sided(m.z, 2.0 * offsets as f64);
        m
    })
}

/// Running power sums of one side's features over an overlap.
#[derive(Default)]
struct Moments {
    s1: f64,
    s2: f64,
    s3: f64,
    s4: f64,
}

impl Moments {
    fn add(&mut self, v: f64) {
        let v2 = v * v;
        self.s1 += v;
        self.s2 += v2;
        self.s3 += v2 * v;
        self.s4 += v2 * v2;
    }

    /// The sum of squared deviations from the mean over `n` values.
    fn centred_square(&self, n: f64) -> f64 {
        self.s2 - self.s1 * self.s1 / n
    }
}

/// The number of cells `n` values are worth as samples of a correlation: `n` when they
/// spread like a normal field, fewer the more their variance sits in a few cells
/// (`3 m2^2 / m4`, the participation ratio scaled so that a normal field counts all its
/// cells; a field tied but for one cell counts about 3).
///
/// Why: under the null, a correlation's spread is `1 / sqrt(n)` whatever the fields, but
/// its tails are not normal when both fields are sparse (its excess kurtosis grows as
/// the product of theirs over `n`): two overlaps tied but for a handful of cells reach
/// r = 0.5 and more whenever a copy's few details land on the original's few, which
/// Fisher's z over all the cells called a 1e-12 event (the forgery test: a gradient with
/// a pasted mark against a corner of a retina photo, r 0.65 at p 2e-15). Taking the
/// smaller side's effective cells leaves two dense fields' count as it was and makes a
/// sparse pair's p-value conservative (the tests measure random sparse pairs).
fn effective_cells(n: f64, m: &Moments) -> f64 {
    let mean = m.s1 / n;
    let m2 = (m.s2 / n - mean * mean).max(0.0);
    let m4 = m.s4 / n - 4.0 * mean * m.s3 / n + 6.0 * mean * mean * m.s2 / n - 3.0 * mean.powi(4);
    if m2 <= 0.0 || m4 <= 0.0 {
        return 0.0;
    }
    (3.0 * n * m2 * m2 / m4).min(n)
}

/// The best match of a copy among several descriptors (the files and frames of one
/// release), as its index and the comparison; [`ContentMatch::matches`] should then be
/// judged with `descriptors.len()` tests.
pub fn best_match(
    copy: &Plane,
    reg: &Registration,
    descriptors: &[&Descriptor],
) -> Option<(usize, ContentMatch)> {
    // The copy is accumulated once per cell size (a release's files mostly share one).
    let mut cells: Vec<(u16, Option<CopyCells>)> = Vec::new();
    let mut best: Option<(usize, ContentMatch)> = None;
    for (i, d) in descriptors.iter().enumerate() {
        let k = match cells.iter().position(|(c, _)| *c == d.cell) {
            Some(k) => k,
            None => {
                cells.push((d.cell, copy_cells(copy, reg, usize::from(d.cell))));
                cells.len() - 1
            }
        };
        let Some(cc) = &cells[k].1 else { continue };
        if let Some(m) = compare_cells(cc, d)
            && best.as_ref().is_none_or(|b| m.z > b.1.z)
        {
            best = Some((i, m));
        }
    }
    best
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testsignal::photo_like;

    fn crop(p: &Plane, x0: usize, y0: usize, w: usize, h: usize) -> Plane {
        let mut data = Vec::with_capacity(w * h);
        for y in y0..y0 + h {
            data.extend_from_slice(&p.data[y * p.width + x0..y * p.width + x0 + w]);
        }
        Plane::from_vec(w, h, data)
    }

    #[test]
    fn descriptors_round_trip_and_reject_garbage() {
        let d = vec![
            describe(&photo_like(300, 200, 1)),
            describe(&photo_like(4000, 130, 2)),
        ];
        assert_eq!(d[0].cell, 8);
        assert_eq!((d[0].cols, d[0].rows), (37, 25));
        assert_eq!(d[1].cell, 32);
        let bytes = encode(&d);
        assert_eq!(decode(&bytes), Some(d));
        assert_eq!(decode(&bytes[..bytes.len() - 1]), None);
        assert_eq!(decode(b"TMC1\0\0\0\x01garbage"), None);
        assert_eq!(decode(b""), None);
    }

    #[test]
    fn a_crop_matches_its_original_and_another_image_does_not() {
        let a = photo_like(640, 512, 3);
        // Another scene: the same kind of image, mirrored.
        let mut b = photo_like(640, 512, 4);
        b.data.chunks_exact_mut(640).for_each(<[f32]>::reverse);
        let d = describe(&a);
        // A crop whose origin is on the tile grid plus (37, 21): the registration carries
        // the part modulo the tile, the search finds the multiple of the tile.
        let c = crop(&a, 256 + 37, 128 + 21, 300, 280);
        let reg = Registration {
            offset: [37.0, 21.0],
            ..Registration::identity()
        };
        let m = compare(&c, &reg, &d).unwrap();
        assert!(m.matches(1e-6, 1), "{m:?}");
        assert_eq!(m.origin, [256 + 32, 128 + 16]);
        let other = compare(&crop(&b, 256 + 37, 128 + 21, 300, 280), &reg, &d).unwrap();
        assert!(!other.matches(1e-6, 1), "{other:?}");
        // Among a release's descriptors (one at another cell size), the right one is found.
        let big = describe(&photo_like(3000, 200, 5));
        let db = describe(&b);
        let (i, m) = best_match(&c, &reg, &[&db, &big, &d]).unwrap();
        assert_eq!(i, 2);
        assert!(m.matches(1e-6, 3), "{m:?}");
    }

    /// `count` random cells, each in `1..=side` along both axes.
    fn random_cells(
        rng: &mut rand_chacha::ChaCha20Rng,
        count: usize,
        side: u32,
    ) -> Vec<(usize, usize)> {
        let mut cell = || 1 + crate::prng::below(rng, side) as usize;
        (0..count).map(|_| (cell(), cell())).collect()
    }

    /// A seeded stream for the tests' random draws.
    fn test_rng(label: &[u8]) -> rand_chacha::ChaCha20Rng {
        crate::prng::stream(&crate::SecretKey::from_bytes([9; 32]), &[label])
    }

    /// A `w x h` plane of `ground` with 8-px squares at level 220 at the given cells.
    fn spots(w: usize, h: usize, ground: f32, cells: &[(usize, usize)]) -> Plane {
        let mut p = Plane::from_vec(w, h, vec![ground; w * h]);
        for &(cx, cy) in cells {
            for y in cy * 8..cy * 8 + 8 {
                p.data[y * w + cx * 8..y * w + cx * 8 + 8].fill(220.0);
            }
        }
        p
    }

    /// The forgery test's false naming in miniature: a gradient bearing a pasted mark
    /// against a retina photo's black border, each flat but for a few cells' detail. A
    /// copy's one detail landing on one of the original's correlates at r = 1.0, which
    /// Fisher's z over every cell of the overlap called p = 1e-4199; of the random sparse
    /// pairs below, 11 of 400 matched at p <= 1e-3 (both checked without the effective-cell
    /// count).
    #[test]
    fn a_few_shared_details_on_flat_images_are_no_match() {
        let d = describe(&spots(512, 512, 0.0, &[(40, 44), (50, 20), (10, 10)]));
        // The copy's cell (8, 12) lies on the original's (40, 44) at the tile offset
        // (256, 256).
        let copy = spots(256, 256, 128.0, &[(8, 12)]);
        let m = compare(&copy, &Registration::identity(), &d);
        assert!(m.as_ref().is_none_or(|m| !m.matches(1e-3, 1)), "{m:?}");

        // Random sparse pairs: as many chance matches at p <= 1e-3 as the p-value allows.
        let mut rng = test_rng(b"sparse pairs");
        let (trials, mut compared, mut matched) = (400, 0, 0);
        for t in 0..trials {
            // 2 to 17 details in the copy, four times as many over the original's 4x area.
            let k = 2 + t % 16;
            let orig = random_cells(&mut rng, 4 * k, 62);
            let mine = random_cells(&mut rng, k, 30);
            let d = describe(&spots(512, 512, 0.0, &orig));
            let copy = spots(256, 256, 128.0, &mine);
            if let Some(m) = compare(&copy, &Registration::identity(), &d) {
                compared += 1;
                matched += usize::from(m.matches(1e-3, 1));
            }
        }
        assert!(compared >= trials / 4, "{compared} of {trials} compared");
        assert!(matched <= 2, "{matched} of {trials} matched at p <= 1e-3");
    }

    /// A sparse image is still recognised in a copy of it: a field of 60 small stars on
    /// black, cropped.
    #[test]
    fn a_copy_of_a_sparse_image_still_matches() {
        let stars = random_cells(&mut test_rng(b"stars"), 60, 62);
        let sky = spots(512, 512, 0.0, &stars);
        let d = describe(&sky);
        let m = compare(
            &crop(&sky, 128, 128, 256, 256),
            &Registration::identity(),
            &d,
        )
        .unwrap();
        assert!(m.matches(1e-6, 1), "{m:?}");
        assert_eq!(m.origin, [128, 128]);
    }
}
