//! What is loaded and what should be: bill files recognised by name (`classify`), the plan of
//! which snapshot each unit should show (`plan`), the record of what the lake holds (`ledger`),
//! and the lake's lock (`lock`).

pub mod classify;
pub mod ledger;
pub mod lock;
pub mod plan;
pub mod shard;
