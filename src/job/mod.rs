//! A run from start to end (`run`) and what it tells its operator (`report`).

pub mod report;
pub mod run;
