//! Reading one object: its bytes streamed (`fetch`), unpacked (`unpack`), decoded into typed
//! Arrow batches (`decode`) and written as partitioned Parquet (`write`).

pub mod decode;
pub mod fetch;
pub mod pipeline;
pub mod unpack;
pub mod write;
