//! Values as billpipe reads and writes them: exact decimals, date-times in UTC, calendar
//! arithmetic and billing months ([`Month`]).
//!
//! A leaf module (it uses nothing of the crate but [`Error`]): the decoder, the rules, the
//! writer, the generator and the CLI all read months and amounts the same way because they
//! share these functions. Parsing of numbers and date-times is written here rather than
//! borrowed because the rules are billpipe's: exact decimals that never round, and date-times
//! with an explicit rule for values written without a zone. [`Month::bounds`] is the one place
//! a billing month becomes UTC instants.

use std::fmt;
use std::str::FromStr;

use crate::{Error, Result};

/// Parses an exact decimal (`-12.5`, `3`, `35.2E-7`) into an integer scaled by `10^scale`.
/// Never rounds: digits past the scale must be zeros, and the value must fit `precision`.
pub fn parse_decimal(s: &[u8], precision: u8, scale: i8) -> std::result::Result<i128, String> {
    let err = |why: &str| Err(format!("not a decimal number ({why})"));
    let mut i = 0;
    let negative = match s.first() {
        Some(b'-') => {
            i = 1;
            true
        }
        Some(b'+') => {
            i = 1;
            false
        }
        _ => false,
    };
    let mut mantissa: i128 = 0;
    let mut digits = 0u32; // significant digits accumulated
    let mut frac_digits: i32 = 0;
    let mut pending_zeros: u32 = 0; // fractional zeros not yet applied (trailing zeros are free)
    let mut seen_digit = false;
    let mut in_frac = false;
    let overflow = || format!("does not fit DECIMAL({precision},{scale})");
    while i < s.len() {
        let b = s[i];
        match b {
            b'0'..=b'9' => {
                seen_digit = true;
                let d = (b - b'0') as i128;
                if in_frac {
                    if d == 0 {
                        pending_zeros += 1;
                        i += 1;
                        continue;
                    }
                    for _ in 0..pending_zeros {
                        mantissa = mantissa.checked_mul(10).ok_or_else(overflow)?;
                    }
                    frac_digits += pending_zeros as i32 + 1;
                    pending_zeros = 0;
                } else if mantissa == 0 && d == 0 {
                    i += 1;
                    continue;
                }
                mantissa = mantissa
                    .checked_mul(10)
                    .and_then(|m| m.checked_add(d))
                    .ok_or_else(overflow)?;
                digits += 1;
                if digits > 38 {
                    return Err(overflow());
                }
            }
            b'.' if !in_frac => in_frac = true,
            b'e' | b'E' => break,
            _ => return err("unexpected character"),
        }
        i += 1;
    }
    if !seen_digit {
        return err("no digits");
    }
    let mut exponent: i32 = 0;
    if i < s.len() {
        // exponent part
        let exp =
            std::str::from_utf8(&s[i + 1..]).map_err(|_| "not a decimal number".to_string())?;
        if exp.is_empty() || exp.starts_with('+') && exp.len() == 1 {
            return err("empty exponent");
        }
        exponent = exp
            .parse::<i32>()
            .map_err(|_| "not a decimal number (bad exponent)".to_string())?;
        if exponent.abs() > 100 {
            return Err(overflow());
        }
    }
    let shift = scale as i32 - frac_digits + exponent;
    let mut value = mantissa;
    if shift >= 0 {
        for _ in 0..shift {
            value = value.checked_mul(10).ok_or_else(overflow)?;
        }
    } else {
        for _ in 0..(-shift) {
            if value % 10 != 0 {
                return Err(format!(
                    "has more than {scale} fractional digits; billpipe does not round"
                ));
            }
            value /= 10;
        }
    }
    let limit = 10i128.checked_pow(precision as u32).unwrap_or(i128::MAX);
    if value >= limit {
        return Err(overflow());
    }
    Ok(if negative { -value } else { value })
}

/// Formats a scaled decimal for people and reports, without trailing zeros.
pub fn format_decimal(value: i128, scale: i8) -> String {
    let scale = scale.max(0) as u32;
    let unit = 10i128.pow(scale);
    let sign = if value < 0 { "-" } else { "" };
    let abs = value.unsigned_abs();
    let int = abs / unit as u128;
    let frac = abs % unit as u128;
    if frac == 0 {
        return format!("{sign}{int}");
    }
    let frac = format!("{:0width$}", frac, width = scale as usize);
    format!("{sign}{int}.{}", frac.trim_end_matches('0'))
}

/// Days since 1970-01-01 of a proleptic Gregorian date (Howard Hinnant's algorithm).
pub fn days_from_civil(y: i64, m: u32, d: u32) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (m as i64 + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d as i64 - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// (year, month) of a day count since 1970-01-01.
pub fn year_month_from_days(days: i64) -> (i64, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let y = yoe + era * 400 + if m <= 2 { 1 } else { 0 };
    (y, m)
}

/// Days in month `m` of year `y` (proleptic Gregorian).
pub fn days_in_month(y: i64, m: u32) -> u32 {
    match m {
        1 | 3 | 5 | 7 | 8 | 10 | 12 => 31,
        4 | 6 | 9 | 11 => 30,
        _ if (y % 4 == 0 && y % 100 != 0) || y % 400 == 0 => 29,
        _ => 28,
    }
}

/// FOCUS's Date/Time Format: exactly `YYYY-MM-DDTHH:mm:ssZ`.
pub fn is_focus_datetime(s: &[u8]) -> bool {
    s.len() == 20
        && s[4] == b'-'
        && s[7] == b'-'
        && s[10] == b'T'
        && s[13] == b':'
        && s[16] == b':'
        && s[19] == b'Z'
        && [0, 1, 2, 3, 5, 6, 8, 9, 11, 12, 14, 15, 17, 18]
            .iter()
            .all(|i| s[*i].is_ascii_digit())
}

/// FOCUS's Numeric Format: `-?digits[.digits][E-?digits]` (a leading `+`, a bare `.5` or `5.`,
/// and a `+` in the exponent are not allowed; the decoder still reads them exactly).
pub fn is_focus_numeric(s: &[u8]) -> bool {
    let digits = |s: &[u8], i: &mut usize| {
        let start = *i;
        while *i < s.len() && s[*i].is_ascii_digit() {
            *i += 1;
        }
        *i > start
    };
    let mut i = usize::from(s.first() == Some(&b'-'));
    if !digits(s, &mut i) {
        return false;
    }
    if s.get(i) == Some(&b'.') {
        i += 1;
        if !digits(s, &mut i) {
            return false;
        }
    }
    if matches!(s.get(i), Some(b'e' | b'E')) {
        i += 1;
        if s.get(i) == Some(&b'-') {
            i += 1;
        }
        if !digits(s, &mut i) {
            return false;
        }
    }
    i == s.len()
}

/// Parses an ISO 8601 date-time into microseconds since the epoch, UTC.
///
/// Accepted: `YYYY-MM-DD`, then optionally `T` or a space and `HH:MM[:SS[.fraction]]`, then
/// optionally `Z` or `±HH:MM` / `±HHMM`. Without a zone the value is read at `naive_offset_secs`
/// (UTC for FOCUS, UTC+8 for Tencent's native bills); FOCUS itself requires the `Z` form, and
/// whether a file follows that is the validator's call, not the decoder's.
pub fn parse_timestamp(s: &[u8], naive_offset_secs: i64) -> std::result::Result<i64, String> {
    let bad = || {
        Err(format!(
            "not a date-time (expected YYYY-MM-DDTHH:MM:SSZ), got {:?}",
            String::from_utf8_lossy(s)
        ))
    };
    let num = |a: usize, b: usize| -> Option<i64> {
        let part = s.get(a..b)?;
        if !part.iter().all(u8::is_ascii_digit) {
            return None;
        }
        Some(
            part.iter()
                .fold(0i64, |acc, d| acc * 10 + (d - b'0') as i64),
        )
    };
    if s.len() < 10 || s[4] != b'-' || s[7] != b'-' {
        return bad();
    }
    let (Some(y), Some(mo), Some(d)) = (num(0, 4), num(5, 7), num(8, 10)) else {
        return bad();
    };
    let mo = mo as u32;
    let d = d as u32;
    if !(1..=12).contains(&mo) || d == 0 || d > days_in_month(y, mo) {
        return Err(format!("not a real date: {:?}", String::from_utf8_lossy(s)));
    }
    let mut secs = days_from_civil(y, mo, d) * 86_400;
    let mut micros = 0i64;
    let mut i = 10;
    if i < s.len() && (s[i] == b'T' || s[i] == b' ') {
        let (Some(h), Some(mi)) = (num(i + 1, i + 3), num(i + 4, i + 6)) else {
            return bad();
        };
        if s.get(i + 3) != Some(&b':') || h > 23 || mi > 59 {
            return bad();
        }
        secs += h * 3600 + mi * 60;
        i += 6;
        if s.get(i) == Some(&b':') {
            let Some(sec) = num(i + 1, i + 3) else {
                return bad();
            };
            if sec > 59 {
                return bad();
            }
            secs += sec;
            i += 3;
            if s.get(i) == Some(&b'.') {
                i += 1;
                let start = i;
                while i < s.len() && s[i].is_ascii_digit() {
                    if i - start < 6 {
                        micros = micros * 10 + (s[i] - b'0') as i64;
                    } else if s[i] != b'0' {
                        return Err(format!(
                            "date-time has sub-microsecond digits, which billpipe does not round: {:?}",
                            String::from_utf8_lossy(s)
                        ));
                    }
                    i += 1;
                }
                if i == start {
                    return bad();
                }
                for _ in (i - start).min(6)..6 {
                    micros *= 10;
                }
            }
        }
    }
    let offset = match &s[i..] {
        b"" => naive_offset_secs,
        b"Z" | b"z" => 0,
        [sign @ (b'+' | b'-'), rest @ ..] => {
            let (h, m) = match rest {
                [h1, h2, b':', m1, m2] | [h1, h2, m1, m2] => {
                    let digits = [*h1, *h2, *m1, *m2];
                    if !digits.iter().all(u8::is_ascii_digit) {
                        return bad();
                    }
                    (
                        ((h1 - b'0') * 10 + (h2 - b'0')) as i64,
                        ((m1 - b'0') * 10 + (m2 - b'0')) as i64,
                    )
                }
                [h1, h2] if h1.is_ascii_digit() && h2.is_ascii_digit() => {
                    (((h1 - b'0') * 10 + (h2 - b'0')) as i64, 0)
                }
                _ => return bad(),
            };
            let o = h * 3600 + m * 60;
            if *sign == b'-' {
                -o
            } else {
                o
            }
        }
        _ => return bad(),
    };
    Ok((secs - offset) * 1_000_000 + micros)
}

/// Parses `+08:00` style offsets from configuration into seconds.
pub fn parse_offset(text: &str) -> Result<i64> {
    let micros = parse_timestamp(format!("1970-01-01T00:00:00{text}").as_bytes(), 0)
        .map_err(|_| Error::Config(format!("bad UTC offset {text:?} (expected like +08:00)")))?;
    Ok(-micros / 1_000_000)
}

/// A billing month: year and month, written `YYYY-MM` (also in JSON, TOML and reports).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Month {
    year: i64,
    month: u32,
}

/// Why a text is not a `YYYY-MM` month.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParseMonthError(String);

impl fmt::Display for ParseMonthError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:?} is not a month like 2025-12", self.0)
    }
}

impl std::error::Error for ParseMonthError {}

impl From<ParseMonthError> for Error {
    fn from(e: ParseMonthError) -> Error {
        Error::Config(e.to_string())
    }
}

impl Month {
    /// Year 0-9999, month 1-12.
    pub fn new(year: i64, month: u32) -> Option<Month> {
        ((0..=9999).contains(&year) && (1..=12).contains(&month)).then_some(Month { year, month })
    }

    /// A month written as six digits, `YYYYMM` (as in bill file names).
    pub fn from_digits(s: &str) -> Option<Month> {
        if s.len() != 6 || !s.bytes().all(|b| b.is_ascii_digit()) {
            return None;
        }
        Month::new(s[..4].parse().ok()?, s[4..].parse().ok()?)
    }

    /// The month day `days` (since 1970-01-01) falls in.
    pub fn of_day(days: i64) -> Month {
        let (year, month) = year_month_from_days(days);
        Month { year, month }
    }

    pub fn year(self) -> i64 {
        self.year
    }

    pub fn month(self) -> u32 {
        self.month
    }

    /// The month after this one.
    pub fn next(self) -> Month {
        match self.month {
            12 => Month {
                year: self.year + 1,
                month: 1,
            },
            m => Month {
                year: self.year,
                month: m + 1,
            },
        }
    }

    /// Days since 1970-01-01 of the month's first day.
    pub fn first_day(self) -> i64 {
        days_from_civil(self.year, self.month, 1)
    }

    /// How many days the month has.
    pub fn days(self) -> u32 {
        days_in_month(self.year, self.month)
    }

    /// UTC bounds in microseconds (start inclusive, end exclusive, as FOCUS defines billing
    /// periods) of the month read at `offset_secs` east of UTC: December in Beijing time
    /// (+08:00) starts at 16:00 UTC on November 30th.
    pub fn bounds(self, offset_secs: i64) -> (i64, i64) {
        let at = |m: Month| (m.first_day() * 86_400 - offset_secs) * 1_000_000;
        (at(self), at(self.next()))
    }
}

impl FromStr for Month {
    type Err = ParseMonthError;

    /// Exactly `YYYY-MM`, month 01-12.
    fn from_str(s: &str) -> std::result::Result<Month, ParseMonthError> {
        let b = s.as_bytes();
        let digits = |r: std::ops::Range<usize>| b[r].iter().all(u8::is_ascii_digit);
        if b.len() != 7 || b[4] != b'-' || !digits(0..4) || !digits(5..7) {
            return Err(ParseMonthError(s.to_string()));
        }
        let (year, month) = (s[..4].parse().ok(), s[5..].parse().ok());
        year.zip(month)
            .and_then(|(y, m)| Month::new(y, m))
            .ok_or_else(|| ParseMonthError(s.to_string()))
    }
}

impl fmt::Display for Month {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:04}-{:02}", self.year, self.month)
    }
}

impl serde::Serialize for Month {
    fn serialize<S: serde::Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> serde::Deserialize<'de> for Month {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> std::result::Result<Month, D::Error> {
        let text = String::deserialize(d)?;
        text.parse().map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dec(s: &str) -> std::result::Result<i128, String> {
        parse_decimal(s.as_bytes(), 38, 18)
    }

    const E18: i128 = 1_000_000_000_000_000_000;

    #[test]
    fn decimals_are_exact() {
        assert_eq!(dec("12.5").unwrap(), 12 * E18 + E18 / 2);
        assert_eq!(dec("-0.00000001").unwrap(), -10_000_000_000);
        assert_eq!(dec("0").unwrap(), 0);
        assert_eq!(dec("+3").unwrap(), 3 * E18);
        assert_eq!(dec(".5").unwrap(), E18 / 2);
        assert_eq!(dec("35.2E-7").unwrap(), 3_520_000_000_000);
        assert_eq!(dec("1e3").unwrap(), 1000 * E18);
        // 15 fractional digits (FOCUS sample ConsumedQuantity), trailing zeros past the scale
        assert_eq!(dec("0.002007490000000").unwrap(), 2_007_490_000_000_000);
        assert_eq!(dec("2.00000000000000000000000000").unwrap(), 2 * E18);
        assert!(dec("0.0000000000000000001")
            .unwrap_err()
            .contains("fractional"));
        assert!(dec("100000000000000000000").is_err()); // 21 integer digits
        assert_eq!(
            dec("99999999999999999999").unwrap(),
            99999999999999999999 * E18
        );
        for bad in ["", "-", "1.2.3", "abc", "1,000", "1e", "12 ", "$5"] {
            assert!(dec(bad).is_err(), "{bad:?}");
        }
        assert_eq!(format_decimal(dec("-12.50").unwrap(), 18), "-12.5");
        assert_eq!(format_decimal(dec("7").unwrap(), 18), "7");
        assert_eq!(format_decimal(dec("-0.05").unwrap(), 18), "-0.05");
    }

    #[test]
    fn focus_numeric_format() {
        for ok in ["0", "-12.5", "35.2E-7", "3e5", "1.50"] {
            assert!(is_focus_numeric(ok.as_bytes()), "{ok}");
        }
        for bad in [
            "+1", "35.2E+7", ".5", "5.", "1,000", "1 000", "", "-", "1e", "$1",
        ] {
            assert!(!is_focus_numeric(bad.as_bytes()), "{bad}");
        }
    }

    #[test]
    fn timestamps_are_utc() {
        let t = |s: &str| parse_timestamp(s.as_bytes(), 0);
        let z = t("2025-11-30T15:59:59Z").unwrap();
        assert_eq!(z, 1_764_518_399_000_000);
        assert_eq!(t("2025-11-30 15:59:59").unwrap(), z);
        assert_eq!(t("2025-11-30T23:59:59+08:00").unwrap(), z);
        assert_eq!(t("2025-11-30T23:59:59+0800").unwrap(), z);
        assert_eq!(
            parse_timestamp(b"2025-11-30 23:59:59", 8 * 3600).unwrap(),
            z
        );
        assert_eq!(t("2025-11-30T15:59:59.5Z").unwrap(), z + 500_000);
        assert_eq!(
            t("2025-11-30").unwrap(),
            z - (15 * 3600 + 59 * 60 + 59) * 1_000_000
        );
        assert_eq!(t("1969-12-31T23:59:59Z").unwrap(), -1_000_000);
        for bad in [
            "2025-02-30T00:00:00Z",
            "2025-13-01",
            "30/11/2025",
            "2025-11-30T24:00:00Z",
            "2025-11-30T10:00:00 PST",
            "x",
        ] {
            assert!(t(bad).is_err(), "{bad}");
        }
        assert_eq!(parse_offset("+08:00").unwrap(), 8 * 3600);
        assert_eq!(parse_offset("-05:30").unwrap(), -(5 * 3600 + 1800));
        let days = days_from_civil(2024, 2, 29);
        assert_eq!(year_month_from_days(days), (2024, 2));
        assert_eq!(year_month_from_days(-1), (1969, 12));
    }

    #[test]
    fn months_parse_print_and_bound_in_one_place() {
        let m: Month = "2025-12".parse().unwrap();
        assert_eq!((m.year(), m.month()), (2025, 12));
        assert_eq!(m.to_string(), "2025-12");
        assert_eq!(m.next().to_string(), "2026-01");
        assert_eq!(m.days(), 31);
        assert_eq!(Month::from_digits("202402").unwrap().days(), 29);
        assert_eq!(
            Month::of_day(days_from_civil(2024, 2, 29)).to_string(),
            "2024-02"
        );
        for bad in [
            "2025-13", "2025-00", "2025-1", "202512", "2025/12", "x", "", "2025-12 ",
        ] {
            let e = bad.parse::<Month>().unwrap_err();
            assert!(
                e.to_string().contains("is not a month like 2025-12"),
                "{bad}: {e}"
            );
        }
        assert!(Month::from_digits("2025-1").is_none());
        // December 2025 in Beijing time starts 2025-11-30T16:00:00Z.
        let (lo, hi) = m.bounds(8 * 3600);
        assert_eq!(lo, 1_764_518_400_000_000);
        assert_eq!(hi - lo, 31 * 86_400 * 1_000_000);
        assert_eq!(m.bounds(0).1, m.next().bounds(0).0);
        let json = serde_json::to_string(&m).unwrap();
        assert_eq!(json, "\"2025-12\"");
        assert_eq!(serde_json::from_str::<Month>(&json).unwrap(), m);
        assert!(serde_json::from_str::<Month>("\"2025-13\"").is_err());
    }
}
