//! Routing rules, sans-I/O: who receives an envelope addressed to a
//! [`Recipient`]. Used by the in-process [`ChannelHub`](crate::ChannelHub)
//! and by the broker embedded in the Client.
//!
//! - [`Recipient::Client`]: the connected Client.
//! - [`Recipient::Device`]: the Agent with exactly that device path.
//! - [`Recipient::DevicePrefix`]: every Agent at or below that path,
//!   segment-wise (`/powertrain` covers `/powertrain/ecm`, not `/powertrainx`).
//! - [`Recipient::Group`]: every member subscribed to the group, except the
//!   sender itself.
//! - [`Recipient::Listener`]: the listener with that name.
//!
//! One participant has at most one member entry: a new connection with the
//! same identity replaces the old one (see [`RoutingTable::insert`]).

use std::collections::{BTreeMap, BTreeSet};

use esync_proto::envelope::Recipient;
use esync_proto::id::GroupName;
use esync_proto::message::Participant;

/// Group every connection may join to receive presence notifications.
pub const PRESENCE_GROUP: &str = "presence";

/// One routable member.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Member<C> {
    /// Connection handle (generation, queue, ...), opaque to the table.
    pub conn: C,
    /// Groups it subscribed to.
    pub groups: BTreeSet<GroupName>,
}

/// The members currently reachable, by participant.
#[derive(Clone, Debug)]
pub struct RoutingTable<C> {
    members: BTreeMap<Participant, Member<C>>,
}

impl<C> Default for RoutingTable<C> {
    fn default() -> Self {
        RoutingTable {
            members: BTreeMap::new(),
        }
    }
}

impl<C: Clone> RoutingTable<C> {
    /// An empty table.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds `who`, replacing (and returning) any previous member with the
    /// same identity. The new member starts with no groups.
    pub fn insert(&mut self, who: Participant, conn: C) -> Option<Member<C>> {
        self.members.insert(
            who,
            Member {
                conn,
                groups: BTreeSet::new(),
            },
        )
    }

    /// Removes `who` if `still_current` says its entry is the one being
    /// removed (a replaced connection must not remove its successor).
    pub fn remove_if(
        &mut self,
        who: &Participant,
        still_current: impl FnOnce(&C) -> bool,
    ) -> Option<Member<C>> {
        match self.members.get(who) {
            Some(m) if still_current(&m.conn) => self.members.remove(who),
            _ => None,
        }
    }

    /// The member entry of `who`.
    pub fn get(&self, who: &Participant) -> Option<&Member<C>> {
        self.members.get(who)
    }

    /// Replaces the groups of `who`; false if it is not a member.
    pub fn set_groups(
        &mut self,
        who: &Participant,
        groups: impl IntoIterator<Item = GroupName>,
    ) -> bool {
        match self.members.get_mut(who) {
            Some(m) => {
                m.groups = groups.into_iter().collect();
                true
            }
            None => false,
        }
    }

    /// Number of members.
    pub fn len(&self) -> usize {
        self.members.len()
    }

    /// Whether there are no members.
    pub fn is_empty(&self) -> bool {
        self.members.is_empty()
    }

    /// Members, by participant.
    pub fn members(&self) -> impl Iterator<Item = (&Participant, &Member<C>)> {
        self.members.iter()
    }

    /// The connections an envelope from `sender` to `recipient` goes to.
    pub fn route(&self, sender: &Participant, recipient: &Recipient) -> Vec<(Participant, C)> {
        let pick = |p: &Participant| self.members.get(p).map(|m| (p.clone(), m.conn.clone()));
        match recipient {
            Recipient::Client => pick(&Participant::Client).into_iter().collect(),
            Recipient::Device(path) => pick(&Participant::Device(path.clone()))
                .into_iter()
                .collect(),
            Recipient::Listener(name) => pick(&Participant::Listener(name.clone()))
                .into_iter()
                .collect(),
            Recipient::DevicePrefix(prefix) => {
                // Device participants sort together; a range scan from the prefix
                // finds every path that starts with its bytes.
                let start = Participant::Device(prefix.clone());
                self.members
                    .range(start..)
                    .take_while(|(p, _)| match p {
                        Participant::Device(d) => d.as_str().starts_with(prefix.as_str()),
                        _ => false,
                    })
                    .filter(|(p, _)| matches!(p, Participant::Device(d) if d.starts_with(prefix)))
                    .map(|(p, m)| (p.clone(), m.conn.clone()))
                    .collect()
            }
            Recipient::Group(g) => self
                .members
                .iter()
                .filter(|(p, m)| *p != sender && m.groups.contains(g))
                .map(|(p, m)| (p.clone(), m.conn.clone()))
                .collect(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use esync_proto::id::{DevicePath, ListenerName};

    fn dev(p: &str) -> Participant {
        Participant::Device(DevicePath::new(p).unwrap())
    }

    #[test]
    fn routes_exact_prefix_group_listener_client() {
        let mut t = RoutingTable::new();
        for (i, p) in [
            "/powertrain",
            "/powertrain/ecm",
            "/powertrain/tcm",
            "/powertrainx",
            "/body/bcm",
        ]
        .iter()
        .enumerate()
        {
            assert!(t.insert(dev(p), i).is_none());
        }
        t.insert(Participant::Client, 100);
        let hmi = Participant::Listener(ListenerName::new("hmi").unwrap());
        t.insert(hmi.clone(), 200);
        let g = GroupName::new("update-listeners").unwrap();
        assert!(t.set_groups(&hmi, [g.clone()]));
        assert!(t.set_groups(&dev("/body/bcm"), [g.clone()]));

        let sender = dev("/body/bcm");
        let to = |r: Recipient| -> Vec<usize> {
            t.route(&sender, &r).into_iter().map(|(_, c)| c).collect()
        };
        assert_eq!(to(Recipient::Client), vec![100]);
        assert_eq!(
            to(Recipient::Device(
                DevicePath::new("/powertrain/ecm").unwrap()
            )),
            vec![1]
        );
        assert!(to(Recipient::Device(DevicePath::new("/nobody").unwrap())).is_empty());
        let mut pre = to(Recipient::DevicePrefix(
            DevicePath::new("/powertrain").unwrap(),
        ));
        pre.sort_unstable();
        assert_eq!(
            pre,
            vec![0, 1, 2],
            "segment-wise prefix excludes /powertrainx"
        );
        assert_eq!(
            to(Recipient::Listener(ListenerName::new("hmi").unwrap())),
            vec![200]
        );
        // The sender is in the group but does not receive its own message.
        assert_eq!(to(Recipient::Group(g)), vec![200]);
    }

    #[test]
    fn replaced_member_is_not_removed_by_its_predecessor() {
        let mut t = RoutingTable::new();
        t.insert(dev("/a"), 1u64);
        let old = t.insert(dev("/a"), 2u64).unwrap();
        assert_eq!(old.conn, 1);
        assert!(t.remove_if(&dev("/a"), |c| *c == 1).is_none());
        assert_eq!(t.get(&dev("/a")).unwrap().conn, 2);
        assert!(t.remove_if(&dev("/a"), |c| *c == 2).is_some());
        assert!(t.is_empty());
    }
}
