//! The Cairn wallet: keystore, transaction building and signing, API client.
//! Being built (issue 3).
