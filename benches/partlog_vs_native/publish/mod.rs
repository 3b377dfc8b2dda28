//! Publishing: the paths a batch takes to the broker — partlog `Publish`,
//! partlog `PublishStream`, the native super stream producer, native
//! producers per partition — behind one trait, and one driver
//! ([`drive`]) that pushes batches through any of them.

mod driver;
mod native;
mod partlog;

use futures::future::BoxFuture;

pub use self::partlog::PartlogStream;
pub use driver::{close, drive, prime, Pace};
pub use native::{key_property, NamedProducer};

use crate::bench::Variant;
use crate::records::Record;
use crate::report::Side;
use crate::setup::{Partlog, Result};

/// Resolves once the broker confirmed every record of a batch (to their
/// count), or fails when any was refused.
pub type Confirmed = BoxFuture<'static, Result<u64>>;

/// Where batches are published.
pub trait PublishPath: Send {
    /// Hands a batch over; waits only as long as the path makes a sender
    /// wait before taking more (e.g. a full producer queue).
    fn submit(&mut self, batch: Vec<Record>) -> BoxFuture<'_, Result<Confirmed>>;

    /// Releases the path's connections, calls and producers.
    fn close(self: Box<Self>) -> BoxFuture<'static, ()>;
}

/// The publishing set-ups compared.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PublishVariant {
    /// `clients` concurrent `Publish` calls, each on its own channel.
    PartlogPublish,
    /// One `PublishStream` call with `clients` batches in flight.
    PartlogPublishStream,
    /// `clients` native super stream producers routing by the
    /// `partlog.key` property with `HashRoutingMurmurStrategy`.
    NativeSuperStream,
    /// One native producer per partition shared by `clients` senders that
    /// route with the same murmur3 hash: the fastest native set-up.
    NativePerPartition,
}

impl Variant for PublishVariant {
    fn side(self) -> Side {
        match self {
            PublishVariant::PartlogPublish | PublishVariant::PartlogPublishStream => Side::Partlog,
            PublishVariant::NativeSuperStream | PublishVariant::NativePerPartition => Side::Native,
        }
    }

    fn id(self) -> &'static str {
        match self {
            PublishVariant::PartlogPublish => "partlog-publish",
            PublishVariant::PartlogPublishStream => "partlog-publish-stream",
            PublishVariant::NativeSuperStream => "native-super-stream-producer",
            PublishVariant::NativePerPartition => "native-producer-per-partition",
        }
    }
}

impl PublishVariant {
    pub fn label(self) -> &'static str {
        match self {
            PublishVariant::PartlogPublish => "Publish",
            PublishVariant::PartlogPublishStream => "PublishStream",
            PublishVariant::NativeSuperStream => "native SuperStreamProducer",
            PublishVariant::NativePerPartition => "native Producer per partition",
        }
    }

    /// Opens the variant's paths on the target stream, and how many batches
    /// each keeps in flight: every variant has `clients` batches in flight
    /// in all.
    pub async fn open(
        self,
        target: &Target<'_>,
        clients: usize,
    ) -> Result<(Vec<Box<dyn PublishPath>>, usize)> {
        Ok(match self {
            PublishVariant::PartlogPublish => (partlog::unary_paths(target, clients).await?, 1),
            PublishVariant::PartlogPublishStream => {
                (vec![partlog::stream_path(target).await?], clients)
            }
            PublishVariant::NativeSuperStream => {
                (native::super_stream_paths(target, clients).await?, 1)
            }
            PublishVariant::NativePerPartition => {
                (native::per_partition_paths(target, clients).await?, 1)
            }
        })
    }
}

/// What a variant publishes to.
pub struct Target<'a> {
    pub partlog: &'a Partlog,
    pub environment: &'a rabbitmq_stream_client::Environment,
    pub stream: &'a str,
    pub partitions: u32,
    pub batch: usize,
    pub value_size: usize,
}
