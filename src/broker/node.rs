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
    /// Index of the node that answered last; tried first.
    preferred: usize,
}

impl KnownNodes {
    /// The configured nodes, the first one preferred. There is at least one
    /// (`broker.host`).
    pub(super) fn new(nodes: Vec<Node>) -> KnownNodes {
        KnownNodes {
            nodes,
            preferred: 0,
        }
    }

    /// The node that answered last.
    pub(super) fn preferred(&self) -> &Node {
        &self.nodes[self.preferred]
    }

    /// Every node, the preferred one first.
    pub(super) fn in_order(&self) -> Vec<Node> {
        let (before, after) = self.nodes.split_at(self.preferred);
        after.iter().chain(before).cloned().collect()
    }

    pub(super) fn prefer(&mut self, node: &Node) {
        if let Some(index) = self.nodes.iter().position(|n| n == node) {
            self.preferred = index;
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
        let mut known = KnownNodes::new(vec![at(1), at(2)]);
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
