//! Anchors: an authenticated statement of the ledger's head (row count, last hash, time),
//! printed as one line to be kept outside the ledger (a ticket, an e-mail, a notary, a
//! write-once medium). `verify --anchor LINE` then proves that the ledger still extends that
//! head: a rolled-back, truncated or substituted ledger does not, even though each of them is
//! a self-consistent chain under the same key.

use super::chain::row_hash_at;
use super::{Ledger, Verification};
use crate::error::{Error, Result};
use crate::key::{SecretKey, hex, parse_hex};
use crate::report::iso_utc;

const TAG: &str = "tracemark-anchor-v1";

/// An authenticated ledger head.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Anchor {
    /// Rows in the ledger when the anchor was taken.
    pub rows: i64,
    /// Hash of the last of those rows (zeros for an empty ledger).
    pub hash: [u8; 32],
    /// When, milliseconds since the Unix epoch (UTC).
    pub time_ms: i64,
    mac: [u8; 32],
}

fn anchor_mac(mac_key: &[u8; 32], rows: i64, hash: &[u8; 32], time_ms: i64) -> [u8; 32] {
    crate::prng::derive(
        &SecretKey::from_bytes(*mac_key),
        &[b"anchor", &rows.to_be_bytes(), hash, &time_ms.to_be_bytes()],
    )
}

impl std::fmt::Display for Anchor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{TAG} rows={} hash={} at={} ms={} mac={}",
            self.rows,
            hex(&self.hash),
            iso_utc(self.time_ms),
            self.time_ms,
            hex(&self.mac)
        )
    }
}

impl std::str::FromStr for Anchor {
    type Err = Error;

    fn from_str(line: &str) -> Result<Self> {
        let bad = |why: &str| Error::BadAnchor(why.into());
        let mut parts = line.split_whitespace();
        if parts.next() != Some(TAG) {
            return Err(bad("does not start with 'tracemark-anchor-v1'"));
        }
        let (mut rows, mut hash, mut at, mut ms, mut mac) = (None, None, None, None, None);
        for p in parts {
            let (k, v) = p.split_once('=').ok_or_else(|| bad("expected key=value"))?;
            let bytes32 = |v: &str| -> Option<[u8; 32]> { parse_hex(v)?.try_into().ok() };
            match k {
                "rows" => rows = v.parse::<i64>().ok().filter(|n| *n >= 0),
                "hash" => hash = bytes32(v),
                "at" => at = Some(v.to_string()),
                "ms" => ms = v.parse::<i64>().ok(),
                "mac" => mac = bytes32(v),
                _ => return Err(bad("unknown field")),
            }
        }
        let (Some(rows), Some(hash), Some(at), Some(time_ms), Some(mac)) =
            (rows, hash, at, ms, mac)
        else {
            return Err(bad("needs rows, hash, at, ms and mac"));
        };
        if at != iso_utc(time_ms) {
            return Err(bad("'at' does not match 'ms'"));
        }
        Ok(Anchor {
            rows,
            hash,
            time_ms,
            mac,
        })
    }
}

impl Ledger {
    /// The authenticated head of an intact ledger, as of `time_ms`.
    ///
    /// # Errors
    /// [`Error::LedgerBroken`] when the ledger does not verify; database errors.
    pub fn anchor(&self, time_ms: i64) -> Result<Anchor> {
        // The chain verified and the hash read from one state of the database.
        let _snapshot = self.snapshot()?;
        let rows = self.ensure_intact()?;
        let hash = if rows == 0 {
            [0; 32]
        } else {
            row_hash_at(self, rows)?.unwrap_or([0; 32])
        };
        Ok(Anchor {
            rows,
            hash,
            time_ms,
            mac: anchor_mac(&self.mac_key, rows, &hash, time_ms),
        })
    }

    /// Verifies the chain and that it extends `anchor`: at least its rows, with its hash at
    /// its last row.
    ///
    /// # Errors
    /// Database errors (a ledger that fails is `Ok(Verification::Broken)`).
    pub fn verify_against(&self, anchor: &Anchor) -> Result<Verification> {
        let v = self.verify()?;
        let Verification::Intact { rows } = v else {
            return Ok(v);
        };
        if anchor.mac != anchor_mac(&self.mac_key, anchor.rows, &anchor.hash, anchor.time_ms) {
            return Ok(Verification::Broken {
                seq: 0,
                why: "the anchor is not authentic for this key (edited, or another key's)".into(),
            });
        }
        let when = iso_utc(anchor.time_ms);
        if rows < anchor.rows {
            return Ok(Verification::Broken {
                seq: rows + 1,
                why: format!(
                    "the ledger has {rows} rows but held {} at the anchor of {when} (rolled back or truncated)",
                    anchor.rows
                ),
            });
        }
        let hash = if anchor.rows == 0 {
            Some([0; 32])
        } else {
            row_hash_at(self, anchor.rows)?
        };
        if hash != Some(anchor.hash) {
            return Ok(Verification::Broken {
                seq: anchor.rows,
                why: format!(
                    "row {} is not the one anchored at {when} (the ledger was replaced or rewritten)",
                    anchor.rows
                ),
            });
        }
        Ok(Verification::Intact { rows })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn anchor_lines_round_trip_and_garbage_is_refused() {
        let a = Anchor {
            rows: 3,
            hash: [7; 32],
            time_ms: 1_796_095_271_743,
            mac: [9; 32],
        };
        let line = a.to_string();
        assert_eq!(line.parse::<Anchor>().unwrap(), a);
        for bad in [
            "",
            "tracemark-anchor-v1",
            &line.replace("rows=3", "rows=-1"),
            &line.replace("at=2026", "at=2025"),
            &line.replace("mac=", "tag="),
        ] {
            let e = bad.parse::<Anchor>().unwrap_err().to_string();
            assert!(e.starts_with("bad anchor line"), "{e}");
        }
    }
}
