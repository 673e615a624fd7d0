//! billpipe turns cloud bill files in an object-storage bucket (or a local folder) into a typed,
//! Hive-partitioned Parquet lake, treating every bill file as a *snapshot* of one
//! (account, billing month) so that totals are never double-counted.
//!
//! The map, one folder per role (each module's first lines say what it owns):
//!
//! ```text
//! store/        one Store trait (local folder, S3/COS, memory); Source and Lake are a store + prefix
//!   │ list
//! state/        classify keys into bill files → plan which snapshot each unit shows (ledger) → lock
//!   │ per snapshot: its objects
//! ingest/       the object pipeline: fetch → unpack → decode (CSV → typed Arrow) ─┐
//! conformance/  … → check (schema, mapping, rules, profiles: data in schemas/) ←──┘ → Sink
//!   │ Sink = lake sink (job::load: Parquet writer + quarantine) or verdict sink (job::verdict)
//! job/          run (plan, lock, load, commit, ledger), validate, state; the run report
//! totals/       sums the lake as its readers see it
//! values, config, partition, error: leaves (decimals, months, time; config files; Hive paths)
//! generate/     realistic test and benchmark input
//! ```
//!
//! The binary (`src/main.rs`, `src/cli/`) only parses the command line and prints.

pub mod config;
pub mod conformance;
pub mod error;
mod fault;
pub mod generate;
pub mod ingest;
pub mod job;
pub mod partition;
pub mod state;
pub mod store;
pub mod totals;
pub mod values;

pub use error::{Error, Result};
