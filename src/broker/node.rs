//! Broker nodes: where partitions live, and the nodes partlog may
//! administer through.

/// A broker node as the cluster advertises it.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Node {
    pub host: String,
    pub port: u16,
}

impl std::fmt::Display for Node {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}:{}", self.host, self.port)
    }
}

/// Where one partition stream lives.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PartitionPlacement {
    pub leader: Node,
    pub replicas: Vec<Node>,
}

/// The nodes partlog may administer through, in the order it tries them.
#[derive(Debug)]
pub(super) struct KnownNodes {
    /// Configured nodes first, then the ones metadata named.
    nodes: Vec<Node>,
    /// The node that answered last; tried first. One of `nodes`.
    preferred: Node,
}

impl KnownNodes {
    /// The configured nodes, `first` (`broker.host`) preferred.
    pub(super) fn new(first: Node, others: impl IntoIterator<Item = Node>) -> KnownNodes {
        let mut known = KnownNodes {
            nodes: vec![first.clone()],
            preferred: first,
        };
        known.learn(others);
        known
    }

    /// The node that answered last.
    pub(super) fn preferred(&self) -> &Node {
        &self.preferred
    }

    /// Every node once, the preferred one first, the others in their order
    /// after it.
    pub(super) fn in_order(&self) -> Vec<Node> {
        let at = self
            .nodes
            .iter()
            .position(|n| *n == self.preferred)
            .unwrap_or_default();
        let count = self.nodes.len();
        self.nodes
            .iter()
            .cycle()
            .skip(at)
            .take(count)
            .cloned()
            .collect()
    }

    pub(super) fn prefer(&mut self, node: &Node) {
        if self.nodes.contains(node) {
            self.preferred = node.clone();
        }
    }

    pub(super) fn learn(&mut self, nodes: impl IntoIterator<Item = Node>) {
        for node in nodes {
            if !self.nodes.contains(&node) {
                self.nodes.push(node);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(port: u16) -> Node {
        Node {
            host: "localhost".into(),
            port,
        }
    }

    #[test]
    fn known_nodes_try_the_last_good_one_first_and_learn_new_ones_once() {
        let mut known = KnownNodes::new(at(1), [at(2)]);
        assert_eq!(known.in_order(), [at(1), at(2)]);

        known.learn([at(2), at(3), at(3)]);
        assert_eq!(known.in_order(), [at(1), at(2), at(3)]);

        known.prefer(&at(2));
        assert_eq!(known.in_order(), [at(2), at(3), at(1)]);
        assert_eq!(known.preferred(), &at(2));

        // A node that was never known changes nothing.
        known.prefer(&at(9));
        assert_eq!(known.in_order(), [at(2), at(3), at(1)]);
    }
}
