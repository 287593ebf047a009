//! The Cairn node: configuration, mempool, the driver that runs a consensus
//! engine, the HTTP API and the devnet supervisor. Being built (issue 3);
//! today the workspace's runnable tool is `cairn-genesis`.
