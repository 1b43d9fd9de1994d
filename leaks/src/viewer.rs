//! Leaks through screens and viewers: a copy pasted into a viewer-like screenshot, a photo
//! of a screen (perspective), and a DICOM viewer's 8-bit exports.

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha20Rng;
use tracemark::io::dicom::Window;
use tracemark::mark::keystone;
use tracemark::raster::{Plane, Raster};

use crate::{Filter, from_f32, scale, to_f32};

/// Pastes `r`, scaled by `factor`, into a viewer-like screenshot: a dark canvas 30 % larger
/// with a light toolbar of dark text-like marks on top and a thin frame round the image.
pub fn screenshot(r: &Raster, factor: f64, seed: u64) -> Raster {
    let img = scale(r, factor, Filter::Triangle);
    let img = if img.colour_channels() == 1 {
        img
    } else {
        drop_alpha(&img)
    };
    let c = img.channels;
    let toolbar = 36;
    let (cw, ch) = (img.width * 13 / 10, img.height * 13 / 10 + toolbar);
    let mut out = vec![40f32; cw * ch * c];
    let mut rng = ChaCha20Rng::seed_from_u64(seed);
    for y in 0..toolbar {
        for x in 0..cw {
            for k in 0..c {
                out[(y * cw + x) * c + k] = 215.0;
            }
        }
    }
    // "Text": short dark strokes in two lines, like labels and menu entries.
    for line in 0..2 {
        let mut x = 8;
        while x + 12 < cw {
            let word = 3 + (rng.next_u32() % 8) as usize;
            for _ in 0..word {
                let gw = 4 + (rng.next_u32() % 3) as usize;
                let gh = 7 + (rng.next_u32() % 4) as usize;
                let y0 = 6 + line * 14 + (10 - gh.min(10));
                for yy in y0..(y0 + gh).min(toolbar) {
                    for xx in x..(x + gw).min(cw) {
                        for k in 0..c {
                            out[(yy * cw + xx) * c + k] = 25.0;
                        }
                    }
                }
                x += gw + 1;
            }
            x += 7;
        }
    }
    let (ox, oy) = (
        (cw - img.width) / 2,
        toolbar + (ch - toolbar - img.height) / 2,
    );
    let src = to_f32(&img);
    for y in 0..img.height + 4 {
        for x in 0..img.width + 4 {
            let (cx, cy) = (ox + x - 2, oy + y - 2);
            let inside = x >= 2 && y >= 2 && x < img.width + 2 && y < img.height + 2;
            for k in 0..c {
                out[(cy * cw + cx) * c + k] = if inside {
                    src[((y - 2) * img.width + x - 2) * c + k]
                } else {
                    255.0
                };
            }
        }
    }
    from_f32(cw, ch, c, &out)
}

fn drop_alpha(r: &Raster) -> Raster {
    if r.channels == 3 || r.channels == 1 {
        return r.clone();
    }
    let v = to_f32(r);
    let cc = r.colour_channels();
    let out: Vec<f32> = v
        .chunks_exact(r.channels)
        .flat_map(|p| p[..cc].to_vec())
        .collect();
    from_f32(r.width, r.height, cc, &out)
}

/// Mild perspective: the four corners move inwards by up to `amount` of the size
/// (seeded), bilinear, black outside.
pub fn perspective(r: &Raster, amount: f64, seed: u64) -> Raster {
    let mut rng = ChaCha20Rng::seed_from_u64(seed);
    let (w, h) = (r.width as f64, r.height as f64);
    let mut jitter = |s: f64| s * amount * (0.5 + 0.5 * (rng.next_u32() as f64 / u32::MAX as f64));
    // Destination corners of the source corners (0,0), (w,0), (w,h), (0,h).
    let dst = [
        (jitter(w), jitter(h)),
        (w - jitter(w), jitter(h)),
        (w - jitter(w), h - jitter(h)),
        (jitter(w), h - jitter(h)),
    ];
    let src = [(0.0, 0.0), (w, 0.0), (w, h), (0.0, h)];
    // Homography from destination to source (inverse mapping).
    let hm = keystone::homography(&dst, &src);
    let size = (r.width, r.height);
    let out = keystone::warp_interleaved(&to_f32(r), size, r.channels, &hm, size, 0.0);
    from_f32(r.width, r.height, r.channels, &out)
}

/// A DICOM viewer's 8-bit exports of an image whose own window is `w` (design.md section 4):
/// the own window, the width changed by -30 % and +30 %, the centre moved by +15 % and -15 %
/// of the width, and the own window with MONOCHROME1 ignored. Each is (name, window,
/// whether MONOCHROME1 is honoured), for [`tracemark::io::dicom::DicomImage::export_8bit`].
pub fn viewer_exports(w: Window) -> [(&'static str, Window, bool); 6] {
    let width = |f: f64| Window {
        width: w.width * f,
        ..w
    };
    let centre = |f: f64| Window {
        center: w.center + f * w.width,
        ..w
    };
    [
        ("own window", w, true),
        ("width -30 %", width(0.7), true),
        ("width +30 %", width(1.3), true),
        ("centre +15 %", centre(0.15), true),
        ("centre -15 %", centre(-0.15), true),
        ("MONOCHROME1 ignored", w, false),
    ]
}

/// The geometry of [`screen_photo`]: where each pixel of the photo looks on the original
/// (a homography; the photo has the original's size). Coordinates are continuous, with
/// pixel `i`'s centre at `i + 0.5`.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct ScreenMap {
    /// From the photo to the screen's sub-pixels (3 per original pixel).
    to_screen: [f64; 8],
    /// From the original to the photo.
    to_photo: [f64; 8],
}

impl ScreenMap {
    /// The map of `screen_photo(r, tilt_deg, seed)` for an original of `width x height`.
    pub fn new(width: usize, height: usize, tilt_deg: f64, seed: u64) -> Self {
        let mut rng = ChaCha20Rng::seed_from_u64(seed);
        let mut unit = || rng.next_u32() as f64 / f64::from(u32::MAX);
        // The camera: destination corners of the screen's corners, in an output frame of
        // the image's size; a keystone towards a seeded edge, and a small turn.
        let t = tilt_deg.to_radians().tan() / 2.0 * (0.5 + 0.5 * unit());
        let turn = (unit() - 0.5) * 4f64.to_radians();
        let (fw, fh) = (width as f64, height as f64);
        let margin = 0.04;
        let mut corners = [
            (margin, margin),
            (1.0 - margin, margin),
            (1.0 - margin, 1.0 - margin),
            (margin, 1.0 - margin),
        ];
        // Which edge is far: top, right, bottom or left.
        let edge = (unit() * 4.0) as usize % 4;
        let (a, b) = (edge, (edge + 1) % 4);
        let centre = (0.5, 0.5);
        for i in [a, b] {
            let other = if i == a { b } else { a };
            let (dx, dy) = (
                corners[other].0 - corners[i].0,
                corners[other].1 - corners[i].1,
            );
            corners[i] = (corners[i].0 + dx * t, corners[i].1 + dy * t);
        }
        // A pinhole's view of the tilted screen: the far edge is 1 - 2t of the near one, and
        // the depth between them is seen at the mean of their scales (1 - t) and foreshortened
        // by the tilt's cosine, so the side edges shrink too, about the centre. (Without this
        // the quadrilateral was the view of a screen 6-11 % longer across the edges than the
        // image it shows at tilt 10, 3-5 % at tilt 5: a rectifier that sizes each side by
        // its mean edges, right for a camera, kept that error.)
        let depth = (1.0 - t) * tilt_deg.to_radians().cos();
        for c in &mut corners {
            if edge.is_multiple_of(2) {
                c.1 = 0.5 + (c.1 - 0.5) * depth;
            } else {
                c.0 = 0.5 + (c.0 - 0.5) * depth;
            }
        }
        let (s, cs) = turn.sin_cos();
        let dst = corners.map(|(x, y)| {
            let (x, y) = (x - centre.0, y - centre.1);
            (
                (cs * x - s * y + centre.0) * fw,
                (s * x + cs * y + centre.1) * fh,
            )
        });
        let original = [(0.0, 0.0), (fw, 0.0), (fw, fh), (0.0, fh)];
        ScreenMap {
            to_screen: keystone::homography(&dst, &original.map(|(x, y)| (3.0 * x, 3.0 * y))),
            to_photo: keystone::homography(&original, &dst),
        }
    }

    /// The original's point seen at the photo's point `(x, y)`.
    pub fn to_original(&self, x: f64, y: f64) -> (f64, f64) {
        let (u, v) = keystone::apply(&self.to_screen, x, y);
        (u / 3.0, v / 3.0)
    }

    /// The photo's point that shows the original's point `(x, y)`.
    pub fn to_photo(&self, x: f64, y: f64) -> (f64, f64) {
        keystone::apply(&self.to_photo, x, y)
    }

    /// A plane of the photo resampled back into the original's frame (`width x height`,
    /// the original's size), bilinearly; 0 where the photo does not show the original.
    pub fn back_to_original(&self, photo: &Plane, width: usize, height: usize) -> Plane {
        keystone::warp(photo, &self.to_photo, width, height)
    }
}

/// A phone photo of the image shown on a screen (issue 14's hardest leak): the screen's
/// pixel grid (each image pixel drawn as 3 x 3 sub-pixels: red, green and blue stripes with
/// a darker gap row, the source of moire), photographed with the camera tilted by
/// `tilt_deg` about a seeded axis (a keystone: the far edge shrinks by about
/// tan(tilt) / 2 of the size) and turned by up to 2 degrees, at about the image's own
/// resolution (the sub-pixel grid, blurred by the lens over about a camera pixel, aliases
/// into moire); then a little more blur (sigma 0.6), a colour cast, sensor noise (sigma 3)
/// and the phone's JPEG 85.
pub fn screen_photo(r: &Raster, tilt_deg: f64, seed: u64) -> Raster {
    let (w, h) = (r.width, r.height);
    let c = r.channels.min(3);
    let v = to_f32(r);
    // The screen: 3 x 3 sub-pixels per image pixel, RGB.
    let (sw, sh) = (3 * w, 3 * h);
    let mut screen = vec![0f32; sw * sh * 3];
    for y in 0..sh {
        for x in 0..sw {
            let p = (y / 3) * w + x / 3;
            let gap = if y % 3 == 2 { 0.75 } else { 1.0 };
            for k in 0..3 {
                let s = v[p * r.channels + if c == 1 { 0 } else { k }];
                let stripe = if x % 3 == k { 1.0 } else { 0.25 };
                screen[(y * sw + x) * 3 + k] = s * stripe * gap;
            }
        }
    }
    // The lens integrates over about one camera pixel (three sub-pixels) before the sensor
    // samples: the stripes alias into moire, not into pure colour noise.
    let screen = to_f32(&crate::blur(&from_f32(sw, sh, 3, &screen), 1.0));
    let hm = ScreenMap::new(w, h, tilt_deg, seed).to_screen;
    // Exposure: the sub-pixels' mean is about 0.46 of the image's level; the room around
    // the screen is dark (20).
    let mut out = keystone::warp_interleaved(&screen, (sw, sh), 3, &hm, (w, h), 10.0);
    out.iter_mut().for_each(|v| *v *= 2.0);
    let photo = from_f32(w, h, 3, &out);
    let photo = crate::blur(&photo, 0.6);
    // Colour cast (a warm white balance) and the sensor's noise.
    let mut v = to_f32(&photo);
    for px in v.chunks_exact_mut(3) {
        px[0] *= 1.06;
        px[2] *= 0.9;
    }
    let cast = from_f32(w, h, 3, &v);
    crate::jpeg_420(&crate::noise(&cast, 3.0, seed ^ 0x5C2E), 85)
}
