//! Proof-of-work with most-work fork choice.
//!
//! Blocks are never final: the engine keeps a tree of recent blocks with
//! each one's cumulative work, and the canonical chain is the branch with
//! the most work (the first seen wins a tie). When a heavier branch
//! appears, the engine asks the driver to move the head there
//! ([`Action::SetHead`]: revert to the fork point, apply the new branch);
//! the driver executes every block as it applies it and reports a block
//! that does not execute ([`Input::BlockRejected`]), which the engine then
//! marks invalid with all its descendants before choosing again.
//!
//! **Validation** before a block enters the tree, cheapest first: the proof
//! of work for the difficulty in its seal; format and transaction root;
//! height; the difficulty the retarget rule demands ([`RetargetRule`]); a
//! timestamp above the median of the last 11 blocks and at most
//! `max_future_drift_ms` ahead of the engine's clock. A block whose parent
//! is unknown is held (bounded, for a minute) while the engine asks the
//! peer that sent it for the blocks after the last one both chains share
//! ([`Action::FetchBlocks`] with a block locator, as Bitcoin's
//! `getblocks`).
//!
//! **Mining** (when configured): on every new head the engine stops the
//! miners, asks for a block template on the head, and hands it to the
//! miners ([`Action::Mine`]); it refreshes the template when more
//! transactions are ready or it grows old. A mined block comes back as an
//! ordinary [`Input::Block`].
//!
//! The tree keeps blocks down to [`MAX_REORG_DEPTH`] below the head (plus
//! what the retarget and median rules look at); deeper reorganisations are
//! refused.
//!
//! **After a switch** from a final engine (Raft, PBFT) at height H
//! ([`PowConfig::first_height`]), block H−1 is final and plays genesis's
//! part: the first block is mined on it at the initial difficulty,
//! retarget windows count from it, work is counted from H, and no block
//! below H is valid. A later switch to proof-of-work with new parameters
//! ([`PowConfig::later`]) is the same engine going on: fork choice spans
//! the change, and from its height the difficulty restarts at the new
//! initial one and retargets by the new rule, its windows counted from
//! there.
//!
//! **Before a switch** to a final engine at height H
//! ([`PowConfig::last_height`] = H−1), no block at H or above is valid and
//! mining stops once the head is at H−1. Branches may still compete at
//! H−1: the final engine's first block names one of them as its parent,
//! and [`Input::Adopt`] moves the head onto it whatever its work.

pub mod work;

use std::collections::{BTreeMap, BTreeSet};

use cairn_chain::{codec, Block, Hash, Header};

pub use work::{
    check_pow, pow_hash, search_nonce, target, with_nonce, PowSeal, ProofOfWorkError, RetargetRule,
};

use crate::{Action, ConsensusEngine, EngineStatus, FinalityError, Input, PowStatus};

/// Blocks whose timestamps make the median-time-past rule.
const MEDIAN_SPAN: usize = 11;
/// How long a block waits for its parent.
const ORPHAN_TTL_MS: u64 = 60_000;
/// Most bytes of blocks held while their parent is fetched: a peer that
/// mines cheap orphans at the minimum difficulty cannot fill the memory
/// with full-size blocks.
pub const MAX_ORPHAN_BYTES: usize = 64 * 1024 * 1024;
/// Whether an answer to a request for the blocks after `locator` is what
/// was asked: a chain whose first block's parent is one of the locator's
/// hashes, each next block the child of the one before. An empty answer
/// connects (the peer has nothing after the locator).
pub fn answer_connects(locator: &[Hash], blocks: &[&Header]) -> bool {
    let Some(first) = blocks.first() else {
        return true;
    };
    (locator.is_empty() || locator.contains(&first.parent))
        && blocks
            .windows(2)
            .all(|w| w[1].parent == w[0].hash() && w[1].height == w[0].height + 1)
}

/// A block whose difficulty is the head's divided by more than this is not
/// held (16: two retarget windows of the 4x clamp).
pub const FAR_BELOW: u64 = 16;
/// Default of [`PowConfig::max_side_bytes`]: 256 MB of side-branch blocks.
pub const MAX_SIDE_BYTES: usize = 256 * 1024 * 1024;
/// The deepest reorganisation followed.
pub const MAX_REORG_DEPTH: u64 = 1_000;
/// A mining template older than this is rebuilt (fresh timestamp).
const TEMPLATE_MAX_AGE_MS: u64 = 10_000;
/// The shortest wait the engine asks for between ticks.
const MIN_TICK_MS: u64 = 20;

/// Proof-of-work settings.
#[derive(Debug, Clone)]
pub struct PowConfig {
    pub rule: RetargetRule,
    /// The first height mined (1 from genesis; the switch height when the
    /// network switches to proof-of-work from a final engine).
    pub first_height: u64,
    /// Rules that take over from later heights (upgrades to proof-of-work
    /// with new parameters), in height order.
    pub later: Vec<(u64, RetargetRule)>,
    /// The last height mined, where the schedule switches to a final
    /// engine after it.
    pub last_height: Option<u64>,
    pub max_future_drift_ms: u64,
    /// Whether this node mines.
    pub mining: bool,
    /// A template is rebuilt with newly ready transactions at most this
    /// often.
    pub template_refresh_ms: u64,
    /// Most blocks held while their parent is fetched.
    pub max_orphans: usize,
    /// Most bytes of blocks held off the canonical chain (side branches);
    /// past it, the tips of the branches with the least work go first.
    pub max_side_bytes: usize,
}

#[derive(Debug, Clone)]
struct Entry {
    header: Header,
    difficulty: u64,
    /// Cumulative work up to and including this block.
    work: u128,
    /// The body, to apply it; `None` once the block is on the canonical
    /// chain (handed to the driver, or loaded from the store at start)
    /// until it is reverted.
    body: Option<Block>,
    /// The body's encoded size (0 without a body).
    bytes: usize,
    /// Arrival order: of two branches with equal work, the first seen wins.
    seq: u64,
}

#[derive(Debug, Clone)]
struct Orphan {
    block: Block,
    arrived: u64,
    /// Encoded size, for the pool's byte bound.
    bytes: usize,
}

#[derive(Debug, Clone, Copy)]
struct Template {
    parent: Hash,
    transactions: usize,
    built_at: u64,
}

/// The proof-of-work engine. See the module docs.
#[derive(Debug)]
pub struct Pow {
    cfg: PowConfig,
    now: u64,
    started: bool,
    tree: BTreeMap<Hash, Entry>,
    /// The canonical chain within the tree: height → hash.
    canonical: BTreeMap<u64, Hash>,
    head: Hash,
    invalid: BTreeSet<Hash>,
    orphans: BTreeMap<Hash, Orphan>,
    seq: u64,
    template: Option<Template>,
    /// When a template was last asked for (the driver may not answer).
    build_asked: Option<u64>,
    ready: usize,
    reorgs: u64,
    max_reorg_depth: u64,
    rejected: u64,
    /// Every block this engine accepted into its tree.
    accepted: u64,
}

/// The work a header adds: its seal's difficulty (0 for genesis).
pub fn header_work(header: &Header) -> u64 {
    if header.height == 0 {
        return 0;
    }
    PowSeal::decode(&header.engine_data).map_or(0, |s| s.difficulty)
}

/// The heights of a block locator for a chain from `lowest` to `head`: the
/// head, the one before, then 2, 4, 8, … blocks further back, and `lowest`.
pub fn locator_heights(head: u64, lowest: u64) -> Vec<u64> {
    let mut out = Vec::new();
    let mut step = 1u64;
    let mut h = head;
    loop {
        out.push(h);
        if h <= lowest {
            break;
        }
        h = h.saturating_sub(step).max(lowest);
        if out.len() >= 2 {
            step = step.saturating_mul(2);
        }
    }
    out
}

impl Pow {
    /// Starts from the canonical chain's most recent headers (oldest first,
    /// ending with the head) and the head's cumulative work. Give it at
    /// least [`Pow::headers_needed`] headers (or all, on a short chain).
    pub fn new(cfg: PowConfig, recent: &[Header], head_work: u128) -> Self {
        let mut pow = Self {
            cfg,
            now: 0,
            started: false,
            tree: BTreeMap::new(),
            canonical: BTreeMap::new(),
            head: Hash::ZERO,
            invalid: BTreeSet::new(),
            orphans: BTreeMap::new(),
            seq: 0,
            template: None,
            build_asked: None,
            ready: 0,
            reorgs: 0,
            max_reorg_depth: 0,
            rejected: 0,
            accepted: 0,
        };
        let mut work = head_work;
        let mut entries = Vec::with_capacity(recent.len());
        for h in recent.iter().rev() {
            let difficulty = if h.height < pow.cfg.first_height {
                pow.cfg.rule.initial_difficulty
            } else {
                header_work(h)
            };
            entries.push((h.clone(), difficulty, work));
            work = work.saturating_sub(u128::from(Self::work_of(&pow.cfg, h)));
        }
        for (header, difficulty, work) in entries.into_iter().rev() {
            let hash = header.hash();
            pow.canonical.insert(header.height, hash);
            pow.head = hash;
            pow.tree.insert(
                hash,
                Entry {
                    header,
                    difficulty,
                    work,
                    body: None,
                    bytes: 0,
                    seq: 0,
                },
            );
        }
        pow
    }

    /// The height proof-of-work starts on: genesis, or the last final block
    /// before the switch.
    fn base(&self) -> u64 {
        self.cfg.first_height.saturating_sub(1)
    }

    /// The work `header` adds: none at or below the base.
    pub fn work_of(cfg: &PowConfig, header: &Header) -> u64 {
        if header.height < cfg.first_height {
            0
        } else {
            header_work(header)
        }
    }

    /// How many recent headers [`Pow::new`] needs to check and follow
    /// reorganisations up to [`MAX_REORG_DEPTH`].
    pub fn headers_needed(cfg: &PowConfig) -> u64 {
        MAX_REORG_DEPTH + Self::widest_window(cfg) + MEDIAN_SPAN as u64 + 1
    }

    fn widest_window(cfg: &PowConfig) -> u64 {
        cfg.later
            .iter()
            .map(|(_, r)| r.window)
            .fold(cfg.rule.window, u64::max)
    }

    /// The rule in force at `height`, and the height its windows count
    /// from (the block before its first).
    fn rule_at(&self, height: u64) -> (u64, &RetargetRule) {
        let mut at = (self.base(), &self.cfg.rule);
        for (start, rule) in &self.cfg.later {
            if *start <= height {
                at = (start.saturating_sub(1), rule);
            }
        }
        at
    }

    fn head_entry(&self) -> Option<&Entry> {
        self.tree.get(&self.head)
    }

    fn head_height(&self) -> u64 {
        self.head_entry().map_or(0, |e| e.header.height)
    }

    /// The ancestor of `hash` (inclusive) `steps` blocks back, if in the tree.
    fn ancestor(&self, hash: &Hash, steps: u64) -> Option<&Entry> {
        let mut e = self.tree.get(hash)?;
        for _ in 0..steps {
            e = self.tree.get(&e.header.parent)?;
        }
        Some(e)
    }

    /// The difficulty a child of `parent` must have.
    fn next_difficulty(&self, parent: &Hash) -> Option<u64> {
        let p = self.tree.get(parent)?;
        // Windows count from the rule's base (genesis, or a switch).
        let (base, rule) = self.rule_at(p.header.height + 1);
        let height = (p.header.height + 1).checked_sub(base).filter(|h| *h > 0)?;
        if height == 1 {
            return Some(rule.initial_difficulty.max(rule.min_difficulty));
        }
        let window = rule.window.max(1);
        let span = if height % window == 0 {
            // From the block `window` blocks before the parent (or the
            // base) to the parent.
            let steps = window.min(height - 1);
            let first = self.ancestor(parent, steps)?;
            Some((
                steps,
                p.header
                    .timestamp_ms
                    .saturating_sub(first.header.timestamp_ms),
            ))
        } else {
            None
        };
        Some(rule.next(height, p.difficulty, span))
    }

    /// Median timestamp of the last [`MEDIAN_SPAN`] blocks up to `parent`.
    fn median_time_past(&self, parent: &Hash) -> u64 {
        let mut times = Vec::with_capacity(MEDIAN_SPAN);
        let mut cur = self.tree.get(parent);
        while let Some(e) = cur {
            times.push(e.header.timestamp_ms);
            if times.len() == MEDIAN_SPAN {
                break;
            }
            cur = self.tree.get(&e.header.parent);
        }
        times.sort_unstable();
        times.get(times.len() / 2).copied().unwrap_or(0)
    }

    /// Checks `block` against its parent (which is in the tree). `Err(.., true)`
    /// means the block is invalid for good (its sender is to blame);
    /// `false`, that it may become valid later (a timestamp too far ahead
    /// of this clock, a retarget window this node does not hold).
    fn check_against_parent(&self, block: &Block) -> Result<u64, (String, bool)> {
        let h = &block.header;
        let parent = self
            .tree
            .get(&h.parent)
            .ok_or_else(|| ("unknown parent".to_string(), false))?;
        if h.height != parent.header.height + 1 {
            return Err((
                format!(
                    "height {} does not follow its parent's {}",
                    h.height, parent.header.height
                ),
                true,
            ));
        }
        let seal = PowSeal::decode(&h.engine_data).map_err(|e| (e.to_string(), true))?;
        let expected = self
            .next_difficulty(&h.parent)
            .ok_or_else(|| ("the retarget window is not known".to_string(), false))?;
        if seal.difficulty != expected {
            return Err((
                format!(
                    "difficulty {} where the retarget rule demands {expected}",
                    seal.difficulty
                ),
                true,
            ));
        }
        let median = self.median_time_past(&h.parent);
        if h.timestamp_ms <= median {
            return Err((
                format!(
                    "timestamp {} is not above the median {median} of the last {MEDIAN_SPAN} blocks",
                    h.timestamp_ms
                ),
                true,
            ));
        }
        if h.timestamp_ms > self.now.saturating_add(self.cfg.max_future_drift_ms) {
            return Err((
                format!(
                    "timestamp {} is more than {} ms ahead of this node's clock {}",
                    h.timestamp_ms, self.cfg.max_future_drift_ms, self.now
                ),
                false,
            ));
        }
        Ok(expected)
    }

    fn reject(&mut self, hash: Hash, reason: String, for_good: bool, out: &mut Vec<Action>) {
        self.rejected += 1;
        if for_good {
            self.invalid.insert(hash);
        }
        out.push(Action::RejectBlock { hash, reason });
    }

    fn on_block(&mut self, block: Block, out: &mut Vec<Action>) {
        let hash = block.hash();
        if self.tree.contains_key(&hash) || self.orphans.contains_key(&hash) {
            return;
        }
        if self.invalid.contains(&hash) {
            out.push(Action::RejectBlock {
                hash,
                reason: "known invalid block".into(),
            });
            return;
        }
        // No proof-of-work block below the switch to it (checked before
        // the seal: a comparison costs less than a hash).
        if block.header.height < self.cfg.first_height {
            self.reject(
                hash,
                format!(
                    "proof-of-work starts at height {}: block {} is below it",
                    self.cfg.first_height, block.header.height
                ),
                true,
                out,
            );
            return;
        }
        if let Some(last) = self.cfg.last_height.filter(|l| block.header.height > *l) {
            self.reject(
                hash,
                format!(
                    "proof-of-work ends at height {last}: block {} is past it",
                    block.header.height
                ),
                true,
                out,
            );
            return;
        }
        // The proof of work first: it is what makes the rest worth checking,
        // and it must be worth something — a seal below the chain's minimum
        // is invalid anywhere, one far below the head's difficulty is not
        // worth holding (an orphan costs memory before its parent is known).
        let seal = match check_pow(&block.header) {
            Ok(seal) => seal,
            Err(e) => {
                self.reject(hash, e.to_string(), true, out);
                return;
            }
        };
        let min = self.rule_at(block.header.height).1.min_difficulty;
        if seal.difficulty < min {
            self.reject(
                hash,
                format!(
                    "difficulty {} is below the chain's minimum {min}",
                    seal.difficulty
                ),
                true,
                out,
            );
            return;
        }
        let floor = self.difficulty_floor(block.header.height);
        if seal.difficulty < floor {
            self.reject(
                hash,
                format!(
                    "difficulty {} is far below the head's ({floor} at the least is held)",
                    seal.difficulty
                ),
                false,
                out,
            );
            return;
        }
        if let Err(e) = block.check_format() {
            self.reject(hash, e.to_string(), true, out);
            return;
        }
        if self.invalid.contains(&block.header.parent) {
            self.reject(hash, "its parent is invalid".into(), true, out);
            return;
        }
        if !self.tree.contains_key(&block.header.parent) {
            self.hold_orphan(hash, block, out);
            return;
        }
        if !self.insert(block, out) {
            return;
        }
        self.connect_orphans(hash, out);
        self.choose_head(out);
        self.bound_side_branches();
    }

    /// Drops side-branch tips, least work first, while the bodies held off
    /// the canonical chain exceed [`PowConfig::max_side_bytes`]: each side
    /// block cost its miner real work, but that bounds memory only
    /// economically; this bounds it outright.
    fn bound_side_branches(&mut self) {
        let canonical =
            |pow: &Self, hash: &Hash, e: &Entry| pow.canonical.get(&e.header.height) == Some(hash);
        let mut held: usize = self
            .tree
            .iter()
            .filter(|(h, e)| e.body.is_some() && !canonical(self, h, e))
            .map(|(_, e)| e.bytes)
            .sum();
        while held > self.cfg.max_side_bytes {
            let parents: BTreeSet<Hash> = self.tree.values().map(|e| e.header.parent).collect();
            let victim = self
                .tree
                .iter()
                .filter(|(h, e)| {
                    e.body.is_some() && !canonical(self, h, e) && !parents.contains(*h)
                })
                .min_by_key(|(_, e)| (e.work, std::cmp::Reverse(e.seq)))
                .map(|(h, e)| (*h, e.bytes));
            let Some((hash, bytes)) = victim else {
                break;
            };
            self.tree.remove(&hash);
            held = held.saturating_sub(bytes);
        }
    }

    /// The lowest seal difficulty worth looking at at `height`: the head's
    /// divided by [`FAR_BELOW`] (two retarget windows at the 4x clamp),
    /// never under the chain's minimum. Across a change of parameters
    /// (`height` under another rule than the head's next block), only the
    /// minimum: the two rules' difficulties are not comparable.
    pub fn difficulty_floor(&self, height: u64) -> u64 {
        let head = self.tree.get(&self.head).map_or(0, |e| e.difficulty);
        let (base, rule) = self.rule_at(height);
        if base != self.rule_at(self.head_height() + 1).0 {
            return rule.min_difficulty;
        }
        (head / FAR_BELOW).max(rule.min_difficulty)
    }

    /// Validates `block` against its parent and adds it to the tree.
    fn insert(&mut self, block: Block, out: &mut Vec<Action>) -> bool {
        let hash = block.hash();
        match self.check_against_parent(&block) {
            Ok(difficulty) => {
                let parent_work = self.tree.get(&block.header.parent).map_or(0, |p| p.work);
                self.seq += 1;
                self.accepted += 1;
                self.tree.insert(
                    hash,
                    Entry {
                        header: block.header.clone(),
                        difficulty,
                        work: parent_work + u128::from(difficulty),
                        bytes: codec::encoded_len(&block),
                        body: Some(block),
                        seq: self.seq,
                    },
                );
                true
            }
            // Invalid on its parent: the sender is to blame.
            Err((reason, true)) => {
                self.reject(hash, reason, true, out);
                false
            }
            // Not valid yet (a clock ahead of this one, as an honest node's
            // may be): no blame, and not remembered.
            Err((reason, false)) => {
                self.rejected += 1;
                out.push(Action::IgnoreBlock { hash, reason });
                false
            }
        }
    }

    fn hold_orphan(&mut self, hash: Hash, block: Block, out: &mut Vec<Action>) {
        let bytes = block.encode().len();
        if bytes > MAX_ORPHAN_BYTES {
            return;
        }
        // Make room: drop the oldest (lowest arrival, then hash:
        // deterministic) while over the count or the byte bound.
        loop {
            let held: usize = self.orphans.values().map(|o| o.bytes).sum();
            let full = self.orphans.len() >= self.cfg.max_orphans.max(1)
                || held + bytes > MAX_ORPHAN_BYTES;
            let oldest = self
                .orphans
                .iter()
                .min_by_key(|(h, o)| (o.arrived, **h))
                .map(|(h, _)| *h);
            match oldest {
                Some(h) if full => {
                    self.orphans.remove(&h);
                }
                _ => break,
            }
        }
        self.orphans.insert(
            hash,
            Orphan {
                block,
                arrived: self.now,
                bytes,
            },
        );
        // Asked for every waiting block (a fetch may have been lost); the
        // driver keeps one fetch in flight.
        out.push(Action::FetchBlocks {
            hash,
            locator: self.locator(),
        });
    }

    /// Hashes of the canonical chain, densest near the head (see
    /// [`locator_heights`]). A peer answers with its blocks after the first
    /// of these on its chain.
    pub fn locator(&self) -> Vec<Hash> {
        let lowest = self.canonical.keys().next().copied().unwrap_or(0);
        locator_heights(self.head_height(), lowest)
            .into_iter()
            .filter_map(|h| self.canonical.get(&h).copied())
            .collect()
    }

    /// Adds the waiting descendants of `hash`, now that it is in the tree.
    fn connect_orphans(&mut self, hash: Hash, out: &mut Vec<Action>) {
        let mut ready = vec![hash];
        while let Some(parent) = ready.pop() {
            let children: Vec<Hash> = self
                .orphans
                .iter()
                .filter(|(_, o)| o.block.header.parent == parent)
                .map(|(h, _)| *h)
                .collect();
            for child in children {
                if let Some(o) = self.orphans.remove(&child) {
                    if self.insert(o.block, out) {
                        ready.push(child);
                    }
                }
            }
        }
    }

    /// The valid block with the most work (the first seen among equals;
    /// the current head keeps its place against equal work).
    fn best(&self) -> Hash {
        let head_work = self.head_entry().map_or(0, |e| e.work);
        let mut best = self.head;
        let mut best_key = (head_work, 0u64);
        for (hash, e) in &self.tree {
            if e.work > best_key.0
                || (e.work == best_key.0 && e.work > head_work && e.seq < best_key.1)
            {
                best = *hash;
                best_key = (e.work, e.seq);
            }
        }
        best
    }

    /// Moves the head to the best block, if that is another one.
    fn choose_head(&mut self, out: &mut Vec<Action>) {
        let best = self.best();
        self.move_head(best, out);
    }

    /// Moves the head to `best`, if that is another block of the tree.
    fn move_head(&mut self, best: Hash, out: &mut Vec<Action>) {
        if best == self.head {
            return;
        }
        // Walk back from `best` to the canonical chain.
        let mut branch = Vec::new();
        let mut cur = best;
        let fork_height = loop {
            let Some(e) = self.tree.get(&cur) else {
                // The branch leaves the tree: too deep to follow.
                return;
            };
            if self.canonical.get(&e.header.height) == Some(&cur) {
                break e.header.height;
            }
            branch.push(cur);
            cur = e.header.parent;
        };
        let head_height = self.head_height();
        let revert = head_height - fork_height;
        if revert > MAX_REORG_DEPTH {
            return;
        }
        // Cannot happen: only canonical blocks lack a body, and a branch
        // off the canonical chain holds none.
        if branch
            .iter()
            .any(|h| self.tree.get(h).is_none_or(|e| e.body.is_none()))
        {
            return;
        }
        // The bodies go to the store: the tree keeps headers only (a
        // reverted block's body comes back with Input::Reverted), or it
        // would hold every block of the last MAX_REORG_DEPTH in memory.
        let apply: Vec<Block> = branch
            .iter()
            .rev()
            .filter_map(|h| self.tree.get_mut(h).and_then(|e| e.body.take()))
            .collect();
        for h in fork_height + 1..=head_height {
            self.canonical.remove(&h);
        }
        for b in &apply {
            self.canonical.insert(b.header.height, b.hash());
        }
        if revert > 0 {
            self.reorgs += 1;
            self.max_reorg_depth = self.max_reorg_depth.max(revert);
        }
        self.head = best;
        // Stop mining on the old head before the driver spends time
        // applying the new one: whatever the miners found meanwhile would
        // be stale.
        if self.cfg.mining && self.template.take().is_some() {
            out.push(Action::StopMining);
        }
        out.push(Action::SetHead { revert, apply });
        self.prune();
        self.new_template(out);
    }

    /// The driver could not apply `hash`: it and its descendants are
    /// invalid; the store's head is `head`.
    fn on_rejected(&mut self, hash: Hash, head: Hash, out: &mut Vec<Action>) {
        self.rejected += 1;
        let mut bad = BTreeSet::from([hash]);
        loop {
            let more: Vec<Hash> = self
                .tree
                .iter()
                .filter(|(h, e)| bad.contains(&e.header.parent) && !bad.contains(*h))
                .map(|(h, _)| *h)
                .collect();
            if more.is_empty() {
                break;
            }
            bad.extend(more);
        }
        for h in &bad {
            self.tree.remove(h);
        }
        self.invalid.extend(bad);
        // Re-read the canonical chain from the driver's head.
        if self.tree.contains_key(&head) {
            self.head = head;
            let height = self.head_height();
            let stale: Vec<u64> = self
                .canonical
                .range(height + 1..)
                .map(|(h, _)| *h)
                .collect();
            for h in stale {
                self.canonical.remove(&h);
            }
        }
        self.choose_head(out);
        self.new_template(out);
    }

    /// Forgets side blocks too deep to matter, and stale orphans.
    fn prune(&mut self) {
        let keep_from = self
            .head_height()
            .saturating_sub(MAX_REORG_DEPTH + Self::widest_window(&self.cfg) + MEDIAN_SPAN as u64);
        if keep_from > 0 {
            self.tree.retain(|_, e| e.header.height >= keep_from);
            self.canonical = self.canonical.split_off(&keep_from);
        }
        let now = self.now;
        self.orphans
            .retain(|_, o| now.saturating_sub(o.arrived) < ORPHAN_TTL_MS);
        if self.invalid.len() > 10_000 {
            self.invalid.clear();
        }
    }

    fn new_template(&mut self, out: &mut Vec<Action>) {
        if !self.cfg.mining {
            return;
        }
        if self.template.is_some_and(|t| t.parent != self.head) {
            out.push(Action::StopMining);
        }
        self.template = None;
        self.ask_template(out);
    }

    fn ask_template(&mut self, out: &mut Vec<Action>) {
        let Some(head) = self.head_entry() else {
            return;
        };
        let Some(difficulty) = self.next_difficulty(&self.head) else {
            return;
        };
        let height = head.header.height + 1;
        if self.cfg.last_height.is_some_and(|last| height > last) {
            return;
        }
        self.build_asked = Some(self.now);
        out.push(Action::BuildBlock {
            parent: self.head,
            height,
            engine_data: PowSeal {
                difficulty,
                nonce: 0,
            }
            .encode(),
            uncommitted: Vec::new(),
        });
    }

    fn on_built(&mut self, mut block: Block, out: &mut Vec<Action>) {
        self.build_asked = None;
        if !self.cfg.mining || block.header.parent != self.head {
            return;
        }
        // The timestamp must be above the median of the last blocks.
        let median = self.median_time_past(&self.head);
        block.header.timestamp_ms = block.header.timestamp_ms.max(median + 1);
        self.template = Some(Template {
            parent: self.head,
            transactions: block.transactions.len(),
            built_at: self.now,
        });
        out.push(Action::Mine { block });
    }

    /// Mining: keep a template on the head with what is ready.
    fn mining_tick(&mut self, out: &mut Vec<Action>) {
        if !self.cfg.mining {
            return;
        }
        let refresh = self.cfg.template_refresh_ms.max(1);
        match (self.template, self.build_asked) {
            (_, Some(asked)) if self.now < asked + refresh => {}
            (None, _) => self.ask_template(out),
            (Some(t), _) => {
                let age = self.now.saturating_sub(t.built_at);
                let more = self.ready > t.transactions && age >= refresh;
                if t.parent != self.head || more || age >= TEMPLATE_MAX_AGE_MS {
                    self.ask_template(out);
                }
            }
        }
    }

    /// When the engine next has something to do on a tick: an orphan
    /// expires, a build asked for is overdue, the template is due for a
    /// refresh. Anchored at when those things happened, not at the latest
    /// input: a busy node still gets its ticks.
    fn next_timer(&self) -> u64 {
        let mut at = self
            .orphans
            .values()
            .map(|o| o.arrived + ORPHAN_TTL_MS)
            .min()
            .unwrap_or(self.now + ORPHAN_TTL_MS);
        if self.cfg.mining {
            let refresh = self.cfg.template_refresh_ms.max(1);
            let due = match (self.template, self.build_asked) {
                (_, Some(asked)) => asked + refresh,
                (Some(t), None) if self.ready > t.transactions => t.built_at + refresh,
                (Some(t), None) => t.built_at + TEMPLATE_MAX_AGE_MS,
                (None, None) => self.now + refresh,
            };
            at = at.min(due);
        }
        // A deadline the tick did not act on (a refresh with nothing new)
        // comes back no sooner than this.
        at.max(self.now + MIN_TICK_MS)
    }

    /// Estimated network hash rate (hashes per second) over the last
    /// retarget window of the canonical chain.
    fn hash_rate(&self) -> u64 {
        let Some(head) = self.head_entry() else {
            return 0;
        };
        // Genesis's timestamp is the network's creation (and a final
        // block's, another engine's), not a mining time: measured from the
        // first mined block at the earliest.
        let span = self
            .cfg
            .rule
            .window
            .max(1)
            .min(head.header.height.saturating_sub(self.cfg.first_height));
        if span == 0 {
            return 0;
        }
        let Some(first) = self.ancestor(&self.head, span) else {
            return 0;
        };
        let ms = head
            .header
            .timestamp_ms
            .saturating_sub(first.header.timestamp_ms);
        let work = head.work.saturating_sub(first.work);
        if ms == 0 {
            return 0;
        }
        u64::try_from(work * 1000 / u128::from(ms)).unwrap_or(u64::MAX)
    }
}

impl ConsensusEngine for Pow {
    fn final_blocks(&self) -> bool {
        false
    }

    fn verify_final(&self, _block: &Block) -> Result<(), FinalityError> {
        Err(FinalityError::NeverFinal)
    }

    fn handle(&mut self, now_ms: u64, input: Input) -> Vec<Action> {
        self.now = self.now.max(now_ms);
        let mut out = Vec::new();
        if !self.started {
            self.started = true;
            self.new_template(&mut out);
        }
        match input {
            Input::Tick => {
                self.prune();
                self.mining_tick(&mut out);
            }
            Input::Block { block } => self.on_block(block, &mut out),
            Input::TransactionsAvailable { count } => {
                self.ready = count;
                self.mining_tick(&mut out);
            }
            Input::BlockBuilt { block } => self.on_built(block, &mut out),
            Input::BlockRejected { hash, head, .. } => self.on_rejected(hash, head, &mut out),
            Input::Reverted { blocks } => {
                for b in blocks {
                    if let Some(e) = self.tree.get_mut(&b.hash()) {
                        if e.body.is_none() {
                            e.bytes = codec::encoded_len(&b);
                            e.body = Some(b);
                        }
                    }
                }
            }
            // The final engine after this one named a block of the tree
            // as its first block's parent: follow it, whatever its work.
            Input::Adopt { hash } => {
                if self.tree.contains_key(&hash) {
                    self.move_head(hash, &mut out);
                }
            }
            // No consensus messages, no validation round trips, no final
            // blocks from elsewhere: blocks arrive as blocks.
            Input::Message { .. } | Input::BlockValidated { .. } | Input::Committed { .. } => {}
        }
        out.push(Action::SetTimer {
            at_ms: self.next_timer(),
        });
        out
    }

    fn status(&self) -> EngineStatus {
        let head = self.head_entry();
        let difficulty = self.next_difficulty(&self.head).unwrap_or(0);
        EngineStatus {
            engine: "pow",
            role: if self.cfg.mining { "miner" } else { "node" },
            term: 0,
            leader: None,
            committed_height: self.head_height(),
            uncommitted: 0,
            view_changes: 0,
            dropped_messages: 0,
            rejected_messages: self.rejected,
            pow: Some(PowStatus {
                difficulty,
                target: Hash(target(difficulty)).to_string(),
                tip_work: head.map_or(0, |e| e.work),
                hash_rate: self.hash_rate(),
                head: self.head.to_string(),
                reorgs: self.reorgs,
                max_reorg_depth: self.max_reorg_depth,
                orphans: self.orphans.len() as u64,
                known_blocks: self.tree.len() as u64,
                accepted_blocks: self.accepted,
            }),
        }
    }
}

#[cfg(test)]
mod tests;
