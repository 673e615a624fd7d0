//! billpipe turns cloud bill files in an object-storage bucket (or a local folder) into a typed,
//! Hive-partitioned Parquet lake, treating every bill file as a *snapshot* of one
//! (account, billing month) so that totals are never double-counted.
//!
//! The crate is organised as the stages of one pipeline, each in its own module:
//!
//! ```text
//! source ─▶ classify ─▶ plan ─▶ fetch ─▶ decode ─▶ validate ─▶ write ─▶ ledger (commit)
//! ```
//!
//! `lake` is where output goes (local folder or S3), `report` what a run tells its operator,
//! `run` wires the stages together, `totals` sums the lake as its readers see it, and `generate`
//! makes realistic test and benchmark input.

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
