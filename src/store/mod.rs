//! Where bytes live: bill files to read (`source`), the lake to write (`lake`), and the
//! S3-compatible access both share (`s3`).

pub mod lake;
pub mod s3;
pub mod source;
