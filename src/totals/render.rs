//! Printing totals: the table (with East Asian wide characters measured as two columns), JSON
//! and CSV (amounts as decimal strings), and the findings worth a reader's attention.

use std::collections::BTreeSet;
use std::fmt::Write as _;

use serde::Serialize;

use super::{FileSnapshot, GroupBy, Totals};
use crate::{Error, Result};

/// `云服务器 CVM`) take two.
fn display_width(s: &str) -> usize {
    s.chars()
        .map(|c| match u32::from(c) {
            0x1100..=0x115F
            | 0x2E80..=0x303E
            | 0x3041..=0x33FF
            | 0x3400..=0x4DBF
            | 0x4E00..=0x9FFF
            | 0xA000..=0xA4CF
            | 0xAC00..=0xD7A3
            | 0xF900..=0xFAFF
            | 0xFE30..=0xFE4F
            | 0xFF00..=0xFF60
            | 0xFFE0..=0xFFE6
            | 0x20000..=0x3FFFD => 2,
            _ => 1,
        })
        .sum()
}

impl Totals {
    /// Lines worth a reader's attention beyond the rows: ledger outputs the lake lacks, files
    /// the ledger does not know, null BilledCost.
    pub fn findings(&self) -> Vec<String> {
        let mut out = Vec::new();
        for (path, unit) in &self.missing {
            out.push(format!(
                "the ledger lists {path} (unit {unit}) but the lake has no such file: its rows \
                 are in no total"
            ));
        }
        let unknown: BTreeSet<&str> = self
            .rows
            .iter()
            .flat_map(|r| &r.files)
            .filter(|f| f.unit.is_none())
            .map(|f| f.file.as_str())
            .collect();
        for f in unknown {
            out.push(format!(
                "{f} is in the lake but in no ledger entry: readers count it, billpipe did not \
                 write it (or lost track of it)"
            ));
        }
        let shared: BTreeSet<(&str, &str)> = self
            .rows
            .iter()
            .filter(|r| {
                r.files
                    .iter()
                    .map(|f| &f.file)
                    .collect::<BTreeSet<_>>()
                    .len()
                    > 1
            })
            .map(|r| (r.billing_period.as_str(), r.billing_account_id.as_str()))
            .collect();
        for (period, account) in shared {
            out.push(format!(
                "billing_period={period}/billing_account_id={account} holds several files: \
                 their rows are added together, as readers do — check they do not overlap"
            ));
        }
        let null_billed: u64 = self.rows.iter().map(|r| r.sums.billed.nulls).sum();
        if null_billed > 0 {
            out.push(format!(
                "{null_billed} row(s) have a null BilledCost: counted in rows, not in BilledCost"
            ));
        }
        out
    }

    /// The table `billpipe totals` prints by default: aligned columns, a grand total per
    /// currency, then findings.
    pub fn human(&self) -> String {
        let dim = self.by.header();
        let mut header = vec!["month", "account", "currency"];
        header.extend(dim);
        header.extend([
            "rows",
            "BilledCost",
            "EffectiveCost",
            "EC null",
            "snapshot",
            "held out",
            "loaded at",
            "source",
        ]);
        // Columns right-aligned: the counts and amounts.
        let numeric = |h: &str| {
            matches!(
                h,
                "rows" | "BilledCost" | "EffectiveCost" | "EC null" | "held out"
            )
        };
        let mut table: Vec<Vec<String>> = Vec::new();
        for r in &self.rows {
            let mut cells = vec![
                r.billing_period.clone(),
                r.billing_account_id.clone(),
                r.currency.clone().unwrap_or_else(|| "(null)".into()),
            ];
            if dim.is_some() {
                cells.push(r.group.clone().unwrap_or_else(|| "(null)".into()));
            }
            cells.extend([
                r.sums.rows.to_string(),
                r.sums.billed.total().unwrap_or_default(),
                r.sums.effective.total().unwrap_or_default(),
                r.sums.effective.nulls.to_string(),
            ]);
            let lead = cells.len();
            for (n, f) in r.files.iter().enumerate() {
                let mut line = if n == 0 {
                    cells.clone()
                } else {
                    vec![String::new(); lead]
                };
                line.extend([
                    if f.reload_pending {
                        format!("{} (reload pending)", f.snapshot)
                    } else {
                        f.snapshot.clone()
                    },
                    f.rows_held_out.map(|n| n.to_string()).unwrap_or_default(),
                    f.loaded_at.clone().unwrap_or_default(),
                    f.source_key.clone().unwrap_or_else(|| f.file.clone()),
                ]);
                table.push(line);
            }
        }
        let rows_end = table.len();
        for t in &self.currency_totals {
            let mut cells = vec![
                "total".to_string(),
                String::new(),
                t.currency.clone().unwrap_or_else(|| "(null)".into()),
            ];
            if dim.is_some() {
                cells.push(String::new());
            }
            cells.extend([
                t.sums.rows.to_string(),
                t.sums.billed.total().unwrap_or_default(),
                t.sums.effective.total().unwrap_or_default(),
                t.sums.effective.nulls.to_string(),
                format!(
                    "{} partition{}",
                    t.partitions,
                    if t.partitions == 1 { "" } else { "s" }
                ),
                t.rows_held_out.to_string(),
                String::new(),
                String::new(),
            ]);
            table.push(cells);
        }
        let widths: Vec<usize> = (0..header.len())
            .map(|c| {
                table
                    .iter()
                    .map(|row| display_width(&row[c]))
                    .chain([header[c].len()])
                    .max()
                    .unwrap_or(0)
            })
            .collect();
        let line = |cells: &[String]| {
            let mut s = String::new();
            for (c, cell) in cells.iter().enumerate() {
                let pad = widths[c].saturating_sub(display_width(cell));
                if c > 0 {
                    s.push_str("  ");
                }
                if numeric(header[c]) {
                    s.push_str(&" ".repeat(pad));
                    s.push_str(cell);
                } else if c + 1 == cells.len() {
                    s.push_str(cell);
                } else {
                    s.push_str(cell);
                    s.push_str(&" ".repeat(pad));
                }
            }
            s.trim_end().to_string()
        };
        let mut out = String::new();
        let head: Vec<String> = header.iter().map(|h| h.to_string()).collect();
        let _ = writeln!(out, "{}", line(&head));
        for (n, row) in table.iter().enumerate() {
            if n == rows_end {
                let rule: usize = widths.iter().sum::<usize>() + 2 * (widths.len() - 1);
                let _ = writeln!(out, "{}", "-".repeat(rule.min(160)));
            }
            let _ = writeln!(out, "{}", line(row));
        }
        let _ = writeln!(
            out,
            "{} group{} from {} Parquet file{} of {}: amounts read from the files, snapshots \
             from the ledger",
            self.rows.len(),
            if self.rows.len() == 1 { "" } else { "s" },
            self.files_read,
            if self.files_read == 1 { "" } else { "s" },
            self.dest
        );
        let _ = writeln!(
            out,
            "EC null: rows whose EffectiveCost is null, left out of its sum (empty when all are); \
             held out: the unit's rows in _quarantine/"
        );
        for f in self.findings() {
            let _ = writeln!(out, "note: {f}");
        }
        out
    }

    /// A JSON array, one object per row (pretty-printed); amounts as decimal strings, `null`
    /// where every row is null.
    pub fn to_json(&self) -> Result<String> {
        /// Field order as in the table; the `--by` column only when grouping by it.
        #[derive(Serialize)]
        struct JsonRow<'a> {
            billing_period: &'a str,
            billing_account_id: &'a str,
            currency: Option<&'a str>,
            #[serde(skip_serializing_if = "Option::is_none")]
            service_name: Option<Option<&'a str>>,
            #[serde(skip_serializing_if = "Option::is_none")]
            sub_account_id: Option<Option<&'a str>>,
            rows: u64,
            billed_cost: Option<String>,
            billed_cost_null_rows: u64,
            effective_cost: Option<String>,
            effective_cost_null_rows: u64,
            snapshot: String,
            files: &'a [FileSnapshot],
        }
        let rows: Vec<JsonRow> = self
            .rows
            .iter()
            .map(|r| JsonRow {
                billing_period: &r.billing_period,
                billing_account_id: &r.billing_account_id,
                currency: r.currency.as_deref(),
                service_name: (self.by == GroupBy::Service).then_some(r.group.as_deref()),
                sub_account_id: (self.by == GroupBy::SubAccount).then_some(r.group.as_deref()),
                rows: r.sums.rows,
                billed_cost: r.sums.billed.total(),
                billed_cost_null_rows: r.sums.billed.nulls,
                effective_cost: r.sums.effective.total(),
                effective_cost_null_rows: r.sums.effective.nulls,
                snapshot: r.snapshot(),
                files: &r.files,
            })
            .collect();
        serde_json::to_string_pretty(&rows).map_err(|e| Error::Lake {
            path: self.dest.clone(),
            message: format!("writing JSON: {e}"),
        })
    }

    /// A header and one line per row; amounts as decimal strings, empty where every row is null.
    /// A group made of several files lists their snapshots separated by `; `.
    pub fn to_csv(&self) -> Result<String> {
        let mut w = csv::Writer::from_writer(Vec::new());
        let csv_err = |e: csv::Error| Error::Lake {
            path: self.dest.clone(),
            message: format!("writing CSV: {e}"),
        };
        let mut header = vec!["billing_period", "billing_account_id", "currency"];
        header.extend(self.by.field());
        header.extend([
            "rows",
            "billed_cost",
            "billed_cost_null_rows",
            "effective_cost",
            "effective_cost_null_rows",
            "snapshot",
            "unit",
            "source_key",
            "source_etag",
            "loaded_at",
            "rows_held_out",
            "quarantine",
            "files",
        ]);
        w.write_record(&header).map_err(csv_err)?;
        for r in &self.rows {
            let join = |f: &dyn Fn(&FileSnapshot) -> Option<String>| {
                r.files
                    .iter()
                    .map(|x| f(x).unwrap_or_default())
                    .collect::<Vec<_>>()
                    .join("; ")
            };
            let mut rec = vec![
                r.billing_period.clone(),
                r.billing_account_id.clone(),
                r.currency.clone().unwrap_or_default(),
            ];
            if self.by.field().is_some() {
                rec.push(r.group.clone().unwrap_or_default());
            }
            rec.extend([
                r.sums.rows.to_string(),
                r.sums.billed.total().unwrap_or_default(),
                r.sums.billed.nulls.to_string(),
                r.sums.effective.total().unwrap_or_default(),
                r.sums.effective.nulls.to_string(),
                r.snapshot(),
                join(&|f| f.unit.clone()),
                join(&|f| f.source_key.clone()),
                join(&|f| f.source_etag.clone()),
                join(&|f| f.loaded_at.clone()),
                join(&|f| f.rows_held_out.map(|n| n.to_string())),
                join(&|f| f.quarantine.clone()),
                join(&|f| Some(f.file.clone())),
            ]);
            w.write_record(&rec).map_err(csv_err)?;
        }
        let bytes = w.into_inner().map_err(|e| Error::Lake {
            path: self.dest.clone(),
            message: format!("writing CSV: {e}"),
        })?;
        String::from_utf8(bytes).map_err(|e| Error::Lake {
            path: self.dest.clone(),
            message: format!("writing CSV: {e}"),
        })
    }
}
