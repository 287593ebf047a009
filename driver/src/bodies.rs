//! The JSON bodies of `POST /transactions` (one signed transfer) and
//! `POST /transactions/batch` (an array of them), parsed into transactions
//! for [`crate::admit`]. What a body can make the node allocate is bounded
//! by its size and, for a batch, by the entry count as it is parsed.

use cairn_chain::{Transaction, MAX_TRANSACTION_BYTES};

use crate::mempool::Rejection;

/// Most transactions in one batch.
pub const MAX_BATCH: usize = 10_000;

/// Largest body of `POST /transactions`: a transaction in JSON (hex doubles
/// its bytes, field names and quotes add some).
pub const MAX_SINGLE_BODY: usize = 4 * MAX_TRANSACTION_BYTES;

/// Largest body of `POST /transactions/batch`.
pub const MAX_BATCH_BODY: usize = MAX_BATCH * MAX_SINGLE_BODY;

/// How the bounded parse says an array is too long.
const TOO_MANY: &str = "more than the batch limit";

/// Parses the body of `POST /transactions`.
pub fn single(body: &[u8]) -> Result<Transaction, Rejection> {
    if body.len() > MAX_SINGLE_BODY {
        return Err(Rejection::Malformed("body too large".into()));
    }
    serde_json::from_slice(body).map_err(|e| Rejection::Malformed(e.to_string()))
}

/// A parsed batch: the transactions that parsed, in order (for one batch
/// verification), and per entry of the array the index of its transaction
/// or why it did not parse.
#[derive(Debug, Default)]
pub struct Batch {
    pub txs: Vec<Transaction>,
    pub slots: Vec<Result<usize, Rejection>>,
}

/// Parses the body of `POST /transactions/batch`. The common case, every
/// entry a transaction, parses the body once; otherwise entries are parsed
/// one by one to say which is wrong. Both parses stop at entry
/// [`MAX_BATCH`] + 1.
pub fn batch(body: &[u8]) -> Result<Batch, Rejection> {
    if body.len() > MAX_BATCH_BODY {
        return Err(Rejection::Malformed("body too large".into()));
    }
    if let Ok(Bounded(txs)) = serde_json::from_slice::<Bounded<Transaction>>(body) {
        let slots = (0..txs.len()).map(Ok).collect();
        return Ok(Batch { txs, slots });
    }
    let Bounded(items) =
        serde_json::from_slice::<Bounded<serde_json::Value>>(body).map_err(|e| {
            if e.to_string().starts_with(TOO_MANY) {
                Rejection::Malformed(format!(
                    "more than {MAX_BATCH} transactions in one batch; the limit is {MAX_BATCH}"
                ))
            } else {
                Rejection::Malformed(format!("expected a JSON array: {e}"))
            }
        })?;
    let mut txs = Vec::with_capacity(items.len());
    let slots = items
        .into_iter()
        .map(|v| {
            let tx = serde_json::from_value::<Transaction>(v)
                .map_err(|e| Rejection::Malformed(e.to_string()))?;
            txs.push(tx);
            Ok(txs.len() - 1)
        })
        .collect();
    Ok(Batch { txs, slots })
}

/// A JSON array of at most [`MAX_BATCH`] entries, refused while it is
/// parsed as soon as it holds one more.
struct Bounded<T>(Vec<T>);

impl<'de, T: serde::Deserialize<'de>> serde::Deserialize<'de> for Bounded<T> {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct Entries<T>(std::marker::PhantomData<T>);
        impl<'de, T: serde::Deserialize<'de>> serde::de::Visitor<'de> for Entries<T> {
            type Value = Bounded<T>;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                write!(f, "a JSON array of at most {MAX_BATCH} transactions")
            }
            fn visit_seq<A: serde::de::SeqAccess<'de>>(
                self,
                mut seq: A,
            ) -> Result<Self::Value, A::Error> {
                let mut out = Vec::with_capacity(seq.size_hint().unwrap_or(0).min(MAX_BATCH));
                while let Some(entry) = seq.next_element()? {
                    if out.len() == MAX_BATCH {
                        return Err(serde::de::Error::custom(TOO_MANY));
                    }
                    out.push(entry);
                }
                Ok(Bounded(out))
            }
        }
        d.deserialize_seq(Entries(std::marker::PhantomData))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_batch_one_entry_over_the_limit_is_refused_while_parsed() {
        let body = format!("[{}0]", "0,".repeat(MAX_BATCH));
        match batch(body.as_bytes()) {
            Err(Rejection::Malformed(m)) => assert!(m.contains("more than 10000"), "{m}"),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn entries_that_are_not_transactions_are_named_one_by_one() {
        let b = batch(b"[1, {\"x\": 2}]").expect("an array");
        assert!(b.txs.is_empty());
        assert_eq!(b.slots.len(), 2);
        assert!(b.slots.iter().all(Result::is_err));
        assert!(matches!(batch(b"{}"), Err(Rejection::Malformed(_))));
        assert!(matches!(single(b"[]"), Err(Rejection::Malformed(_))));
    }
}
