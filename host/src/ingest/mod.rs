//! JetStream consumption: the stream, a durable pull consumer per plugin
//! and host, the partitions each host holds, batches applied in one
//! transaction each, dead letters and their re-drive, and the lag.

mod apply;
mod batch;
mod claims;
mod lag;
mod projection;
mod state;
mod stream;

pub use apply::{Batcher, Committed, Flight, Staged};
pub use batch::{Item, Origin};
pub use lag::{backlog, head, partitions_behind, slowest};
pub use projection::Projection;
pub use state::{Controls, Progress, ProjectionState, VersionSlot};
pub use stream::{
    acknowledged_through, consumer_name, delete_consumer, ensure_stream, lag, replace_consumer,
    stream_subjects,
};
