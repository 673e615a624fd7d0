//! Reading one object: its bytes streamed (`fetch`), unpacked (`unpack`), decoded into typed
//! Arrow batches (`decode`) and written as partitioned Parquet (`write`, through run files (`runs`) when a snapshot
//! spreads over many partitions).

pub mod decode;
pub mod fetch;
mod part;
pub mod pipeline;
mod runs;
mod small_file;
mod staged;
pub mod unpack;
pub mod write;
