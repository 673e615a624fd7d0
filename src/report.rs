//! What a run tells its operator: a human summary on stdout, the same facts as JSON with
//! `--report FILE`, and the exit code a scheduler alerts on.

use serde::Serialize;

/// Exit codes (documented in the README).
pub const EXIT_OK: i32 = 0;
pub const EXIT_FAILED: i32 = 1;
pub const EXIT_REJECTIONS: i32 = 3;
pub const EXIT_LOCKED: i32 = 4;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Outcome {
    /// First snapshot of a unit loaded (or, for `plan`, would be).
    Ingest,
    /// A loaded snapshot replaced.
    Replace,
    Skip,
    /// The file could not be loaded; the lake keeps what it had.
    Reject,
}

#[derive(Debug, Clone, Serialize)]
pub struct ObjectReport {
    pub key: String,
    pub size: u64,
    pub etag: String,
    pub family: Option<String>,
    pub snapshot_unit: Option<String>,
    pub outcome: Outcome,
    pub reason: String,
    pub rows_loaded: u64,
    pub rows_quarantined: u64,
    pub billed_cost: Option<String>,
    pub bytes_read: u64,
    pub bytes_written: u64,
    pub outputs: Vec<String>,
    pub quarantine: Option<String>,
    /// First quarantined rows, as `line N, column C: reason (value)`.
    pub problems: Vec<String>,
    /// Remarks about the header (unknown columns, case mismatches, ...).
    pub notes: Vec<String>,
    pub seconds: f64,
    /// Where the time went (seconds busy per stage; fetch is wall time of the download).
    pub stages: StageSeconds,
    /// Conformance rules the object's rows broke: severity, count, first examples.
    pub rules: crate::rules::RuleCounts,
}

#[derive(Debug, Clone, Default, Serialize)]
pub struct StageSeconds {
    pub fetch: f64,
    pub decode: f64,
    pub write: f64,
    pub commit: f64,
}

#[derive(Debug, Clone, Default, Serialize)]
pub struct Totals {
    pub objects: u64,
    pub ingested: u64,
    pub replaced: u64,
    pub skipped: u64,
    pub rejected: u64,
    pub rows_loaded: u64,
    pub rows_quarantined: u64,
    pub bytes_read: u64,
    pub bytes_written: u64,
}

#[derive(Debug, Clone, Serialize)]
pub struct RunReport {
    pub command: String,
    pub billpipe_version: String,
    pub source: String,
    pub dest: String,
    pub pipeline: String,
    pub started_at: String,
    pub seconds: f64,
    pub objects: Vec<ObjectReport>,
    pub totals: Totals,
    /// Set when the run itself failed (listing, writing the lake, ...).
    pub error: Option<String>,
}

impl RunReport {
    pub fn compute_totals(&mut self) {
        let mut t = Totals::default();
        for o in &self.objects {
            t.objects += 1;
            match o.outcome {
                Outcome::Ingest => t.ingested += 1,
                Outcome::Replace => t.replaced += 1,
                Outcome::Skip => t.skipped += 1,
                Outcome::Reject => t.rejected += 1,
            }
            t.rows_loaded += o.rows_loaded;
            t.rows_quarantined += o.rows_quarantined;
            t.bytes_read += o.bytes_read;
            t.bytes_written += o.bytes_written;
        }
        self.totals = t;
    }

    pub fn exit_code(&self) -> i32 {
        if self.error.is_some() {
            EXIT_FAILED
        } else if self.totals.rejected > 0 || self.totals.rows_quarantined > 0 {
            EXIT_REJECTIONS
        } else {
            EXIT_OK
        }
    }

    /// One line per object that was (or would be) acted on or rejected, then the totals.
    pub fn human(&self, verbose: bool) -> String {
        let mut s = String::new();
        let would = if self.command == "plan" { "would " } else { "" };
        for o in &self.objects {
            if o.outcome == Outcome::Skip && !verbose && self.command != "plan" {
                continue;
            }
            let tag = match o.outcome {
                Outcome::Ingest => "ingest ",
                Outcome::Replace => "replace",
                Outcome::Skip => "skip   ",
                Outcome::Reject => "REJECT ",
            };
            s.push_str(&format!("{tag} {}  - {}\n", o.key, o.reason));
            if self.command != "plan" && matches!(o.outcome, Outcome::Ingest | Outcome::Replace) {
                s.push_str(&format!(
                    "        {} rows loaded, {} quarantined, BilledCost {}\n",
                    o.rows_loaded,
                    o.rows_quarantined,
                    o.billed_cost.as_deref().unwrap_or("-")
                ));
            }
            for p in &o.problems {
                s.push_str(&format!("        quarantined: {p}\n"));
            }
            if let Some(q) = &o.quarantine {
                s.push_str(&format!("        quarantine file: {q}\n"));
            }
            for n in &o.notes {
                s.push_str(&format!("        note: {n}\n"));
            }
            // Errors with examples; warnings (expected gaps a profile accepts) in one line
            // unless -v, so a nightly log shows what changed rather than the same gaps.
            let mut warnings = Vec::new();
            for (id, r) in &o.rules {
                let error = r.severity == Some(crate::rules::Severity::Error);
                if error || verbose {
                    let sev = if error { "error" } else { "warning" };
                    s.push_str(&format!(
                        "        rule {id}: {} {sev}(s), e.g. {}\n",
                        r.count,
                        r.examples.join("; ")
                    ));
                } else {
                    warnings.push(format!("{id} {}", r.count));
                }
            }
            if !warnings.is_empty() {
                s.push_str(&format!(
                    "        warnings (-v for examples): {}\n",
                    warnings.join(", ")
                ));
            }
        }
        let t = &self.totals;
        s.push_str(&format!(
            "\n{} objects: {} {would}ingested, {} {would}replaced, {} skipped, {} rejected\n",
            t.objects, t.ingested, t.replaced, t.skipped, t.rejected
        ));
        if self.command != "plan" {
            s.push_str(&format!(
                "rows: {} loaded, {} quarantined; bytes: {} read, {} written; {:.2} s ({:.1} MB/s)\n",
                t.rows_loaded,
                t.rows_quarantined,
                t.bytes_read,
                t.bytes_written,
                self.seconds,
                if self.seconds > 0.0 {
                    t.bytes_read as f64 / 1e6 / self.seconds
                } else {
                    0.0
                }
            ));
        }
        if let Some(e) = &self.error {
            s.push_str(&format!("RUN FAILED: {e}\n"));
        }
        s
    }
}
