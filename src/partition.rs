//! Hive partitions of the lake: `billing_period=YYYY-MM/billing_account_id=ID/`. How a value
//! becomes a path segment (escaped as Hive does, capped with a hash when too long) and back.
//! A leaf module: the writer names folders with it, `totals` and the lake read them back, and
//! neither has to know the other.
//!
//! The account is Hive-escaped (`%XX` for every byte but `A-Z a-z 0-9 - _ .`, as billpipe always
//! did, so existing lakes keep their paths). An escaped value over [`MAX_PARTITION_VALUE_BYTES`]
//! (which would break the 255-byte file-name limit: a 300-character id, 90 CJK characters)
//! becomes its longest escaped prefix of whole characters that fits, then `~`, then 32 hex
//! digits of a 128-bit FNV-1a hash of the whole value (see [`partition_value`]). Escaping never
//! produces `~`, so a capped folder cannot collide with an uncapped one, and the hash tells long
//! values with the same prefix apart. The folder is then not reversible by itself: the row's
//! `BillingAccountId` column always holds the full value, and is what readers should group by.

use crate::{Error, Result};

/// Folder prefix of the billing-period level.
pub const PERIOD_DIR: &str = "billing_period=";
/// Folder prefix of the account level.
pub const ACCOUNT_DIR: &str = "billing_account_id=";

/// A Hive partition of the lake.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct PartitionKey {
    /// `YYYY-MM`
    pub period: String,
    pub account: String,
}

impl PartitionKey {
    /// `billing_period=YYYY-MM/billing_account_id=ID`, the account made safe by
    /// [`partition_value`].
    pub fn dir(&self) -> String {
        format!(
            "billing_period={}/billing_account_id={}",
            partition_value(&self.period),
            partition_value(&self.account)
        )
    }
}

/// The longest escaped partition value kept whole: with `billing_account_id=` (19 bytes) the
/// folder name stays under the 255-byte limit of common file systems, with room to spare.
pub const MAX_PARTITION_VALUE_BYTES: usize = 200;
/// Marks a capped value: the hash follows. Never produced by [`hive_escape`].
pub const CAPPED_MARK: char = '~';

/// Escapes characters that are unsafe in a path segment as `%XX`, as Hive does.
pub fn hive_escape(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    let dots = value == "." || value == "..";
    for b in value.bytes() {
        escape_byte(b, dots, &mut out);
    }
    out
}

fn escape_byte(b: u8, escape_dots: bool, out: &mut String) {
    if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.') && !escape_dots {
        out.push(b as char);
    } else {
        out.push_str(&format!("%{b:02X}"));
    }
}

/// A partition value as a path segment: [`hive_escape`] when that is at most
/// [`MAX_PARTITION_VALUE_BYTES`]; otherwise the longest escaped prefix of whole characters that
/// leaves room for `~` and 32 hex digits of [`stable_hash`] of the whole value. The result
/// always unescapes to valid UTF-8 (the cut falls between characters).
pub fn partition_value(value: &str) -> String {
    let escaped = hive_escape(value);
    if escaped.len() <= MAX_PARTITION_VALUE_BYTES {
        return escaped;
    }
    let room = MAX_PARTITION_VALUE_BYTES - 1 - 32;
    let mut out = String::with_capacity(MAX_PARTITION_VALUE_BYTES);
    let mut buf = [0u8; 4];
    for c in value.chars() {
        let mut piece = String::new();
        for b in c.encode_utf8(&mut buf).bytes() {
            escape_byte(b, false, &mut piece);
        }
        if out.len() + piece.len() > room {
            break;
        }
        out.push_str(&piece);
    }
    out.push(CAPPED_MARK);
    out.push_str(&format!("{:032x}", stable_hash(value.as_bytes())));
    out
}

/// 128-bit FNV-1a: a fixed, documented hash (unlike `std`'s hasher, which may change between
/// Rust releases), so the same value names the same folder in every billpipe version.
pub fn stable_hash(bytes: &[u8]) -> u128 {
    const OFFSET: u128 = 0x6c62272e07bb014262b821756295c58d;
    const PRIME: u128 = 0x0000000001000000000000000000013B;
    bytes
        .iter()
        .fold(OFFSET, |h, b| (h ^ u128::from(*b)).wrapping_mul(PRIME))
}

/// `(billing_period, billing_account_id)` of `billing_period=P/billing_account_id=A/F.parquet`,
/// unescaped; `None` for any other path (`_billpipe/…`, `_quarantine/…`, staging leftovers).
pub fn partition_of(rel: &str) -> Result<Option<(String, String)>> {
    let mut parts = rel.split('/');
    let (Some(p), Some(a), Some(file), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Ok(None);
    };
    let (Some(period), Some(account)) = (p.strip_prefix(PERIOD_DIR), a.strip_prefix(ACCOUNT_DIR))
    else {
        return Ok(None);
    };
    if !file.ends_with(".parquet") {
        return Ok(None);
    }
    Ok(Some((
        hive_unescape(period, rel)?,
        hive_unescape(account, rel)?,
    )))
}

/// Undoes [`crate::partition::hive_escape`]: `%XX` is the byte XX. As in Hive, a `%` not followed by
/// two hex digits stands for itself.
pub fn hive_unescape(value: &str, rel: &str) -> Result<String> {
    let bytes = value.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = |b: u8| (b as char).to_digit(16);
        if bytes[i] == b'%' && i + 2 < bytes.len() {
            if let (Some(h), Some(l)) = (hex(bytes[i + 1]), hex(bytes[i + 2])) {
                out.push((h * 16 + l) as u8);
                i += 3;
                continue;
            }
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8(out).map_err(|_| Error::Lake {
        path: rel.to_string(),
        message: format!("partition value {value:?} does not unescape to UTF-8"),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escapes_like_hive() {
        assert_eq!(hive_escape("200020002001"), "200020002001");
        assert_eq!(hive_escape("a/b c"), "a%2Fb%20c");
        assert_eq!(hive_escape(".."), "%2E%2E");
        assert_eq!(hive_escape("acct-1.x_y"), "acct-1.x_y");
    }

    #[test]
    fn fnv1a_128_test_vectors() {
        assert_eq!(stable_hash(b""), 0x6c62272e07bb014262b821756295c58d);
        assert_eq!(stable_hash(b"a"), 0xd228cb696f1a8caf78912b704e4a8964);
    }

    #[test]
    fn normal_values_keep_their_hive_paths() {
        for v in ["200020002001", "a/b c", "..", "账号-1", &"9".repeat(200)] {
            assert_eq!(partition_value(v), hive_escape(v));
        }
        let key = PartitionKey {
            period: "2025-12".into(),
            account: "200020002001".into(),
        };
        assert_eq!(
            key.dir(),
            "billing_period=2025-12/billing_account_id=200020002001"
        );
    }

    #[test]
    fn long_values_are_capped_with_a_hash_and_still_read_back() {
        let ascii = "7".repeat(300);
        let cjk = "账".repeat(90);
        let ascii_b = format!("{}8", "7".repeat(299));
        for v in [&ascii, &cjk, &ascii_b] {
            let p = partition_value(v);
            assert!(p.len() <= MAX_PARTITION_VALUE_BYTES, "{} bytes", p.len());
            let (prefix, hash) = p.rsplit_once(CAPPED_MARK).unwrap();
            assert_eq!(hash, format!("{:032x}", stable_hash(v.as_bytes())));
            assert!(!prefix.is_empty() && !prefix.contains(CAPPED_MARK));
            // `totals` reads the capped folder: the prefix unescapes to whole characters.
            let rel = format!("billing_period=2025-12/billing_account_id={p}/x.parquet");
            let (_, account) = partition_of(&rel).unwrap().unwrap();
            let (text, _) = account.rsplit_once(CAPPED_MARK).unwrap();
            assert!(v.starts_with(text) && !text.is_empty(), "{account}");
        }
        // Same prefix, different values: different folders.
        assert_ne!(partition_value(&ascii), partition_value(&ascii_b));
        // 90 CJK characters escape to 810 bytes; the prefix keeps 18 whole ones (9 bytes each).
        assert_eq!(
            partition_value(&cjk).split(CAPPED_MARK).next().unwrap(),
            hive_escape(&"账".repeat(18))
        );
    }

    #[test]
    fn unescapes_what_write_escapes() {
        for v in [
            "200020002001",
            "a/b c",
            "..",
            ".",
            "acct-1.x_y",
            "账户 1",
            "50%",
        ] {
            assert_eq!(hive_unescape(&hive_escape(v), "x").ok().as_deref(), Some(v));
        }
        // A `%` without two hex digits stands for itself, as in Hive.
        assert_eq!(hive_unescape("5%", "x").ok().as_deref(), Some("5%"));
        assert_eq!(hive_unescape("%zz%4", "x").ok().as_deref(), Some("%zz%4"));
        assert!(hive_unescape("%FF", "x").is_err());
    }

    #[test]
    fn partition_paths() {
        let p = partition_of("billing_period=2025-11/billing_account_id=a%2Fb/t-a-202511.parquet");
        assert_eq!(
            p.ok().flatten(),
            Some(("2025-11".to_string(), "a/b".to_string()))
        );
        for other in [
            "_billpipe/ledger.json",
            "_quarantine/t.csv",
            "billing_period=2025-11/billing_account_id=1/x.tmp",
            "billing_period=2025-11/x.parquet",
            "billing_period=2025-11/billing_account_id=1/deeper/x.parquet",
        ] {
            assert_eq!(partition_of(other).ok().flatten(), None, "{other}");
        }
    }
}
