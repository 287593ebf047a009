//! Faults a scenario injects: cuts, partitions, link behaviour, crashes
//! and restarts, failing block builds, clients on and off.

use crate::{LinkConfig, Sim};
use cairn_consensus::ValidatorId;

impl Sim {
    /// Cuts the link `from → to` (one way).
    pub fn cut(&mut self, from: ValidatorId, to: ValidatorId) {
        self.log(|| format!("cut n{from} -> n{to}"));
        self.blocked.insert((from, to));
    }

    /// Cuts `node` off from everyone, both ways.
    pub fn isolate(&mut self, node: ValidatorId) {
        for other in 0..self.cfg.validators {
            if other != node {
                self.cut(node, other);
                self.cut(other, node);
            }
        }
    }

    /// Splits the network: nodes talk only within their group (nodes in
    /// no group are isolated).
    pub fn partition(&mut self, groups: &[Vec<ValidatorId>]) {
        let group_of = |n: ValidatorId| groups.iter().position(|g| g.contains(&n));
        for a in 0..self.cfg.validators {
            for b in 0..self.cfg.validators {
                if a != b && (group_of(a).is_none() || group_of(a) != group_of(b)) {
                    self.cut(a, b);
                }
            }
        }
    }

    /// Restores the link between `a` and `b`, both ways.
    pub fn connect(&mut self, a: ValidatorId, b: ValidatorId) {
        self.log(|| format!("connect n{a} <-> n{b}"));
        self.blocked.remove(&(a, b));
        self.blocked.remove(&(b, a));
    }

    /// Restores every link (link settings are kept).
    pub fn heal(&mut self) {
        self.log(|| "heal every link".into());
        self.blocked.clear();
    }

    /// Sets how the link `from → to` behaves.
    pub fn set_link(&mut self, from: ValidatorId, to: ValidatorId, link: LinkConfig) {
        self.links.insert((from, to), link);
    }

    /// Sets every link's behaviour.
    pub fn set_all_links(&mut self, link: LinkConfig) {
        self.links.clear();
        self.cfg.link = link;
    }

    /// Starts `node` again from what it persisted (no-op if it is up).
    pub fn restart(&mut self, node: ValidatorId) {
        if !self.nodes[node as usize].up() {
            self.start(node);
        }
    }

    /// Makes every block build of `node` fail (`on`) or work again: its
    /// driver is asked for a block on a parent it does not have, logs it
    /// and answers nothing, as when building really fails.
    pub fn fail_builds(&mut self, node: ValidatorId, on: bool) {
        self.log(|| format!("n{node} builds {}", if on { "fail" } else { "work" }));
        if let Ok(mut f) = self.failing_builds.lock() {
            if on {
                f.insert(node);
            } else {
                f.remove(&node);
            }
        }
    }

    /// Stops or resumes the clients.
    pub fn set_clients(&mut self, on: bool) {
        self.client_on = on;
    }
}
