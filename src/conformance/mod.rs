//! What a FOCUS row must be: the columns per version (`schema`), native-to-FOCUS mappings
//! (`mapping`), the rules and profiles that judge rows (`rules`), and the check stage that applies
//! them (`validate`).

pub mod mapping;
pub mod rules;
pub mod schema;
pub mod validate;
