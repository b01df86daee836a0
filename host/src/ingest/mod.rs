//! JetStream consumption: the stream, a durable pull consumer per plugin,
//! batches applied in one transaction each, dead letters and their re-drive.

mod batch;
mod projection;
mod stream;

pub use batch::{Item, Origin, project};
pub use projection::{Projection, ProjectionState};
pub use stream::{
    acknowledged_through, consumer_name, delete_consumer, ensure_stream, lag, replace_consumer,
    stream_subjects,
};
