//! Reading a node's event stream (`GET /events`, Server-Sent Events).

use std::io::{BufRead, BufReader, Read};
use std::time::Duration;

use anyhow::{anyhow, bail, Result};
use serde_json::Value;

/// A subscription to a node's events.
pub struct Events {
    lines: BufReader<Box<dyn Read + Send>>,
}

impl Events {
    /// Subscribes to the node at `base`; `timeout` bounds the whole
    /// subscription (none: until the node ends it).
    pub fn open(base: &str, timeout: Option<Duration>) -> Result<Self> {
        let agent: ureq::Agent = ureq::Agent::config_builder()
            .timeout_global(timeout)
            .timeout_connect(Some(Duration::from_secs(10)))
            .http_status_as_error(false)
            .build()
            .into();
        let url = format!("{}/events", base.trim_end_matches('/'));
        let resp = agent
            .get(&url)
            .header("Accept", "text/event-stream")
            .call()
            .map_err(|e| anyhow!("cannot reach the node at {base}: {e}"))?;
        if resp.status().as_u16() != 200 {
            bail!(
                "the node at {base} has no event stream (HTTP {})",
                resp.status()
            );
        }
        let reader: Box<dyn Read + Send> = Box::new(resp.into_body().into_reader());
        Ok(Self {
            lines: BufReader::new(reader),
        })
    }

    /// The next event: its type and its JSON. `None` when the node ended
    /// the stream; an error when it broke off (or the timeout passed).
    pub fn next_event(&mut self) -> Result<Option<(String, Value)>> {
        let mut kind = String::new();
        let mut data = String::new();
        loop {
            let mut line = String::new();
            let n = self
                .lines
                .read_line(&mut line)
                .map_err(|e| anyhow!("the event stream broke off: {e}"))?;
            if n == 0 {
                return Ok(None);
            }
            let line = line.trim_end_matches(['\r', '\n']);
            if line.is_empty() {
                if data.is_empty() {
                    continue;
                }
                let value: Value = serde_json::from_str(&data)
                    .map_err(|e| anyhow!("the node sent an unreadable event: {e}"))?;
                if kind.is_empty() {
                    kind = value["type"].as_str().unwrap_or("event").to_owned();
                }
                return Ok(Some((kind, value)));
            }
            if let Some(rest) = line.strip_prefix("event:") {
                kind = rest.trim().to_owned();
            } else if let Some(rest) = line.strip_prefix("data:") {
                if !data.is_empty() {
                    data.push('\n');
                }
                data.push_str(rest.trim_start());
            }
            // Comments (keep-alives) and other fields: nothing to do.
        }
    }
}

/// One line for a person: what the event says.
pub fn describe(kind: &str, v: &Value) -> String {
    let short = |key: &str| {
        v[key]
            .as_str()
            .map(|s| s.chars().take(16).collect::<String>())
            .unwrap_or_default()
    };
    match kind {
        "head" => format!(
            "head {} {} ({} transactions{})",
            v["height"],
            short("hash"),
            v["transactions"],
            if v["final"].as_bool() == Some(true) {
                ", final"
            } else {
                ""
            }
        ),
        "tx" => match v["status"].as_str() {
            Some("committed") => {
                format!("tx {} committed at height {}", short("hash"), v["height"])
            }
            Some("confirmed") => format!(
                "tx {} has {} confirmations (height {})",
                short("hash"),
                v["confirmations"],
                v["height"]
            ),
            Some("dropped") => format!(
                "tx {} dropped: {}",
                short("hash"),
                v["reason"].as_str().unwrap_or("")
            ),
            Some(status) => format!("tx {} {status}", short("hash")),
            None => format!("tx {}", short("hash")),
        },
        "leader" => format!(
            "{} leader {} (term {})",
            v["engine"].as_str().unwrap_or(""),
            v["leader"],
            v["term"]
        ),
        "primary" => format!("pbft primary {} (view {})", v["primary"], v["view"]),
        "view_change" => format!("pbft view change (view {})", v["view"]),
        "reorg" => format!(
            "reorganisation of {} blocks, head at {}",
            v["depth"], v["height"]
        ),
        "switch" => format!(
            "consensus switches to {} at height {} ({} validators)",
            v["engine"].as_str().unwrap_or("?"),
            v["height"],
            v["validators"]
        ),
        "dropped" => format!(
            "dropped by the node: {}",
            v["reason"].as_str().unwrap_or("")
        ),
        other => format!("{other} {v}"),
    }
}
