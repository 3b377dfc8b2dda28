//! Broker connections that carry publishers.
//!
//! The stream protocol numbers a connection's publishers with one byte and
//! tags every confirm and publish error with that number, so one connection
//! can carry up to 255 producers. All producers to a node share
//! [`SharedPublishConnections`]: at most [`CONNECTIONS_PER_NODE`] per node,
//! a new producer joining the one with the fewest: connections grow with
//! the cluster's nodes, not with partitions and producer ids, while the
//! busiest partitions still spread over a few sockets and broker processes.
//! A new producer costs a publisher declaration instead of a new connection
//! (about 90 ms, see [`super::reader::ReaderPool`]).
//!
//! Lifetime: a connection lives while it carries publishers; the last one
//! to detach closes it. When it fails, every publisher on it loses its
//! unconfirmed records (UNAVAILABLE) and is marked closed, and the
//! connection takes no new publisher.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use super::confirms::{publish_error, Confirms, Stored};
use super::connect::Connector;
use super::node::Node;
use super::protocol::link::{Frames, Link};
use super::protocol::publisher::{self, PublisherEvent};
use super::protocol::wire::Frame;
use crate::error::{Error, Reason, Result};
use crate::sync::lock;
use crate::telemetry::ConnectionKind;

/// Where a publisher's confirms go.
#[derive(Clone)]
pub(super) struct Route {
    /// The partition stream it publishes to.
    pub stream: String,
    pub confirms: Arc<Confirms>,
    /// Set when the publisher lost its records: its owner replaces it.
    pub closed: Arc<AtomicBool>,
}

impl Route {
    fn lose(&self, error: &Error) {
        self.closed.store(true, Ordering::Release);
        self.confirms.fail_all(error);
    }
}

#[derive(Default)]
struct Routes {
    state: Mutex<RouteState>,
}

#[derive(Default)]
struct RouteState {
    publishers: HashMap<u8, Route>,
    /// The id given last. Ids go round, so that a late confirm for a
    /// departed publisher cannot reach a new one under the same id.
    last_id: u8,
    /// Failed, unresponsive, or closing after its last publisher left:
    /// takes no new publisher.
    retired: bool,
}

impl RouteState {
    fn add(&mut self, route: Route) -> Option<u8> {
        if self.retired {
            return None;
        }
        let id = (1..=u8::MAX)
            .map(|step| self.last_id.wrapping_add(step))
            .find(|id| *id != 0 && !self.publishers.contains_key(id))?;
        self.publishers.insert(id, route);
        self.last_id = id;
        Some(id)
    }
}

impl Routes {
    fn state(&self) -> MutexGuard<'_, RouteState> {
        lock(&self.state)
    }

    fn route(&self, publisher_id: u8) -> Option<Route> {
        self.state().publishers.get(&publisher_id).cloned()
    }

    fn fail(&self, error: &Error) {
        let mut state = self.state();
        state.retired = true;
        state.publishers.values().for_each(|r| r.lose(error));
    }
}

impl Frames for Routes {
    /// Hands a frame to the publisher it concerns.
    fn frame(&self, frame: Frame) -> Result<()> {
        match publisher::event(frame)? {
            Some(PublisherEvent::Confirmed { publisher, ids }) => {
                if let Some(route) = self.route(publisher) {
                    for id in ids {
                        route.confirms.resolve(id, Ok(Stored::Written));
                    }
                }
            }
            Some(PublisherEvent::Refused { publisher, errors }) => {
                if let Some(route) = self.route(publisher) {
                    for (id, code) in errors {
                        route.confirms.resolve(id, Err(publish_error(code)));
                    }
                }
            }
            Some(PublisherEvent::Moved { stream }) => {
                // The broker dropped the stream's publishers, whose records
                // in flight will not be confirmed.
                let error = Error::new(
                    Reason::PartitionMoved,
                    "the partition's leader changed or the stream was deleted",
                );
                let state = self.state();
                state
                    .publishers
                    .values()
                    .filter(|r| stream.as_ref().is_none_or(|s| *s == r.stream))
                    .for_each(|r| r.lose(&error));
            }
            None => {}
        }
        Ok(())
    }

    fn ended(&self, why: &Error) {
        self.fail(why);
    }
}

/// One broker connection and the publishers it carries.
pub(super) struct PublishConnection {
    link: Link,
    routes: Arc<Routes>,
}

/// Largest frame a publishing connection reads: confirms, errors, answers.
const MAX_ANSWER: u32 = 1024 * 1024;

impl PublishConnection {
    pub(super) async fn open(connector: &Connector, node: &Node) -> Result<PublishConnection> {
        let routes = Arc::new(Routes::default());
        let link = Link::open(
            connector,
            node,
            "partlog-producer",
            ConnectionKind::Producer,
            MAX_ANSWER,
            routes.clone(),
        )
        .await?;
        Ok(PublishConnection { link, routes })
    }

    pub(super) fn link(&self) -> &Link {
        &self.link
    }

    /// Adds a publisher and returns its id; `None` when the connection is
    /// full or retired.
    pub(super) fn attach(&self, route: Route) -> Option<u8> {
        self.routes.state().add(route)
    }

    /// The connection stopped answering (a request or confirms timed out):
    /// it takes no new publisher and closes once its publishers left.
    pub(super) fn retire(&self) {
        self.routes.state().retired = true;
    }

    /// Removes a publisher; the last one out closes the connection.
    pub(super) fn detach(&self, publisher_id: u8) {
        let last = {
            let mut state = self.routes.state();
            state.publishers.remove(&publisher_id);
            if state.publishers.is_empty() {
                state.retired = true;
            }
            state.retired && state.publishers.is_empty()
        };
        if last {
            self.link.close();
        }
    }

    /// Publishers on it now.
    fn publishers(&self) -> usize {
        self.routes.state().publishers.len()
    }

    fn takes_publishers(&self) -> bool {
        !self.routes.state().retired && !self.link.has_failed()
    }
}

/// Most connections partlog opens to one node for publishing.
pub const CONNECTIONS_PER_NODE: usize = 4;

/// The connections producers share, per node; one per broker handle.
#[derive(Default)]
pub struct SharedPublishConnections {
    /// A tokio mutex: held while a connection opens, so that publishers
    /// arriving together share it.
    by_node: tokio::sync::Mutex<HashMap<Node, Vec<Arc<PublishConnection>>>>,
}

impl SharedPublishConnections {
    /// Attaches `route` to the connection to `node` with the fewest
    /// publishers, opening one while the node has fewer than
    /// [`CONNECTIONS_PER_NODE`] (or all are full). Held while opening, so
    /// that publishers arriving together share the new connection instead
    /// of opening one each.
    pub(super) async fn attach(
        &self,
        connector: &Connector,
        node: &Node,
        route: Route,
    ) -> Result<(Arc<PublishConnection>, u8)> {
        let mut by_node = self.by_node.lock().await;
        let connections = by_node.entry(node.clone()).or_default();
        connections.retain(|c| c.takes_publishers());
        if connections.len() >= CONNECTIONS_PER_NODE {
            let mut by_load: Vec<&Arc<PublishConnection>> = connections.iter().collect();
            by_load.sort_by_key(|c| c.publishers());
            for connection in by_load {
                if let Some(id) = connection.attach(route.clone()) {
                    return Ok((connection.clone(), id));
                }
            }
        }
        let connection = Arc::new(PublishConnection::open(connector, node).await?);
        let id = connection
            .attach(route)
            .ok_or_else(|| Error::new(Reason::Internal, "a new connection refused a publisher"))?;
        connections.push(connection.clone());
        Ok((connection, id))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn route() -> Route {
        Route {
            stream: "s-0".into(),
            confirms: Arc::default(),
            closed: Arc::default(),
        }
    }

    #[test]
    fn publisher_ids_go_round_and_a_full_or_retired_connection_takes_none() {
        let mut state = RouteState::default();
        assert_eq!(state.add(route()), Some(1));
        assert_eq!(state.add(route()), Some(2));
        state.publishers.remove(&1);
        assert_eq!(
            state.add(route()),
            Some(3),
            "a freed id is not given at once"
        );
        while state.add(route()).is_some() {}
        assert_eq!(
            state.publishers.len(),
            255,
            "ids 1..=255, 1 again after going round"
        );
        state.publishers.remove(&7);
        assert_eq!(state.add(route()), Some(7));
        state.retired = true;
        state.publishers.remove(&7);
        assert_eq!(state.add(route()), None);
    }
}
