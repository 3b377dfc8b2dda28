//! Which of this instance's subscribers the broker made active for each
//! (stream, group, partition): what `GetOffsets` and `ListGroups` report.
//! The broker decides; subscriptions record its decisions here.

use std::collections::{BTreeSet, HashMap, HashSet};
use std::sync::Mutex;

use crate::sync::lock;

/// (stream, group, partition) → member active on this instance.
#[derive(Default)]
pub struct ActiveMembers {
    active: Mutex<HashMap<(String, String, u32), String>>,
}

impl ActiveMembers {
    /// `member` became active (`true`) or stopped being so.
    pub fn set(&self, stream: &str, group: &str, partition: u32, member: &str, active: bool) {
        let mut registry = lock(&self.active);
        let key = (stream.to_owned(), group.to_owned(), partition);
        if active {
            registry.insert(key, member.to_owned());
        } else if registry.get(&key).is_some_and(|m| m == member) {
            registry.remove(&key);
        }
        // Under the lock: the gauges follow the registry's changes in order.
        let held: Vec<&String> = registry
            .iter()
            .filter(|((s, g, _), _)| s == stream && g == group)
            .map(|(_, member)| member)
            .collect();
        let members: HashSet<&String> = held.iter().copied().collect();
        crate::telemetry::group_members(stream, group, members.len(), held.len());
    }

    /// Every (stream, group) with a member active here, sorted.
    pub fn stream_groups(&self) -> Vec<(String, String)> {
        let pairs: BTreeSet<(String, String)> = lock(&self.active)
            .keys()
            .map(|(s, g, _)| (s.clone(), g.clone()))
            .collect();
        pairs.into_iter().collect()
    }

    /// The member of this instance active for the partition.
    pub fn get(&self, stream: &str, group: &str, partition: u32) -> Option<String> {
        lock(&self.active)
            .get(&(stream.to_owned(), group.to_owned(), partition))
            .cloned()
    }

    /// Groups with an active member of this instance on `stream`.
    pub fn groups(&self, stream: &str) -> Vec<String> {
        lock(&self.active)
            .keys()
            .filter(|(s, _, _)| s == stream)
            .map(|(_, g, _)| g.clone())
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_member_clears_only_its_own_entry() {
        let members = ActiveMembers::default();
        members.set("s", "g", 0, "a", true);
        members.set("s", "g", 0, "b", true);
        members.set("s", "g", 0, "a", false);
        assert_eq!(members.get("s", "g", 0).as_deref(), Some("b"));
        members.set("s", "g", 0, "b", false);
        assert_eq!(members.get("s", "g", 0), None);
        members.set("s", "h", 1, "c", true);
        assert_eq!(members.groups("s"), ["h"]);
        assert!(members.groups("t").is_empty());
    }
}
