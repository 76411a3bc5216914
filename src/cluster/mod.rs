//! This node in a cluster of voxline nodes sharing a PostgreSQL store (`[store] url`,
//! `[cluster]`). See docs/scaling.md.
//!
//! * Membership ([`Node`]): the node joins (its row in `nodes`, a record-id prefix no other
//!   node uses), renews its heartbeat every `heartbeat_s` and, on the same tick, reaps the
//!   nodes silent for longer than `node_timeout_s`: their calls in progress are marked
//!   unfinished, by exactly one survivor ([`crate::records::nodes`]).
//! * Registrations ([`Node::run`]): each trunk with `register = true` is registered by the
//!   one node holding its lease.
//! * Control from any node ([`Forwarder`]): a hang-up, DTMF or transfer for a call another
//!   node handles is sent to that node's API (`[cluster] api_url`) with the API token, and
//!   its answer returned as is.
//!
//! `cluster` sits on top with `api` and `config`: it uses the records' stores, HTTP and the
//! runtime's registration commands, and knows nothing of SIP messages or media.

use std::sync::Arc;
use std::time::Duration;

use crate::call::CallCommand;
use crate::config::cluster::{ClusterSection, NodeId};
use crate::records::nodes::NodeStore;
use crate::records::shared::Shared;
use crate::records::{CallRecord, RecordsError, StoreLocation};
use crate::runtime::{Commands, RegistrationSpec};

/// The header a forwarded request carries (the forwarding node's id): the receiving node
/// answers it itself and never forwards it again, so a stale owner cannot make a loop.
pub const FORWARDED_HEADER: &str = "x-voxline-forwarded-by";

/// How long a forwarded request may take, connecting included (a transfer waits for the
/// far end's NOTIFY, up to 32 s, on the owner).
pub const FORWARD_TIMEOUT: Duration = Duration::from_secs(40);

/// What a node does when another node changed a kind of shared setting through its API.
pub struct Watcher {
    /// The setting: `routes` (API routes and agents) or `webhooks` (API endpoints).
    pub name: &'static str,
    /// Reloads it from the store.
    pub reload: Arc<dyn Fn() -> BoxFuture + Send + Sync>,
}

/// The future of a [`Watcher`]'s reload.
pub type BoxFuture = std::pin::Pin<Box<dyn std::future::Future<Output = ()> + Send>>;

/// What the node that reaped a dead node does for it, with its id (recovering the campaign
/// targets it was dialing).
pub type DeadHook = Arc<dyn Fn(String) -> BoxFuture + Send + Sync>;

impl std::fmt::Debug for Watcher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Watcher({})", self.name)
    }
}

/// This node's membership.
#[derive(Debug, Clone)]
pub struct Node {
    settings: Arc<ClusterSection>,
    store: Shared<NodeStore>,
    record_prefix: u64,
}

impl Node {
    /// Joins the cluster of the shared store `at` (blocking; the schema must be migrated,
    /// which opening the record store does). `wanted_prefix` is this node's clock in ms:
    /// the record-id prefix is at least that and above every other node's.
    /// `api_url` is where the other nodes reach this node's API.
    pub fn join(
        settings: &ClusterSection,
        api_url: &url::Url,
        at: &StoreLocation,
        wanted_prefix: u64,
    ) -> Result<Node, RecordsError> {
        let store = NodeStore::open(at)?;
        let record_prefix =
            store.join(settings.node_id.as_str(), api_url.as_str(), wanted_prefix)?;
        Ok(Node {
            settings: Arc::new(settings.clone()),
            store: Shared::new(store),
            record_prefix,
        })
    }

    /// This node's id.
    pub fn id(&self) -> &NodeId {
        &self.settings.node_id
    }

    /// The record-id prefix this node must use.
    pub fn record_prefix(&self) -> u64 {
        self.record_prefix
    }

    /// The node store, for the API's queries.
    pub fn store(&self) -> &Shared<NodeStore> {
        &self.store
    }

    /// Renews the heartbeat and reaps dead nodes every `heartbeat_s`, until the task is
    /// dropped; `draining` says whether this node is draining (shown in its row). A
    /// database that cannot be reached is logged and tried again on the next tick.
    ///
    /// On the same tick it takes or renews the lease of each trunk registration in `regs`
    /// (`register:TRUNK`, for `node_timeout_s`): the node holding it keeps the registration
    /// up through `commands`; a node that loses it (or cannot renew it before it runs out)
    /// un-registers. So exactly one node registers each trunk, and when it dies another
    /// takes over within `node_timeout_s` and a heartbeat.
    ///
    /// And it reloads what another node changed through its API: each of `watchers` runs
    /// when its setting's change count moves (and once on the first tick, for a change made
    /// while this node started).
    pub async fn run(
        self,
        draining: impl Fn() -> bool + Send + 'static,
        regs: Vec<RegistrationSpec>,
        commands: Commands<CallCommand>,
        watchers: Vec<Watcher>,
        on_dead: Vec<DeadHook>,
    ) {
        let mut held: Vec<Option<tokio::time::Instant>> = vec![None; regs.len()];
        let mut seen: std::collections::HashMap<String, i64> = Default::default();
        let mut first = true;
        let mut tick = tokio::time::interval(self.settings.heartbeat);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let me = self.settings.node_id.as_str().to_owned();
        let timeout_ms = i64::try_from(self.settings.node_timeout.as_millis()).unwrap_or(i64::MAX);
        loop {
            tick.tick().await;
            let state = if draining() { "draining" } else { "up" };
            let (id, id2) = (me.clone(), me.clone());
            match self.store.with(move |s| s.heartbeat(&id, state)).await {
                Ok(Some(before)) if before == "dead" => tracing::warn!(
                    node = %me,
                    "this node was taken for dead by another node (its calls in progress were \
                     marked unfinished; their final records correct that)"
                ),
                Ok(Some(_)) => {}
                Ok(None) => tracing::warn!(node = %me, "this node's row is gone from the store"),
                Err(e) => tracing::warn!(node = %me, error = %e, "cluster heartbeat failed"),
            }
            match self.store.with(move |s| s.reap(&id2, timeout_ms)).await {
                Ok(reaped) => {
                    for r in reaped {
                        tracing::warn!(
                            dead = %r.node_id,
                            calls = r.calls,
                            timeout_s = self.settings.node_timeout.as_secs(),
                            "cluster node silent past node_timeout_s: taken for dead, its calls \
                             in progress marked unfinished"
                        );
                        for hook in &on_dead {
                            hook(r.node_id.clone()).await;
                        }
                    }
                }
                Err(e) => tracing::warn!(node = %me, error = %e, "cluster reap failed"),
            }
            for (spec, renewed) in regs.iter().zip(held.iter_mut()) {
                self.keep_registration(spec, renewed, &commands).await;
            }
            match self.store.with(|s| s.generations()).await {
                Ok(now) => {
                    for w in &watchers {
                        let n = now.iter().find(|(k, _)| k == w.name).map_or(0, |(_, n)| *n);
                        if first || seen.get(w.name) != Some(&n) {
                            if !first {
                                tracing::info!(
                                    setting = w.name,
                                    "changed on another node: reloading"
                                );
                            }
                            (w.reload)().await;
                            seen.insert(w.name.to_owned(), n);
                        }
                    }
                    first = false;
                }
                Err(e) => {
                    tracing::warn!(error = %e, "cluster: cannot read the settings' change counts")
                }
            }
        }
    }

    /// Tells the other nodes that the setting `name` changed (they reload it on their next
    /// heartbeat). A failure is logged: they pick it up with the next change.
    pub async fn changed(&self, name: &'static str) {
        if let Err(e) = self.store.with(move |s| s.bump(name)).await {
            tracing::warn!(setting = name, error = %e, "cluster: the other nodes were not told of a change");
        }
    }

    /// One tick of a trunk registration's lease: take or renew it, and start or stop the
    /// registration when that changes. `renewed` is when the lease was last renewed.
    async fn keep_registration(
        &self,
        spec: &RegistrationSpec,
        renewed: &mut Option<tokio::time::Instant>,
        commands: &Commands<CallCommand>,
    ) {
        let me = self.settings.node_id.as_str().to_owned();
        let lease = format!("register:{}", spec.name);
        let ttl = self.settings.node_timeout;
        let ttl_ms = i64::try_from(ttl.as_millis()).unwrap_or(i64::MAX);
        let now = tokio::time::Instant::now();
        let name = lease.clone();
        let holds = match self.store.with(move |s| s.lease(&name, &me, ttl_ms)).await {
            Ok(h) => h,
            Err(e) => {
                tracing::warn!(lease = %lease, error = %e, "cluster: lease not renewed");
                // Unknown: keep registering until the lease may have run out, no longer.
                renewed.is_some_and(|at| now.duration_since(at) < ttl)
            }
        };
        match (holds, renewed.is_some()) {
            (true, false) => {
                tracing::info!(trunk = %spec.name, "cluster: this node holds the trunk's registration lease: registering");
                if let Err(e) = commands.register(spec.clone()).await {
                    tracing::warn!(trunk = %spec.name, error = %e, "cluster: cannot start the registration");
                    return;
                }
                *renewed = Some(now);
            }
            (true, true) => *renewed = Some(now),
            (false, true) => {
                tracing::warn!(trunk = %spec.name, "cluster: the trunk's registration lease is lost: un-registering");
                let _ = commands.unregister(&spec.name).await;
                *renewed = None;
            }
            (false, false) => {}
        }
    }

    /// Marks this node as left (a clean stop) and gives up the leases of `regs`, so that
    /// another node registers those trunks on its next heartbeat.
    pub async fn leave(&self, regs: &[RegistrationSpec]) {
        let me = self.settings.node_id.as_str().to_owned();
        let leases: Vec<String> = regs
            .iter()
            .map(|r| format!("register:{}", r.name))
            .collect();
        let result = self
            .store
            .with(move |s| {
                for l in &leases {
                    s.release(l, &me)?;
                }
                s.leave(&me)
            })
            .await;
        if let Err(e) = result {
            tracing::warn!(error = %e, "cluster: could not mark this node as left");
        }
    }

    /// The calls in progress on the other nodes.
    pub async fn calls_elsewhere(&self) -> Result<Vec<CallRecord>, String> {
        let me = self.settings.node_id.as_str().to_owned();
        self.store.with(move |s| s.active_elsewhere(&me)).await
    }

    /// The API's URL of `node` when it is another node that is up (or draining).
    pub async fn peer_url(&self, node: &str) -> Result<Option<url::Url>, String> {
        if node == self.settings.node_id.as_str() {
            return Ok(None);
        }
        let n = node.to_owned();
        let found = self.store.with(move |s| s.api_url(&n)).await?;
        Ok(found.and_then(|u| url::Url::parse(&u).ok()))
    }

    /// The node handling the call with this record id, and its API's URL, when that is
    /// another node that is up.
    pub async fn owner(&self, record_id: &str) -> Result<Option<(String, url::Url)>, String> {
        let id = record_id.to_owned();
        let me = self.settings.node_id.as_str().to_owned();
        let found = self.store.with(move |s| s.owner(&id)).await?;
        Ok(found.and_then(|(node, url)| {
            if node == me {
                return None;
            }
            url::Url::parse(&url).ok().map(|u| (node, u))
        }))
    }
}

/// Sends control requests to the node that handles a call.
#[derive(Debug, Clone)]
pub struct Forwarder {
    client: reqwest::Client,
    token: Option<Arc<str>>,
    me: NodeId,
}

/// The owner's answer to a forwarded request.
#[derive(Debug)]
pub struct Forwarded {
    /// Its HTTP status.
    pub status: u16,
    /// Its JSON body.
    pub body: serde_json::Value,
}

/// Why a request could not be forwarded.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ForwardError {
    /// The owner did not answer (down, unreachable, timed out).
    #[error("node {node} did not answer: {reason}")]
    Unreachable {
        /// The owner.
        node: String,
        /// What happened.
        reason: String,
    },
}

impl Forwarder {
    /// A forwarder from node `me`, authenticating with the API token (every node of a
    /// cluster has the same one), if any.
    pub fn new(me: NodeId, token: Option<Arc<str>>) -> Result<Forwarder, String> {
        let client = reqwest::Client::builder()
            .timeout(FORWARD_TIMEOUT)
            .build()
            .map_err(|e| e.to_string())?;
        Ok(Forwarder { client, token, me })
    }

    /// POSTs `body` to `path` (`/calls/{record_id}/hangup`, …) on `node`'s API at `base`.
    pub async fn post(
        &self,
        node: &str,
        base: &url::Url,
        path: &str,
        body: &serde_json::Value,
    ) -> Result<Forwarded, ForwardError> {
        self.send(node, base, path, Some(body)).await
    }

    /// GETs `path` on `node`'s API at `base`.
    pub async fn get(
        &self,
        node: &str,
        base: &url::Url,
        path: &str,
    ) -> Result<Forwarded, ForwardError> {
        self.send(node, base, path, None).await
    }

    async fn send(
        &self,
        node: &str,
        base: &url::Url,
        path: &str,
        body: Option<&serde_json::Value>,
    ) -> Result<Forwarded, ForwardError> {
        let unreachable = |reason: String| ForwardError::Unreachable {
            node: node.to_owned(),
            reason,
        };
        let url = base.join(path).map_err(|e| unreachable(e.to_string()))?;
        let req = match body {
            Some(b) => self.client.post(url).json(b),
            None => self.client.get(url),
        };
        let mut req = req.header(FORWARDED_HEADER, self.me.as_str());
        if let Some(t) = &self.token {
            req = req.bearer_auth(t);
        }
        let resp = req.send().await.map_err(|e| unreachable(e.to_string()))?;
        let status = resp.status().as_u16();
        let body = resp
            .json::<serde_json::Value>()
            .await
            .unwrap_or(serde_json::Value::Null);
        Ok(Forwarded { status, body })
    }
}
