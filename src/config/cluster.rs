//! `[store]` and `[cluster]`: where the shared state lives, and this node's identity among
//! the nodes that share it.
//!
//! ```toml
//! [store]
//! url_env = "VOXLINE_STORE_URL"      # or url = "postgres://voxline@db/voxline"
//!
//! [cluster]
//! node_id = "vox-a"                  # required with PostgreSQL
//! api_url = "http://10.0.0.5:8080"   # how the other nodes reach this node's API
//! heartbeat_s = 2
//! node_timeout_s = 10
//! ```

use std::path::Path;
use std::time::Duration;

use serde::Deserialize;

use super::error::{ConfigError, ConfigErrorKind};
use super::resolve::Resolver;
use crate::records::StoreLocation;

/// `[store]` as written.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct FileStore {
    pub url: Option<String>,
    pub url_env: Option<String>,
}

/// `[cluster]` as written.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct FileCluster {
    pub node_id: Option<String>,
    pub api_url: Option<String>,
    pub heartbeat_s: Option<u32>,
    pub node_timeout_s: Option<u32>,
}

/// Default `cluster.heartbeat_s`.
pub const DEFAULT_HEARTBEAT_S: u32 = 2;
/// Default `cluster.node_timeout_s`.
pub const DEFAULT_NODE_TIMEOUT_S: u32 = 10;
/// The longest node id.
pub const MAX_NODE_ID_LEN: usize = 64;

/// A node's name in the cluster: 1 to 64 letters, digits, `.`, `_` and `-`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct NodeId(String);

impl NodeId {
    /// Parses a node id.
    pub fn parse(s: &str) -> Result<NodeId, String> {
        let ok = !s.is_empty()
            && s.len() <= MAX_NODE_ID_LEN
            && s.bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'));
        if ok {
            Ok(NodeId(s.to_owned()))
        } else {
            Err(format!(
                "must be 1 to {MAX_NODE_ID_LEN} letters, digits, '.', '_' or '-' (got {s:?})"
            ))
        }
    }

    /// The id.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Display for NodeId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

/// `[cluster]`, checked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClusterSection {
    /// `node_id`: this node's name; its calls are recorded under it.
    pub node_id: NodeId,
    /// `api_url`: the base URL of this node's HTTP API as the other nodes reach it; `None`:
    /// `http://` and the address the API listens on (which must then be a specific one;
    /// checked at start, when `--http-listen` is known).
    pub api_url: Option<url::Url>,
    /// `heartbeat_s`: how often the node renews its row and its leases (1 to 60, default 2).
    pub heartbeat: Duration,
    /// `node_timeout_s`: a node silent this long is dead; its calls are marked unfinished
    /// and its leases move (at least three heartbeats, at most 600; default 10).
    pub node_timeout: Duration,
}

impl ClusterSection {
    /// The URL the other nodes reach this node's API at: `api_url`, or `http://` and
    /// `listen` (the API's address), which must then be a specific address.
    pub fn api_url_for(&self, listen: std::net::SocketAddr) -> Result<url::Url, String> {
        if let Some(u) = &self.api_url {
            return Ok(u.clone());
        }
        if listen.ip().is_unspecified() || listen.port() == 0 {
            return Err(format!(
                "cluster.api_url is required when the API listens on {listen} (the other \
                 nodes need an address they can reach)"
            ));
        }
        url::Url::parse(&format!("http://{listen}")).map_err(|e| e.to_string())
    }
}

impl Resolver<'_> {
    /// `[store]`: `url` or `url_env` (the name of an environment variable holding the URL,
    /// to keep a password out of the file); `"sqlite"` or absent is the data directory's
    /// database.
    pub(super) fn store(
        &self,
        f: Option<FileStore>,
        data_dir: &Path,
    ) -> Result<StoreLocation, ConfigError> {
        let bad = |key: &str, why: String| self.err(key, ConfigErrorKind::Cluster(why));
        let Some(f) = f else {
            return Ok(StoreLocation::sqlite(data_dir));
        };
        let (key, url) = match (f.url, f.url_env) {
            (Some(_), Some(_)) => {
                return Err(bad("store.url", "set url or url_env, not both".into()));
            }
            (Some(u), None) => ("store.url", u),
            (None, Some(var)) => match (self.env)(&var) {
                Some(u) if !u.trim().is_empty() => ("store.url_env", u),
                _ => {
                    return Err(bad(
                        "store.url_env",
                        format!("the environment variable {var} is not set"),
                    ));
                }
            },
            (None, None) => return Ok(StoreLocation::sqlite(data_dir)),
        };
        StoreLocation::parse(url.trim(), data_dir).map_err(|why| bad(key, why))
    }

    /// `[cluster]`: required with a PostgreSQL store (`node_id` at least), refused without
    /// one (a node alone on SQLite has no cluster to join).
    pub(super) fn cluster(
        &self,
        f: Option<FileCluster>,
        store: &StoreLocation,
    ) -> Result<Option<ClusterSection>, ConfigError> {
        let bad = |key: &str, why: String| self.err(key, ConfigErrorKind::Cluster(why));
        let f = match (f, store.is_shared()) {
            (None, false) => return Ok(None),
            (Some(_), false) => {
                return Err(bad(
                    "cluster",
                    "needs a shared store: [store] url = \"postgres://…\"".into(),
                ));
            }
            (f, true) => f.unwrap_or_default(),
        };
        let node_id = match f.node_id {
            Some(id) => NodeId::parse(&id).map_err(|why| bad("cluster.node_id", why))?,
            None => {
                return Err(bad(
                    "cluster.node_id",
                    "is required with a PostgreSQL store (each node's calls are recorded \
                     under its id)"
                        .into(),
                ));
            }
        };
        let api_url = f
            .api_url
            .map(|u| {
                url::Url::parse(&u)
                    .ok()
                    .filter(|u| matches!(u.scheme(), "http" | "https") && u.host_str().is_some())
                    .ok_or_else(|| {
                        bad(
                            "cluster.api_url",
                            format!("must be an http or https URL (got {u:?})"),
                        )
                    })
            })
            .transpose()?;
        let heartbeat_s = f.heartbeat_s.unwrap_or(DEFAULT_HEARTBEAT_S);
        self.in_range("cluster.heartbeat_s", heartbeat_s, 1, 60)?;
        let timeout_s = f
            .node_timeout_s
            .unwrap_or(DEFAULT_NODE_TIMEOUT_S.max(3 * heartbeat_s));
        self.in_range("cluster.node_timeout_s", timeout_s, 3 * heartbeat_s, 600)?;
        Ok(Some(ClusterSection {
            node_id,
            api_url,
            heartbeat: Duration::from_secs(u64::from(heartbeat_s)),
            node_timeout: Duration::from_secs(u64::from(timeout_s)),
        }))
    }
}
