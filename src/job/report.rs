//! What a run tells its operator: a human summary on stdout, the same facts as JSON with
//! `--report FILE`, and the exit code a scheduler alerts on. The JSON lists the objects a run
//! loaded, rejected or found near-missing, and summarises skipped ones by reason (counts and a
//! few examples) unless asked to list them (`RunOptions::report_skipped`): a bucket of 50,000
//! objects of which 20 changed makes a report of 20 objects, not 50,000.

pub use crate::job::lake_notes::{LakeGap, RetainedUnits};
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
    /// For a rejected object: why, and where in it when known (member, line, column).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rejection: Option<crate::error::Rejection>,
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
    pub rules: crate::conformance::rules::RuleCounts,
    /// For a loaded snapshot: its rows and BilledCost from file to lake.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reconciliation: Option<Reconciliation>,
    /// An object no family recognised whose name looks like a bill (a copy suffix, an extra
    /// compression extension, an impossible date): it is not loaded, and the run says so.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub near_miss: bool,
}

/// One snapshot from file to lake: every row read is loaded or held out, and the BilledCost of
/// every row whose BilledCost could be read is in the lake or held out with its row.
#[derive(Debug, Clone, Default, Serialize, PartialEq, Eq)]
pub struct Reconciliation {
    pub rows_read: u64,
    pub rows_loaded: u64,
    pub rows_held_out: u64,
    /// Sum of BilledCost over every row whose BilledCost could be read (after the mapping, for
    /// native bills: 0 on Credit rows).
    pub billed_cost_file: String,
    /// Sum of BilledCost in the partition files written (what readers of the lake see).
    pub billed_cost_lake: String,
    pub billed_cost_held_out: String,
    /// Held-out rows whose BilledCost could not be read at all (their amount is unknown).
    pub rows_billed_cost_unreadable: u64,
}

impl Reconciliation {
    pub fn new(
        t: &crate::conformance::validate::RowTally,
        lake_cost: i128,
        scale: i8,
    ) -> Reconciliation {
        let f = |v| crate::ingest::decode::format_decimal(v, scale);
        Reconciliation {
            rows_read: t.rows_read,
            rows_loaded: t.rows_loaded,
            rows_held_out: t.rows_held_out,
            billed_cost_file: f(t.cost_read()),
            billed_cost_lake: f(lake_cost),
            billed_cost_held_out: f(t.cost_held_out),
            rows_billed_cost_unreadable: t.cost_unreadable_rows,
        }
    }

    /// The lake shows the whole file.
    pub fn complete(&self) -> bool {
        self.rows_held_out == 0
    }

    /// The one-line account for the human summary, in words.
    pub fn human(&self) -> String {
        if self.complete() {
            return format!(
                "{} rows read, all loaded; BilledCost file {} = lake {}",
                self.rows_read, self.billed_cost_file, self.billed_cost_lake
            );
        }
        let readable = self.rows_held_out - self.rows_billed_cost_unreadable;
        let mut parts = Vec::new();
        if readable > 0 {
            parts.push(format!(
                "{readable} with BilledCost {}",
                self.billed_cost_held_out
            ));
        }
        if self.rows_billed_cost_unreadable > 0 {
            parts.push(format!(
                "{} whose BilledCost cannot be read",
                self.rows_billed_cost_unreadable
            ));
        }
        format!(
            "{} rows read: {} loaded, {} held out; BilledCost file {} = lake {} + held out {}; THE LAKE LACKS {} ROW(S) OF THIS FILE ({})",
            self.rows_read,
            self.rows_loaded,
            self.rows_held_out,
            self.billed_cost_file,
            self.billed_cost_lake,
            self.billed_cost_held_out,
            self.rows_held_out,
            parts.join(", ")
        )
    }
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
    /// Objects recognised as bill files (by any family, in range or not).
    pub bills: u64,
    /// Unrecognised objects whose names look like bills (see `ObjectReport::near_miss`).
    pub near_misses: u64,
}

/// Skipped objects listed by reason in a report: at most this many examples per reason...
pub const SKIP_EXAMPLES: usize = 5;
/// ...and at most this many reasons (any further ones are counted under [`OTHER_REASONS`]).
pub const SKIP_REASONS: usize = 32;
pub const OTHER_REASONS: &str = "other reasons";

/// The objects a run skipped (near misses aside: those are always listed), by reason: what the
/// JSON report holds of them unless `--report-skipped`, so its size follows the work done, not
/// the bucket.
#[derive(Debug, Clone, Default, Serialize, PartialEq, Eq)]
pub struct SkipSummary {
    pub count: u64,
    /// Whether they are listed in `objects` too (`--report-skipped` / `-v`).
    pub listed: bool,
    /// By the reason's kind (its words before the object or snapshot it names), sorted.
    pub by_reason: Vec<SkipReason>,
}

#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct SkipReason {
    pub reason: String,
    pub count: u64,
    /// The first few objects skipped for it (in listing order), with their whole reason.
    pub examples: Vec<SkipExample>,
}

#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct SkipExample {
    pub key: String,
    pub reason: String,
}

/// A skip reason's kind: what precedes `:`, ` by ` or ` (`, which name the object or snapshot.
pub fn skip_kind(reason: &str) -> &str {
    [":", " by ", " ("]
        .iter()
        .filter_map(|sep| reason.find(sep))
        .min()
        .map_or(reason, |end| &reason[..end])
}

/// Skipped objects that the JSON report summarises rather than lists.
fn summarised(o: &ObjectReport) -> bool {
    o.outcome == Outcome::Skip && !o.near_miss
}

impl SkipSummary {
    fn of(objects: &[ObjectReport], listed: bool) -> SkipSummary {
        let mut by: std::collections::BTreeMap<&str, SkipReason> = Default::default();
        let mut count = 0;
        for o in objects.iter().filter(|o| summarised(o)) {
            count += 1;
            let mut kind = skip_kind(&o.reason);
            if !by.contains_key(kind) && by.len() >= SKIP_REASONS {
                kind = OTHER_REASONS;
            }
            let r = by.entry(kind).or_insert_with(|| SkipReason {
                reason: kind.to_string(),
                count: 0,
                examples: Vec::new(),
            });
            r.count += 1;
            if r.examples.len() < SKIP_EXAMPLES {
                r.examples.push(SkipExample {
                    key: o.key.clone(),
                    reason: o.reason.clone(),
                });
            }
        }
        SkipSummary {
            count,
            listed,
            by_reason: by.into_values().collect(),
        }
    }
}

/// The command a report is of: `run` loads, `plan` only says what `run` would do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum JobCommand {
    Run,
    Plan,
}

impl JobCommand {
    /// The command's name on the command line and in the report (`run`, `plan`).
    pub fn name(self) -> &'static str {
        match self {
            JobCommand::Run => "run",
            JobCommand::Plan => "plan",
        }
    }
}

impl std::fmt::Display for JobCommand {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// A run's report. In memory it holds every object (the human summary lists skipped ones with
/// `-v`); its JSON lists skipped objects only when `report_skipped` (or for `plan`, whose point
/// is what happens to each object), and summarises them in `skipped` always.
#[derive(Debug, Clone)]
pub struct RunReport {
    pub command: JobCommand,
    pub billpipe_version: String,
    pub source: String,
    pub dest: String,
    pub pipeline: String,
    pub started_at: String,
    pub seconds: f64,
    pub objects: Vec<ObjectReport>,
    pub totals: Totals,
    /// Skipped objects by reason (set by [`RunReport::compute_totals`]).
    pub skipped: SkipSummary,
    /// List every skipped object in the JSON too (`RunOptions::report_skipped`).
    pub report_skipped: bool,
    /// Units whose loaded snapshot lacks held-out rows, after this run (money not in the lake).
    pub lake_gaps: Vec<LakeGap>,
    /// Units in the lake with no object in the bucket any more.
    pub retained: RetainedUnits,
    /// What the run found of earlier runs killed while committing, and what it did about it
    /// (a unit reloaded, an unrecorded first load's files removed or not).
    pub repairs: Vec<String>,
    /// Set when the run itself failed (listing, writing the lake, ...).
    pub error: Option<String>,
    /// The process's exit code, in reports of runs that failed before they started.
    pub exit_code: Option<i32>,
}

/// The JSON form of a [`RunReport`].
#[derive(Serialize)]
struct RunReportJson<'a> {
    command: JobCommand,
    billpipe_version: &'a str,
    source: &'a str,
    dest: &'a str,
    pipeline: &'a str,
    started_at: &'a str,
    seconds: f64,
    objects: Vec<&'a ObjectReport>,
    totals: &'a Totals,
    skipped: &'a SkipSummary,
    lake_gaps: &'a [LakeGap],
    repairs: &'a [String],
    retained: &'a RetainedUnits,
    error: &'a Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    exit_code: Option<i32>,
}

impl Serialize for RunReport {
    fn serialize<S: serde::Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        let all = self.lists_skipped();
        RunReportJson {
            command: self.command,
            billpipe_version: &self.billpipe_version,
            source: &self.source,
            dest: &self.dest,
            pipeline: &self.pipeline,
            started_at: &self.started_at,
            seconds: self.seconds,
            objects: self
                .objects
                .iter()
                .filter(|o| all || !summarised(o))
                .collect(),
            totals: &self.totals,
            skipped: &self.skipped,
            lake_gaps: &self.lake_gaps,
            repairs: &self.repairs,
            retained: &self.retained,
            error: &self.error,
            exit_code: self.exit_code,
        }
        .serialize(s)
    }
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
            if o.family.is_some() {
                t.bills += 1;
            }
            if o.near_miss {
                t.near_misses += 1;
            }
            t.rows_loaded += o.rows_loaded;
            t.rows_quarantined += o.rows_quarantined;
            t.bytes_read += o.bytes_read;
            t.bytes_written += o.bytes_written;
        }
        self.totals = t;
        self.skipped = SkipSummary::of(&self.objects, self.lists_skipped());
    }

    /// Whether the JSON lists skipped objects (see [`RunReport`]).
    fn lists_skipped(&self) -> bool {
        self.report_skipped || self.command == JobCommand::Plan
    }

    /// Non-zero while money may be missing from the lake: objects rejected, rows held out (in
    /// this run or still, from an earlier one), names that look like bills but are not loaded,
    /// or a source with objects of which none is a bill. Conformance findings on rows that are
    /// in the lake never change it: imperfect data that is loaded is not an alert every night.
    pub fn exit_code(&self) -> i32 {
        if self.error.is_some() {
            EXIT_FAILED
        } else if self.money_missing() {
            EXIT_REJECTIONS
        } else {
            EXIT_OK
        }
    }

    fn money_missing(&self) -> bool {
        let t = &self.totals;
        t.rejected > 0
            || t.rows_quarantined > 0
            || t.near_misses > 0
            || !self.lake_gaps.is_empty()
            || self.no_bills()
    }

    /// The source has objects but none is a bill file of the pipeline.
    fn no_bills(&self) -> bool {
        self.totals.objects > 0 && self.totals.bills == 0
    }

    /// One line per object that was (or would be) acted on or rejected, then the totals.
    pub fn human(&self, verbose: bool) -> String {
        let mut s = String::new();
        let mut quiet_skips: std::collections::BTreeMap<&str, u64> = Default::default();
        for o in &self.objects {
            if o.outcome == Outcome::Skip
                && !verbose
                && self.command != JobCommand::Plan
                && !o.near_miss
            {
                // Grouped by the reason's kind: what follows `:`, ` by ` or ` (` names the
                // object or snapshot, which -v lists.
                *quiet_skips.entry(skip_kind(&o.reason)).or_default() += 1;
                continue;
            }
            let tag = match o.outcome {
                Outcome::Ingest => "ingest ",
                Outcome::Replace => "replace",
                Outcome::Skip if o.near_miss => "NEAR-MISS",
                Outcome::Skip => "skip   ",
                Outcome::Reject => "REJECT ",
            };
            s.push_str(&format!("{tag} {}  - {}\n", o.key, o.reason));
            if let Some(r) = &o.reconciliation {
                s.push_str(&format!("        {}\n", r.human()));
            }
            for p in &o.problems {
                s.push_str(&format!("        {p}\n"));
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
                let error = r.severity.is_some_and(|s| s.is_error());
                if error || verbose {
                    let sev = match r.severity {
                        Some(crate::conformance::rules::Severity::Quarantine) => "row(s) held out",
                        Some(crate::conformance::rules::Severity::Error) => "error(s)",
                        _ => "warning(s)",
                    };
                    s.push_str(&format!(
                        "        rule {id}: {} {sev}, e.g. {}\n",
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
        if !quiet_skips.is_empty() {
            let parts: Vec<String> = quiet_skips
                .iter()
                .map(|(why, n)| format!("{n} {why}"))
                .collect();
            s.push_str(&format!("skipped (-v to list): {}\n", parts.join(", ")));
        }
        if self.no_bills() {
            let examples: Vec<&str> = self
                .objects
                .iter()
                .take(3)
                .map(|o| o.key.as_str())
                .collect();
            s.push_str(&format!(
                "NO BILL FILES: none of the {} object(s) is a bill file of pipeline {} (e.g. {}); is --source right, or do these files need another --pipeline?\n",
                t.objects,
                self.pipeline,
                examples.join(", ")
            ));
        }
        if t.near_misses > 0 {
            s.push_str(&format!(
                "{} object(s) look like bills but match no family (NEAR-MISS above): not loaded\n",
                t.near_misses
            ));
        }
        for r in &self.repairs {
            s.push_str(&format!("REPAIRED: {r}\n"));
        }
        if self.retained.count > 0 {
            s.push_str(&format!(
                "{} unit(s) in the lake have no object in the bucket any more (e.g. {}): kept as loaded\n",
                self.retained.count,
                self.retained.examples.join(", ")
            ));
        }
        for g in &self.lake_gaps {
            s.push_str(&format!(
                "LAKE SHORT: {} (from {}) lacks {} held-out row(s){}{}; see {}\n",
                g.unit,
                g.source_key,
                g.rows_held_out,
                g.billed_cost_held_out
                    .as_ref()
                    .map(|c| format!(" with BilledCost {c}"))
                    .unwrap_or_default(),
                if g.rows_billed_cost_unreadable > 0 {
                    format!(
                        " ({} with unreadable BilledCost)",
                        g.rows_billed_cost_unreadable
                    )
                } else {
                    String::new()
                },
                g.quarantine.as_deref().unwrap_or("the report")
            ));
        }
        if self.command == JobCommand::Plan {
            s.push_str(&format!(
                "\n{} objects: {} to ingest, {} to replace, {} to skip\n",
                t.objects, t.ingested, t.replaced, t.skipped
            ));
        } else {
            s.push_str(&format!(
                "\n{} objects: {} ingested, {} replaced, {} skipped, {} rejected\n",
                t.objects, t.ingested, t.replaced, t.skipped, t.rejected
            ));
        }
        if self.command != JobCommand::Plan {
            s.push_str(&format!(
                "rows: {} loaded, {} held out; bytes: {} read, {} written; {:.2} s ({:.1} MB/s)\n",
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
