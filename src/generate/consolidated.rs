//! A reseller's consolidated monthly bill: the native detail bills of many customers in one
//! file, their rows interleaved (day by day, row by row, customer after customer), as Tencent's
//! `…-consolidated_bill-….zip` delivers them. Each customer's rows are exactly those of its own
//! detail bill with the same options ([`super::write_detail_csv`]), so its totals are known.

use std::io::Write;
use std::path::Path;

use crate::{Error, Result};

use super::detail::{detail_row, DetailStats, DETAIL_HEADER};
use super::{hash_str, month_of, splitmix, GenerateOptions};

/// What a consolidated bill holds: every row, and each customer's own rows and BilledCost.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ConsolidatedStats {
    pub rows: u64,
    /// CSV bytes (before zipping).
    pub bytes: u64,
    /// (customer account id, its rows), in the order of [`customer_ids`].
    pub customers: Vec<(String, DetailStats)>,
}

/// `count` customer account ids (12-digit UINs) of a reseller.
pub fn customer_ids(count: u32) -> Vec<String> {
    (1..=count as u64)
        .map(|i| format!("{}", 300_000_000_000u64 + i))
        .collect()
}

/// Tencent's object name for a reseller's consolidated bill of `month` (`YYYY-MM`):
/// `<reseller>-YYYY-MM--by_used_time-bill-details-consolidated_bill-<hex>.zip`.
pub fn consolidated_object_name(reseller: &str, month: &str, seed: u64) -> Result<String> {
    let month = month_of(month)?;
    Ok(format!(
        "{reseller}-{:04}-{:02}--by_used_time-bill-details-consolidated_bill-{:08x}.zip",
        month.year(),
        month.month(),
        splitmix(seed ^ hash_str(reseller)) as u32
    ))
}

/// Writes the consolidated bill of `customers` as a CSV: `opts.rows_per_day` rows per customer
/// and day, round-robin over the customers (`opts.account` is the reseller, not written).
pub fn write_consolidated_csv(
    opts: &GenerateOptions,
    customers: &[String],
    out: impl Write,
) -> Result<ConsolidatedStats> {
    let month = month_of(&opts.month)?;
    let bill_month = (month.year(), month.month());
    let through = opts.through_day.unwrap_or(month.days()).min(month.days());
    let mut w = std::io::BufWriter::with_capacity(1 << 20, out);
    let io = |e| Error::io("generated CSV", e);
    let mut stats = ConsolidatedStats::default();
    let header: Vec<&str> = DETAIL_HEADER.iter().map(|(en, _)| *en).collect();
    let mut line = header.join(",");
    line.push_str("\r\n");
    w.write_all(line.as_bytes()).map_err(io)?;
    stats.bytes += line.len() as u64;
    let each: Vec<(GenerateOptions, u64)> = customers
        .iter()
        .map(|c| {
            let o = GenerateOptions {
                account: c.clone(),
                ..opts.clone()
            };
            (o, hash_str(c))
        })
        .collect();
    stats.customers = customers
        .iter()
        .map(|c| (c.clone(), DetailStats::default()))
        .collect();
    for day in 1..=through {
        let day_index = month.first_day() + day as i64 - 1;
        for r in 0..opts.rows_per_day {
            for (i, (o, hash)) in each.iter().enumerate() {
                let row = detail_row(o, *hash, bill_month, false, day_index, r, &mut line);
                w.write_all(line.as_bytes()).map_err(io)?;
                stats.bytes += line.len() as u64;
                stats.rows += 1;
                stats.customers[i].1.add(row);
            }
        }
    }
    w.flush().map_err(io)?;
    Ok(stats)
}

/// Writes the consolidated bill as a zip (one deflated CSV member) at `path`.
pub fn write_consolidated_zip(
    opts: &GenerateOptions,
    customers: &[String],
    path: &Path,
) -> Result<ConsolidatedStats> {
    let file = std::fs::File::create(path).map_err(|e| Error::io(path, e))?;
    let mut zip = zip::ZipWriter::new(std::io::BufWriter::with_capacity(1 << 20, file));
    let member = zip::write::SimpleFileOptions::default()
        .compression_method(zip::CompressionMethod::Deflated)
        .large_file(true);
    let zip_err = |e: zip::result::ZipError| Error::io(path, std::io::Error::other(e));
    zip.start_file(
        format!("{}-{}-consolidated_bill.csv", opts.account, opts.month),
        member,
    )
    .map_err(zip_err)?;
    let stats = write_consolidated_csv(opts, customers, &mut zip)?;
    let mut inner = zip.finish().map_err(zip_err)?;
    inner.flush().map_err(|e| Error::io(path, e))?;
    Ok(stats)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::generate::write_detail_csv;

    #[test]
    fn each_customer_is_its_own_detail_bill_interleaved() {
        let opts = GenerateOptions {
            account: "500000000009".into(),
            month: "2025-11".into(),
            through_day: Some(2),
            rows_per_day: 3,
            seed: 5,
            bad_rows: vec![],
            restated: false,
            gaps: false,
        };
        let customers = customer_ids(4);
        let mut all = Vec::new();
        let stats = write_consolidated_csv(&opts, &customers, &mut all).unwrap();
        assert_eq!(stats.rows, 4 * 2 * 3);
        assert_eq!(stats.bytes, all.len() as u64);
        let text = String::from_utf8(all).unwrap();
        let lines: Vec<&str> = text.lines().skip(1).collect();
        for (i, (c, s)) in stats.customers.iter().enumerate() {
            let own = GenerateOptions {
                account: c.clone(),
                ..opts.clone()
            };
            let mut bill = Vec::new();
            assert_eq!(&write_detail_csv(&own, false, &mut bill).unwrap(), s);
            let bill = String::from_utf8(bill).unwrap();
            let mine: Vec<&str> = lines.iter().skip(i).step_by(4).copied().collect();
            assert_eq!(mine, bill.lines().skip(1).collect::<Vec<_>>());
        }
        let name = consolidated_object_name("500000000009", "2025-11", 5).unwrap();
        assert!(
            name.starts_with("500000000009-2025-11--by_used_time-bill-details-consolidated_bill-")
        );
    }
}
