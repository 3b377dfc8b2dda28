//! What each `partlog.v1.PartLog` RPC needs, taken from its decoded
//! request: the one table of RPC → permission → resource.
//!
//! | RPC | needs |
//! |---|---|
//! | CreateStream, DeleteStream, ResizeStream | `admin` on the stream |
//! | DescribeStream | `read`, `write` or `admin` on the stream |
//! | ListStreams | nothing; it lists the streams the caller has `read`, `write` or `admin` on |
//! | Publish, PublishStream (each message) | `write` on the stream; with a source's commit_offset also `group` on the source's group |
//! | Read | `read` on the stream |
//! | Subscribe, Consume (its first message) | `read` on the stream; in a group also `group` on the group |
//! | Commit, ResetOffsets | `group` on the group (of that stream) |
//! | GetOffsets | `describe` or `group` on the group |
//! | ListGroups | `read` on the stream; it lists the groups the caller has `describe` or `group` on |
//!
//! A new RPC implements [`Protected`] for its request message(s) here and
//! calls [`super::authorize`] (or [`super::Caller::check`] per message of a
//! client stream that names a stream) before its handler does anything;
//! `tests/security.rs` fails for an RPC that is not in its table.

use super::principals::{Permission, Resource};
use crate::proto;

/// One condition of a call: any of `permissions` on `resource`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Need<'a> {
    pub any_of: &'static [Permission],
    pub resource: Resource<'a>,
}

/// A request message whose fields say what the call touches.
pub trait Protected {
    /// Every condition must hold.
    fn needs(&self) -> Vec<Need<'_>>;
}

/// A call that reads or writes no stream of its own: revoking it takes
/// only its caller's credential.
impl Protected for () {
    fn needs(&self) -> Vec<Need<'_>> {
        Vec::new()
    }
}

fn on_stream<'a>(any_of: &'static [Permission], stream: &'a str) -> Need<'a> {
    Need {
        any_of,
        resource: Resource::Stream(stream),
    }
}

fn on_group<'a>(stream: &'a str, group: &'a str) -> Need<'a> {
    Need {
        any_of: &[Permission::Group],
        resource: Resource::Group { stream, group },
    }
}

/// Looking at a group (its offsets, its members) without acting on it.
fn describing_group<'a>(stream: &'a str, group: &'a str) -> Need<'a> {
    Need {
        any_of: DESCRIBE,
        resource: Resource::Group { stream, group },
    }
}

const ADMIN: &[Permission] = &[Permission::Admin];
const WRITE: &[Permission] = &[Permission::Write];
const READ: &[Permission] = &[Permission::Read];
/// Seeing what a group did: its own members, or anyone allowed to describe it.
pub const DESCRIBE: &[Permission] = &[Permission::Describe, Permission::Group];
/// Describing a stream is what anyone who may use it needs to know.
pub const ANY_USE: &[Permission] = &[Permission::Read, Permission::Write, Permission::Admin];

impl Protected for proto::CreateStreamRequest {
    fn needs(&self) -> Vec<Need<'_>> {
        vec![on_stream(ADMIN, &self.stream)]
    }
}

impl Protected for proto::DeleteStreamRequest {
    fn needs(&self) -> Vec<Need<'_>> {
        vec![on_stream(ADMIN, &self.stream)]
    }
}

impl Protected for proto::ResizeStreamRequest {
    fn needs(&self) -> Vec<Need<'_>> {
        vec![on_stream(ADMIN, &self.stream)]
    }
}

impl Protected for proto::DescribeStreamRequest {
    fn needs(&self) -> Vec<Need<'_>> {
        vec![on_stream(ANY_USE, &self.stream)]
    }
}

impl Protected for proto::PublishRequest {
    fn needs(&self) -> Vec<Need<'_>> {
        publishing(&self.stream, self.source.as_ref())
    }
}

impl Protected for proto::PublishStreamRequest {
    fn needs(&self) -> Vec<Need<'_>> {
        publishing(&self.stream, self.source.as_ref())
    }
}

/// Writing to `stream`; committing a source's input offset is a commit of
/// its group.
fn publishing<'a>(stream: &'a str, source: Option<&'a proto::Source>) -> Vec<Need<'a>> {
    let mut needs = vec![on_stream(WRITE, stream)];
    if let Some(source) = source.filter(|s| s.commit_offset.is_some()) {
        needs.push(on_group(&source.stream, &source.group));
    }
    needs
}

impl Protected for proto::ReadRequest {
    fn needs(&self) -> Vec<Need<'_>> {
        vec![on_stream(READ, &self.stream)]
    }
}

impl Protected for proto::SubscribeRequest {
    fn needs(&self) -> Vec<Need<'_>> {
        let mut needs = vec![on_stream(READ, &self.stream)];
        // Joining a group takes partitions from its other members.
        if !self.group.is_empty() {
            needs.push(on_group(&self.stream, &self.group));
        }
        needs
    }
}

impl Protected for proto::ConsumeRequest {
    fn needs(&self) -> Vec<Need<'_>> {
        // Only the first request names what the call reads; the later ones
        // (credit, the member's commits) act on it.
        let Some(open) = &self.open else {
            return Vec::new();
        };
        let mut needs = vec![on_stream(READ, &open.stream)];
        // A member takes partitions from the group's others and commits.
        if !open.group.is_empty() {
            needs.push(on_group(&open.stream, &open.group));
        }
        needs
    }
}

impl Protected for proto::CommitRequest {
    fn needs(&self) -> Vec<Need<'_>> {
        vec![on_group(&self.stream, &self.group)]
    }
}

impl Protected for proto::ResetOffsetsRequest {
    fn needs(&self) -> Vec<Need<'_>> {
        vec![on_group(&self.stream, &self.group)]
    }
}

impl Protected for proto::GetOffsetsRequest {
    fn needs(&self) -> Vec<Need<'_>> {
        vec![describing_group(&self.stream, &self.group)]
    }
}

impl Protected for proto::DescribeGroupRequest {
    fn needs(&self) -> Vec<Need<'_>> {
        vec![describing_group(&self.stream, &self.group)]
    }
}

/// Listing needs nothing: the answer holds only the streams the caller
/// may describe.
impl Protected for proto::ListStreamsRequest {
    fn needs(&self) -> Vec<Need<'_>> {
        Vec::new()
    }
}

impl Protected for proto::ListGroupsRequest {
    fn needs(&self) -> Vec<Need<'_>> {
        vec![on_stream(READ, &self.stream)]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn subscribing_in_a_group_needs_the_group_too() {
        let alone = proto::SubscribeRequest {
            stream: "orders".into(),
            ..Default::default()
        };
        assert_eq!(alone.needs(), [on_stream(READ, "orders")]);
        let member = proto::SubscribeRequest {
            stream: "orders".into(),
            group: "billing".into(),
            ..Default::default()
        };
        assert_eq!(
            member.needs(),
            [on_stream(READ, "orders"), on_group("orders", "billing")]
        );
    }
}
