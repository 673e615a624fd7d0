//! The commands' work, from start to end: a run (`run`: plan, lock, load each snapshot with
//! `load`, publish it with `commit`), `validate`'s verdicts (`verdict`), the ledger read and
//! reset (`state`), and what a run tells its operator (`report`).

pub mod commit;
pub(crate) mod context;
mod load;
pub mod report;
pub mod run;
pub mod state;
pub mod verdict;
