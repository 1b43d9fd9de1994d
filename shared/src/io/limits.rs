//! Resource limits checked before any allocation sized from a file header
//! (decompression-bomb guard), in the manner of image's `Limits`.

/// Limits on decoded images.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Limits {
    /// Largest width or height in pixels.
    pub max_side: u32,
    /// Largest pixel count.
    pub max_pixels: u64,
    /// Largest decoder allocation in bytes.
    pub max_alloc: u64,
}

impl Default for Limits {
    /// 32768 px a side, 256 Mpx, 2 GiB: above any radiograph or photo, far below what a
    /// forged header can claim.
    fn default() -> Self {
        Limits {
            max_side: 32768,
            max_pixels: 256 << 20,
            max_alloc: 2 << 30,
        }
    }
}

impl Limits {
    /// No limits beyond the address space (for trusted inputs only).
    pub fn no_limits() -> Self {
        Limits {
            max_side: u32::MAX,
            max_pixels: u64::MAX,
            max_alloc: u64::MAX,
        }
    }

    /// Checks declared dimensions; returns a description of the excess.
    pub fn check(&self, width: u32, height: u32) -> Result<(), (String, String)> {
        if width > self.max_side || height > self.max_side {
            return Err((
                format!("declared size {width}x{height} px is too large"),
                format!("{} px a side", self.max_side),
            ));
        }
        if u64::from(width) * u64::from(height) > self.max_pixels {
            return Err((
                format!("declared size {width}x{height} px is too large"),
                format!("{} pixels", self.max_pixels),
            ));
        }
        if width == 0 || height == 0 {
            return Err((
                format!("declared size {width}x{height} px is empty"),
                "1 px".into(),
            ));
        }
        Ok(())
    }
}
