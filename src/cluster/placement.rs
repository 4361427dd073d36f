//! Placement: which node owns a key (a new session, a room), by rendezvous hashing.
//!
//! Every node must compute the same owner from the same membership, whatever Rust release or
//! platform built it, so the hash is SipHash-1-3 with fixed keys over explicit bytes (std's
//! `DefaultHasher` and `Hash` impls carry no such promise). The test vectors pin it.

use std::hash::{Hash, Hasher};

use rendezvous_hash::{IdNode, NodeHasher, RendezvousNodes};
use siphasher::sip::SipHasher13;

/// "clusterc" / "hat-ring", as little-endian integers: fixed forever.
const KEY0: u64 = 0x6372_6574_7375_6c63;
const KEY1: u64 = 0x676e_6972_2d74_6168;

/// A member's node id as placement sees it: hashed as its bytes plus a terminator.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct Member(pub String);

impl Hash for Member {
    fn hash<H: Hasher>(&self, state: &mut H) {
        state.write(self.0.as_bytes());
        state.write(&[0xff]);
    }
}

/// A placed key, hashed as its bytes plus a terminator.
struct Key<'a>(&'a str);

impl Hash for Key<'_> {
    fn hash<H: Hasher>(&self, state: &mut H) {
        state.write(self.0.as_bytes());
        state.write(&[0xff]);
    }
}

/// The fixed-algorithm hasher plugged into `rendezvous_hash`.
#[derive(Debug, Clone, Copy, Default)]
pub struct StableHasher;

impl NodeHasher<Member> for StableHasher {
    fn hash<T: Hash>(&self, node: &Member, item: &T) -> u64 {
        let mut h = SipHasher13::new_with_keys(KEY0, KEY1);
        node.hash(&mut h);
        item.hash(&mut h);
        h.finish()
    }
}

/// The members a key can be placed on.
pub struct Placement {
    nodes: RendezvousNodes<IdNode<Member>, StableHasher>,
}

impl Placement {
    pub fn new<'a>(members: impl IntoIterator<Item = &'a str>) -> Self {
        let mut nodes = RendezvousNodes::new(StableHasher);
        for m in members {
            nodes.insert(IdNode::new(Member(m.to_owned())));
        }
        Self { nodes }
    }

    /// The owner of `key`: the highest-scoring member.
    pub fn owner(&self, key: &str) -> Option<&str> {
        self.ranking(key).into_iter().next()
    }

    /// Every member, best first: where to fall back when the owner cannot be reached.
    pub fn ranking(&self, key: &str) -> Vec<&str> {
        self.nodes.calc_candidates(&Key(key)).map(|m| m.0.as_str()).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const OWNERS: [&str; 6] = ["node3", "node2", "node1", "node1", "node1", "node2"];

    /// Pinned outputs: if these change, nodes built differently would disagree on owners.
    #[test]
    fn hash_test_vectors() {
        let h = StableHasher;
        let vectors = [
            ("node1", "room:lobby", 0x930e_82c0_1903_4dbf_u64),
            ("node2", "room:lobby", 0xbe4c_3011_b436_d92b),
            ("node3", "sid-abc", 0xc56d_ef9a_e387_a21d),
        ];
        for (node, key, want) in vectors {
            assert_eq!(h.hash(&Member(node.into()), &Key(key)), want, "{node} {key}");
        }
        let p = Placement::new(["node1", "node2", "node3"]);
        let owners: Vec<_> = ["a", "b", "c", "d", "e", "f"].iter().map(|k| p.owner(k).unwrap()).collect();
        assert_eq!(owners, OWNERS);
    }

    #[test]
    fn owner_is_stable_and_spread() {
        let p = Placement::new(["node1", "node2", "node3"]);
        let mut counts = std::collections::HashMap::new();
        for i in 0..3000 {
            let key = format!("key-{i}");
            let owner = p.owner(&key).unwrap().to_owned();
            assert_eq!(p.owner(&key), Some(owner.as_str()), "same input, same owner");
            *counts.entry(owner).or_insert(0) += 1;
        }
        for (node, n) in counts {
            assert!((800..1200).contains(&n), "{node} owns {n} of 3000 keys");
        }
    }

    #[test]
    fn a_joining_node_moves_only_its_share() {
        let three = Placement::new(["node1", "node2", "node3"]);
        let four = Placement::new(["node1", "node2", "node3", "node4"]);
        let moved = (0..4000)
            .map(|i| format!("k{i}"))
            .filter(|k| three.owner(k) != four.owner(k))
            .inspect(|k| assert_eq!(four.owner(k), Some("node4"), "keys only move to the new node"))
            .count();
        assert!((700..1300).contains(&moved), "{moved} of 4000 keys moved");
    }

    #[test]
    fn ranking_lists_every_member_once() {
        let p = Placement::new(["a", "b", "c"]);
        let mut r = p.ranking("x");
        assert_eq!(r[0], p.owner("x").unwrap());
        r.sort();
        assert_eq!(r, ["a", "b", "c"]);
        assert_eq!(Placement::new([]).owner("x"), None);
    }
}
