//! Writes blocks to a store forever, printing `committed <height> <hash>`
//! after each commit returns. The crash test kills it with SIGKILL at random
//! moments and checks the store it leaves behind.
//!
//! Usage: cairn-store-writer DIR SEED

use std::io::Write;
use std::path::PathBuf;

use anyhow::{Context, Result};
use cairn_chain::{ChainStore, Store};
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;

fn main() -> Result<()> {
    let mut args = std::env::args().skip(1);
    let dir = PathBuf::from(args.next().context("usage: cairn-store-writer DIR SEED")?);
    let seed: u64 = args
        .next()
        .context("usage: cairn-store-writer DIR SEED")?
        .parse()
        .context("SEED")?;
    let chain = cairn_tests::crash_chain();
    let store = Store::open(&dir)?;
    store.init_genesis(&chain.genesis, &chain.genesis_state)?;
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let stdout = std::io::stdout();
    loop {
        let head = store.head()?;
        let txs = chain.random_transfers(&mut rng, &store, 30)?;
        let proposal = chain.block_on(&store, &head, (head.height % 7) as usize, txs)?;
        store.commit_block(&proposal.block, &proposal.executed.changes)?;
        let mut out = stdout.lock();
        writeln!(
            out,
            "committed {} {}",
            proposal.block.header.height,
            proposal.block.hash()
        )?;
        out.flush()?;
    }
}
