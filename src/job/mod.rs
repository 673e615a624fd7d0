//! The commands' work, from start to end: a run (`run`: plan, lock, load each snapshot with
//! `load`, publish it with `commit`), `validate`'s verdicts (`verdict`), the ledger read and
//! reset (`state`), and what a run tells its operator (`report`, with `lake_notes` on the lake as a whole).

pub mod commit;
pub(crate) mod context;
pub mod lake_notes;
mod load;
pub mod report;
pub mod run;
pub mod state;
pub mod verdict;
