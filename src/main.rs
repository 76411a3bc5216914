//! The `voxline` command line: `voxline run` and `voxline call`.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use clap::{Parser, Subcommand};
use voxline::api::{self, ApiState};
use voxline::call::{AgentSpec, CallManager, CallService, CallTable, DialRequest};
use voxline::config::{self, Config};
use voxline::runtime::{self, rtp::RtpPorts};
use voxline::sip::EndReason;

#[derive(Parser)]
#[command(
    name = "voxline",
    version,
    about = "SIP/RTP user agent for AI voice agents"
)]
struct Cli {
    #[command(subcommand)]
    command: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Run voxline: listen for SIP and HTTP, answer calls, keep registrations.
    Run {
        /// Configuration file (default: the embedded default).
        #[arg(long)]
        config: Option<PathBuf>,
        /// Listen for SIP on this address, UDP and TCP (replaces [sip] udp_listen/tcp_listen).
        #[arg(long)]
        sip_listen: Option<SocketAddr>,
        /// Serve HTTP on this address (replaces [http] listen).
        #[arg(long)]
        http_listen: Option<SocketAddr>,
        /// On SIGTERM, drain: refuse new calls and OPTIONS probes (503), let the calls in
        /// progress finish (up to [limits] drain_deadline_s), then exit 0. A second SIGTERM
        /// ends the calls at once. Without it, SIGTERM ends the calls at once.
        #[arg(long)]
        drain: bool,
    },
    /// Place one outbound call and wait until it ends.
    Call {
        /// The SIP URI to call.
        target: String,
        /// Configuration file (trunks, codecs).
        #[arg(long)]
        config: Option<PathBuf>,
        /// Use this trunk's credentials and From (default: the trunk whose host matches).
        #[arg(long)]
        trunk: Option<String>,
        /// Local SIP address (default: an ephemeral port on all interfaces).
        #[arg(long, default_value = "0.0.0.0:0")]
        sip_listen: SocketAddr,
        /// Hang up this many milliseconds after the call is answered.
        #[arg(long)]
        hangup_after_ms: Option<u64>,
        /// The agent that talks on the call (a configured or built-in agent; default `hold`).
        #[arg(long = "agent")]
        agent_name: Option<String>,
    },
}

/// The log filter from the environment variable `var` (`info` when it is unset): a default
/// level and levels per module, `debug,voxline::sip=trace`. A value that does not parse is
/// reported on stderr and ignored.
fn log_filter(var: &str) -> tracing_subscriber::filter::Targets {
    let default = tracing_subscriber::filter::Targets::new().with_default(tracing::Level::INFO);
    match std::env::var(var) {
        Err(_) => default,
        Ok(v) => v.parse().unwrap_or_else(|e| {
            eprintln!("{var}={v:?} is not a log filter ({e}): logging at info");
            default
        }),
    }
}

fn main() -> ExitCode {
    voxline_heap::fix_trim_threshold();
    {
        use tracing_subscriber::layer::SubscriberExt;
        use tracing_subscriber::util::SubscriberInitExt;
        let filter = log_filter("VOXLINE_LOG");
        // The subscriber's level is the filter's most verbose one, so that the global level
        // check in every `trace!`/`debug!` call site short-circuits what nothing logs (the
        // media path has call sites that run per packet).
        let most = filter
            .iter()
            .map(|(_, level)| level)
            .chain(filter.default_level())
            .max()
            .unwrap_or(tracing_subscriber::filter::LevelFilter::INFO);
        tracing_subscriber::fmt()
            .with_writer(std::io::stderr)
            .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
            .with_max_level(most)
            .finish()
            .with(filter)
            .init();
    }
    let cli = Cli::parse();
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("voxline: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let result = rt.block_on(async {
        match cli.command {
            Cmd::Run {
                config,
                sip_listen,
                http_listen,
                drain,
            } => run(config, sip_listen, http_listen, drain).await,
            Cmd::Call {
                target,
                config,
                trunk,
                sip_listen,
                hangup_after_ms,
                agent_name,
            } => {
                call(
                    target,
                    config,
                    trunk,
                    sip_listen,
                    hangup_after_ms,
                    agent_name,
                )
                .await
            }
        }
    });
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("voxline: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn load_config(path: Option<&PathBuf>) -> anyhow::Result<Config> {
    match path {
        Some(p) => Ok(Config::load(p)?),
        None => Ok(Config::embedded_default()),
    }
}

/// The exit status when the SIP driver or a media worker died (sysexits' EX_SOFTWARE).
const EXIT_TASK_DIED: u8 = 70;

async fn run(
    config_path: Option<PathBuf>,
    sip_listen: Option<SocketAddr>,
    http_listen: Option<SocketAddr>,
    drain_on_term: bool,
) -> anyhow::Result<ExitCode> {
    // Before the first call can start: calls started earlier are the last run's.
    let started = voxline::records::UnixMs::now();
    let cfg = load_config(config_path.as_ref())?;
    match &config_path {
        Some(p) => tracing::info!(config = %p.display(), "configuration loaded"),
        None => tracing::info!(
            "no --config given: using the embedded default (calls recorded to ./data/recordings)"
        ),
    }
    if let Some(why) = cfg.describe_default_route() {
        tracing::info!("{why}");
    }
    for a in cfg.agents.iter().filter(|a| {
        matches!(
            a.kind,
            config::AgentKind::Realtime | config::AgentKind::Cascaded
        )
    }) {
        tracing::info!(
            agent = %a.name,
            allowed = %cfg.allow_list(&a.name).describe(),
            "AI agent: only these sources may call it (others get 403); set allow_from on the agent or a trunk to change that"
        );
    }
    check_local_tts(&cfg)?;
    let mut opts = cfg.runtime_options();
    if let Some(addr) = sip_listen {
        opts.udp_listen = vec![addr];
        opts.tcp_listen = vec![addr];
    }
    prepare_recordings(&cfg);
    let api_routes = voxline::call::DynamicRoutes::default();
    let subs: voxline::records::outbox::SharedSubscriptions = Arc::new(std::sync::RwLock::new(
        cfg.webhooks.iter().map(|w| w.subscription()).collect(),
    ));
    let http_addr = http_listen.unwrap_or(cfg.http.listen);
    let cluster_api = match &cfg.cluster {
        Some(c) => Some(c.api_url_for(http_addr).map_err(|e| {
            let file = config_path.as_ref().map_or_else(
                || "the embedded default".into(),
                |p| p.display().to_string(),
            );
            anyhow::anyhow!("{file}: {e}")
        })?),
        None => None,
    };
    // In a cluster the trunk registrations are the lease holder's (cluster::Node::run).
    let cluster_regs = if cfg.cluster.is_some() {
        std::mem::take(&mut opts.registrations)
    } else {
        Vec::new()
    };
    let (service, running, records, api_endpoints, node) = start_sip(
        &cfg,
        opts,
        true,
        api_routes.clone(),
        subs.clone(),
        cluster_api.as_ref(),
    )
    .await?;
    let webhooks = match &records {
        Some(w) => Some(blocking(|| {
            start_webhooks(&cfg, w.location(), subs.clone(), api_endpoints)
        })?),
        None => None,
    };
    if let (Some(days), Some(w)) = (cfg.retention_days, &records) {
        tokio::spawn(retention_loop(w.location().clone(), days, node_id(&cfg)));
    }
    let agents_db = match &records {
        Some(w) => Some(api::AgentsApi {
            store: voxline::records::shared::Shared::new(
                blocking(|| voxline::records::agents::AgentStore::open(w.location()))
                    .context("opening the agents table")?,
            ),
            routes: api_routes,
        }),
        None => None,
    };
    let campaigns = match &records {
        Some(w) => {
            let mut store = blocking(|| {
                voxline::records::campaigns::CampaignStore::open(
                    w.location(),
                    subs.clone(),
                    cfg.redaction.clone(),
                )
            })
            .context("opening the campaigns")?;
            store.set_node(node_id(&cfg));
            let interrupted = blocking(|| store.recover(voxline::records::UnixMs::now()))
                .context("recovering the campaigns")?;
            if interrupted > 0 {
                tracing::warn!(
                    interrupted,
                    "campaign calls in progress when voxline last stopped count as interrupted attempts"
                );
            }
            let trunk_limits = cfg
                .trunks
                .iter()
                .map(|t| voxline::records::campaigns::TrunkLimits {
                    name: t.name.clone(),
                    max_calls: t.max_calls,
                    calls_per_s: t.max_calls_per_s.map(f64::from),
                })
                .collect();
            Some(voxline::campaigns::Campaigns::new(store).with_trunk_limits(trunk_limits))
        }
        None => None,
    };
    // The API's own connection to the caller memory (privacy requests).
    let memory = match &records {
        Some(w) => Some(voxline::call::postcall::CallerMemory::new(
            blocking(|| voxline::records::memory::MemoryStore::open(w.location()))
                .context("opening the caller memory")?,
        )),
        None => None,
    };
    for (t, a) in running.sip_addrs.iter() {
        tracing::info!(transport = %t, addr = %a, "listening for SIP");
    }
    tokio::spawn(trim_after_sip_bursts(service.clone()));
    let agents: Vec<AgentSpec> = cfg.agents.iter().map(config::agent_spec).collect();
    // Finished calls for `GET /calls/{record_id}` and `GET /records`: a read-only connection
    // on the database the record writer created.
    let record_reader = match &records {
        Some(w) => match blocking(|| voxline::records::RecordReader::open_at(w.location())) {
            Ok(r) => Some(r),
            Err(e) => {
                tracing::warn!(error = %e, "call records not readable over HTTP");
                None
            }
        },
        None => None,
    };
    if let Some(db) = &agents_db
        && let Err(e) = db.rebuild_routes(&agents).await
    {
        anyhow::bail!("loading the routes set through the API: {}", e.message());
    }
    let recordings_s3 = match (&cfg.recording_upload, &records) {
        (Some(settings), Some(w)) => {
            let client = voxline::storage::S3Client::new(settings.clone())
                .context("recording_upload: the HTTP client")?;
            tracing::info!(
                endpoint = %settings.endpoint,
                bucket = %settings.bucket,
                delete_local = settings.delete_local,
                "recordings are uploaded after each call"
            );
            tokio::spawn(voxline::storage::uploader::run(
                client.clone(),
                w.location().clone(),
                node_id(&cfg),
            ));
            Some(client)
        }
        (Some(_), None) => {
            anyhow::bail!("[recording_upload] needs call records (data_dir), which are off")
        }
        _ => None,
    };
    let state = ApiState {
        handle: service.clone(),
        token: cfg.http.token.as_ref().map(|t| Arc::from(t.expose())),
        agents: Arc::new(agents),
        records: record_reader,
        sip_counters: Some(running.counters.clone()),
        sip_ws: Some(running.ws_entry.clone()),
        phone_agents: api::phone::directory(
            cfg.routes.iter().map(|r| (&r.pattern, r.agent.as_str())),
        ),
        webhooks,
        agents_db,
        memory,
        campaigns: campaigns.clone(),
        pricing: cfg.pricing.clone().map(Arc::new),
        sessions: api::console::Sessions::new(
            cfg.http.token.as_ref().map(|t| Arc::from(t.expose())),
            cfg.http
                .console_password
                .as_ref()
                .map(|p| Arc::from(p.expose())),
        ),
        recordings_s3,
        drain: api::drain::Drain::new(cfg.limits.drain_deadline, cfg.limits.retry_after),
        cluster: match &node {
            Some(n) => Some(api::ClusterApi {
                node: n.clone(),
                forward: voxline::cluster::Forwarder::new(
                    n.id().clone(),
                    cfg.http.token.as_ref().map(|t| Arc::from(t.expose())),
                )
                .map_err(|e| anyhow::anyhow!("cluster: the HTTP client: {e}"))?,
            }),
            None => None,
        },
    };
    let drain = state.drain.clone();
    if let Some(n) = &node {
        let d = drain.clone();
        tokio::spawn(n.clone().run(
            move || d.is_requested(),
            cluster_regs.clone(),
            running.commands.clone(),
            cluster_watchers(&state, records.as_ref().map(|w| w.location().clone())),
            cluster_dead_hooks(&state),
        ));
    }
    if let (Some(w), Some(reader)) = (&records, &state.records) {
        resume_analyses(&cfg, &state, started, w.clone(), reader.clone())?;
    }
    if let Some(c) = campaigns {
        let lookup_state = state.clone();
        let lookup: voxline::campaigns::AgentLookup = Arc::new(move |name: String| {
            let st = lookup_state.clone();
            Box::pin(async move { api::agent_by_name(&st, &name).await.ok().flatten() })
        });
        tokio::spawn(voxline::campaigns::run(c, service.clone(), lookup));
    }
    let (bound, _http) = api::serve(http_addr, state, cfg.http.limits)
        .await
        .context("starting HTTP")?;
    tracing::info!(addr = %bound, "serving HTTP");
    let death = tokio::select! {
        _ = shutdown_signal() => {
            if drain_on_term {
                drain.request();
            }
            None
        }
        _ = drain.requested() => None,
        d = runtime::health::wait_for_death() => Some(d),
    };
    let death = match death {
        None if drain.is_requested() => tokio::select! {
            () = drain_calls(&service, drain.retry_after_s(), drain.deadline) => None,
            _ = shutdown_signal() => {
                tracing::warn!("signal received while draining: ending the calls now");
                None
            }
            d = runtime::health::wait_for_death() => Some(d),
        },
        other => other,
    };
    if let Some(death) = death {
        // No graceful shutdown without a driver or with a worker gone: keep the records,
        // exit non-zero so that a supervisor restarts voxline.
        tracing::error!(%death, "exiting: voxline cannot serve calls");
        if let Some(w) = records {
            let _ = tokio::task::spawn_blocking(move || w.flush()).await;
        }
        return Ok(ExitCode::from(EXIT_TASK_DIED));
    }
    tracing::info!("signal received: shutting down gracefully");
    service.shutdown().await;
    if let Some(n) = &node {
        n.leave(&cluster_regs).await;
    }
    let _ = tokio::time::timeout(Duration::from_secs(1), running.driver).await;
    if let Some(w) = records {
        // Every finished call's record is on disk before we exit.
        match tokio::task::spawn_blocking(move || w.flush()).await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => tracing::error!(error = %e, "call records not flushed"),
            Err(e) => tracing::error!(error = %e, "call records not flushed"),
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// Drains this node: the SIP stack refuses new calls and OPTIONS probes with 503 and
/// `Retry-After: retry_after_s` (again, after `POST /drain`: it stays so); the calls in progress go on until they end, or until
/// `deadline` passes, when they are hung up (BYE).
async fn drain_calls(service: &CallService, retry_after_s: u32, deadline: Duration) {
    if let Err(e) = service.drain(retry_after_s).await {
        tracing::error!(error = %e, "cannot drain: the SIP driver is gone");
        return;
    }
    const LOOK: Duration = Duration::from_millis(250);
    let until = tokio::time::Instant::now() + deadline;
    loop {
        let active = service.calls.active();
        if active.is_empty() {
            tracing::info!("drained: no call in progress");
            return;
        }
        if tokio::time::Instant::now() >= until {
            tracing::warn!(
                calls = active.len(),
                deadline_s = deadline.as_secs(),
                "drain deadline passed: hanging up the calls in progress"
            );
            service.hangup_all().await;
            // Their BYEs are sent; give them a moment to be answered.
            let grace = tokio::time::Instant::now() + Duration::from_secs(5);
            while !service.calls.active().is_empty() && tokio::time::Instant::now() < grace {
                tokio::time::sleep(LOOK).await;
            }
            return;
        }
        tokio::time::sleep(LOOK).await;
    }
}

async fn call(
    target: String,
    config_path: Option<PathBuf>,
    trunk: Option<String>,
    sip_listen: SocketAddr,
    hangup_after_ms: Option<u64>,
    agent_name: Option<String>,
) -> anyhow::Result<ExitCode> {
    let cfg = load_config(config_path.as_ref())?;
    let mut opts = cfg.runtime_options();
    opts.udp_listen = vec![sip_listen];
    opts.tcp_listen = vec![sip_listen];
    opts.registrations.clear();
    opts.keepalives.clear();
    let (handle, _running, _, _, _) = start_sip(
        &cfg,
        opts,
        false,
        voxline::call::DynamicRoutes::default(),
        Default::default(),
        None,
    )
    .await?;
    let mut agent = match &agent_name {
        Some(n) => cfg
            .agent(n)
            .map(config::agent_spec)
            .with_context(|| format!("no agent named {n:?}"))?,
        None => AgentSpec::hold(),
    };
    agent.hangup_after = hangup_after_ms.map(Duration::from_millis);
    let (id, done) = handle
        .dial(DialRequest {
            target: target.clone(),
            trunk,
            agent,
        })
        .await?;
    tracing::info!(call = %id, %target, "calling");
    let result = tokio::select! {
        r = done => r.context("the call was lost")?,
        _ = shutdown_signal() => {
            let _ = handle.hangup(id).await;
            handle.shutdown().await;
            return Ok(ExitCode::FAILURE);
        }
    };
    handle.shutdown().await;
    let ok = result.answered && matches!(result.reason, EndReason::LocalBye | EndReason::RemoteBye);
    println!(
        "call to {target}: answered={} end={:?}",
        result.answered, result.reason
    );
    Ok(if ok {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

/// Starts running the post-call analyses the last stop interrupted (calls started before
/// `started`; in the background, one at a time), with the agents as the API resolves them
/// and a caller memory of their own (with the redaction the calls' memory has).
fn resume_analyses(
    cfg: &Config,
    state: &ApiState,
    started: voxline::records::UnixMs,
    records: voxline::records::RecordWriter,
    reader: voxline::records::RecordReader,
) -> anyhow::Result<()> {
    let lookup_state = state.clone();
    let lookup: voxline::call::postcall::RecordAgentLookup =
        Arc::new(move |name: String, version: Option<u32>| {
            let st = lookup_state.clone();
            Box::pin(async move {
                api::agent_of_record(&st, &name, version)
                    .await
                    .ok()
                    .flatten()
            })
        });
    let mut memory = blocking(|| voxline::records::memory::MemoryStore::open(records.location()))
        .context("opening the caller memory")?;
    memory.set_redactor(cfg.redaction.clone());
    tokio::spawn(voxline::call::postcall::resume_analyses(
        reader,
        started,
        lookup,
        Some(voxline::call::postcall::CallerMemory::new(memory)),
        Some(records),
        cfg.redaction.clone(),
        node_id(cfg),
    ));
    Ok(())
}

/// This node's `[cluster] node_id`, if it is one of a cluster: the jobs on files of its
/// disk (uploads, retention, resumed analyses) and its campaign claims are its own.
fn node_id(cfg: &Config) -> Option<String> {
    cfg.cluster.as_ref().map(|c| c.node_id.to_string())
}

/// Creates `data_dir/recordings` and repairs recordings a crash left unfinished. Problems are
/// logged; calls are still answered (recording of a call that cannot be written is skipped).
fn prepare_recordings(cfg: &Config) {
    let dir = cfg.data_dir.join("recordings");
    if let Err(e) = std::fs::create_dir_all(&dir) {
        tracing::warn!(dir = %dir.display(), error = %e, "cannot create the recordings directory; calls will not be recorded");
        return;
    }
    match runtime::recorder::repair_dir(&dir) {
        Ok(reports) => {
            for r in reports {
                tracing::warn!(report = ?r, "repaired a recording left unfinished by a crash");
            }
        }
        Err(e) => {
            tracing::warn!(dir = %dir.display(), error = %e, "cannot check recordings for repair")
        }
    }
}

/// What this node reloads when another node of the cluster changes it through its API: the
/// route table (routes and API agents) and the API's webhook endpoints.
fn cluster_watchers(
    state: &ApiState,
    store: Option<voxline::records::StoreLocation>,
) -> Vec<voxline::cluster::Watcher> {
    let mut out = Vec::new();
    if let Some(db) = state.agents_db.clone() {
        let agents = state.agents.clone();
        out.push(voxline::cluster::Watcher {
            name: "routes",
            reload: Arc::new(move || {
                let (db, agents) = (db.clone(), agents.clone());
                Box::pin(async move {
                    if let Err(e) = db.rebuild_routes(&agents).await {
                        tracing::warn!(error = %e.message(), "routes not reloaded");
                    }
                })
            }),
        });
    }
    if let (Some(hooks), Some(store)) = (state.webhooks.clone(), store) {
        out.push(voxline::cluster::Watcher {
            name: "webhooks",
            reload: Arc::new(move || {
                let (hooks, store) = (hooks.clone(), store.clone());
                Box::pin(async move {
                    match tokio::task::spawn_blocking(move || api_webhook_endpoints(&store)).await {
                        Ok(Ok(eps)) => hooks.sync_api_endpoints(eps),
                        Ok(Err(e)) => tracing::warn!(error = %e, "webhook endpoints not reloaded"),
                        Err(e) => tracing::warn!(error = %e, "webhook endpoints not reloaded"),
                    }
                })
            }),
        });
    }
    out
}

/// What the node that reaps a dead node does for it: the campaign targets the dead node was
/// dialing get an interrupted attempt (retried while attempts remain), so the campaigns go
/// on without it.
fn cluster_dead_hooks(state: &ApiState) -> Vec<voxline::cluster::DeadHook> {
    let Some(campaigns) = state.campaigns.clone() else {
        return Vec::new();
    };
    vec![Arc::new(move |dead: String| {
        let campaigns = campaigns.clone();
        Box::pin(async move {
            let node = dead.clone();
            match campaigns
                .with(move |s| s.recover_node(Some(&node), voxline::records::UnixMs::now()))
                .await
            {
                Ok(0) => {}
                Ok(n) => {
                    tracing::warn!(dead = %dead, targets = n, "campaign calls of a dead node count as interrupted attempts");
                    campaigns.wake();
                }
                Err(e) => {
                    tracing::error!(dead = %dead, error = %e, "campaign targets of a dead node not recovered")
                }
            }
        })
    })]
}

/// Runs blocking database work (opening a store, a recovery pass) from async code: on a
/// PostgreSQL store the driver blocks on its own small runtime, which must not run on a
/// tokio worker. The runtime is multi-threaded (built in `main`).
fn blocking<T>(f: impl FnOnce() -> T) -> T {
    tokio::task::block_in_place(f)
}

/// Deletes the recordings and transcripts of calls that ended more than `days` days ago, at
/// start and then every hour (`retention_days`).
async fn retention_loop(db: voxline::records::StoreLocation, days: u32, node: Option<String>) {
    const EVERY: Duration = Duration::from_secs(3600);
    const BATCH: u32 = 1000;
    let mut tick = tokio::time::interval(EVERY);
    loop {
        tick.tick().await;
        loop {
            let (db, node) = (db.clone(), node.clone());
            let now = voxline::records::UnixMs::now();
            let cutoff = voxline::records::UnixMs::new(now.get() - i64::from(days) * 86_400_000);
            let r = tokio::task::spawn_blocking(move || {
                voxline::records::retention::sweep(&db, cutoff, now, BATCH, node.as_deref())
            })
            .await;
            match r {
                Ok(Ok(s)) => {
                    if s.records > 0 || s.failed > 0 {
                        tracing::info!(
                            records = s.records,
                            files = s.files,
                            missing = s.missing,
                            failed = s.failed,
                            days,
                            "retention: recordings and transcripts deleted"
                        );
                    }
                    // Only a full batch of progress means more may be due (rows whose files
                    // cannot be deleted come back every time: they wait for the next hour).
                    if s.records < u64::from(BATCH) {
                        break;
                    }
                }
                Ok(Err(e)) => {
                    tracing::warn!(error = %e, "retention sweep failed");
                    break;
                }
                Err(e) => {
                    tracing::warn!(error = %e, "retention sweep failed");
                    break;
                }
            }
        }
    }
}

/// Starts one delivery task per endpoint (voxline.toml's `[[webhook]]`s and those added
/// through the API, whose subscriptions `subs` already holds) on the records database `db`,
/// after marking the pending rows of endpoints that no longer exist dead; the API's handle
/// on the outbox and the endpoints.
fn start_webhooks(
    cfg: &config::Config,
    db: &voxline::records::StoreLocation,
    subs: voxline::records::outbox::SharedSubscriptions,
    api_endpoints: Vec<voxline::webhooks::Endpoint>,
) -> anyhow::Result<api::WebhookApi> {
    use voxline::webhooks;
    let outbox = voxline::records::outbox::Outbox::open(db)
        .with_context(|| format!("opening the webhook outbox in {}", db.name().display()))?;
    let names: Vec<String> = cfg
        .webhooks
        .iter()
        .chain(&api_endpoints)
        .map(|w| w.name.clone())
        .collect();
    let buried = outbox.bury_orphans(&names)?;
    if buried > 0 {
        tracing::warn!(
            buried,
            "webhook deliveries of endpoints no longer configured are dead (redeliverable through the API)"
        );
    }
    let client = reqwest::Client::builder()
        .build()
        .context("building the webhook HTTP client")?;
    let api = api::WebhookApi {
        outbox: voxline::records::shared::Shared::new(outbox),
        counters: std::sync::Arc::new(webhooks::WebhookCounters::default()),
        client,
        subs,
        tasks: Default::default(),
        config_names: Arc::new(cfg.webhooks.iter().map(|w| w.name.clone()).collect()),
    };
    for ep in cfg.webhooks.iter().chain(&api_endpoints) {
        tracing::info!(endpoint = %ep.name, url = %ep.url, events = ep.events.len(), "webhook endpoint");
        api.run(ep.clone());
    }
    Ok(api)
}

/// The webhook endpoints added through the API, from the records database `db`. One whose
/// stored definition no longer passes the checks is left out, with an error in the log.
fn api_webhook_endpoints(
    db: &voxline::records::StoreLocation,
) -> anyhow::Result<Vec<voxline::webhooks::Endpoint>> {
    let outbox = voxline::records::outbox::Outbox::open(db)
        .with_context(|| format!("opening the webhook outbox in {}", db.name().display()))?;
    let mut out = Vec::new();
    for stored in outbox.api_endpoints()? {
        let secret = match voxline::webhooks::Secret::parse(&stored.secret) {
            Ok(s) => s,
            Err(e) => {
                tracing::error!(endpoint = %stored.name, error = %e, "stored webhook endpoint left out: bad secret");
                continue;
            }
        };
        match config::webhook_from_json(&stored.definition, secret) {
            Ok(ep) => out.push(ep),
            Err(e) => {
                tracing::error!(endpoint = %stored.name, error = %e, "stored webhook endpoint left out")
            }
        }
    }
    Ok(out)
}

/// Starts the SIP runtime with a call manager built from the configuration.
async fn start_sip(
    cfg: &Config,
    opts: runtime::Options,
    record_calls: bool,
    api_routes: voxline::call::DynamicRoutes,
    subs: voxline::records::outbox::SharedSubscriptions,
    cluster_api: Option<&url::Url>,
) -> anyhow::Result<(
    CallService,
    runtime::Running<voxline::call::CallCommand>,
    Option<voxline::records::RecordWriter>,
    Vec<voxline::webhooks::Endpoint>,
    Option<voxline::cluster::Node>,
)> {
    let setup = cfg.call_setup();
    let table = CallTable::default();
    let ports = RtpPorts::new(
        std::net::IpAddr::from([0, 0, 0, 0]),
        setup.rtp_ports.0,
        setup.rtp_ports.1,
    );
    let mut manager = CallManager::new(setup.routes, setup.media, ports, table.clone())
        .with_trunks(setup.trunk_policies)
        .with_dynamic_routes(api_routes);
    let mut records = None;
    let mut node = None;
    let mut api_endpoints = Vec::new();
    if record_calls {
        let node_id = cfg.cluster.as_ref().map(|c| c.node_id.as_str());
        let (writer, _reader) = blocking(|| {
            voxline::records::RecordWriter::spawn_with(
                &cfg.store,
                node_id,
                voxline::records::RecordWriter::DEFAULT_CAPACITY,
                subs.clone(),
                cfg.redaction.clone(),
            )
        })
        .with_context(|| format!("opening the call records in {}", cfg.store.name().display()))?;
        let recovered = writer.recovered_unfinished();
        if recovered > 0 {
            tracing::warn!(
                recovered,
                "calls in progress when voxline last stopped are marked unfinished"
            );
        }
        tracing::info!(db = %writer.path().display(), "call records");
        // The API's endpoints subscribe before the first call.
        api_endpoints = blocking(|| api_webhook_endpoints(writer.location()))?;
        subs.write()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .extend(api_endpoints.iter().map(|e| e.subscription()));
        let mut memory =
            blocking(|| voxline::records::memory::MemoryStore::open(writer.location()))
                .context("opening the caller memory")?;
        memory.set_redactor(cfg.redaction.clone());
        records = Some(writer.clone());
        if let (Some(c), Some(api_url)) = (&cfg.cluster, cluster_api) {
            // Joined once the record store has migrated the schema, before the first call:
            // record ids start with a prefix no other node uses.
            let now_ms = u64::try_from(voxline::records::UnixMs::now().get()).unwrap_or(0);
            let joined = blocking(|| voxline::cluster::Node::join(c, api_url, &cfg.store, now_ms))
                .with_context(|| format!("joining the cluster as node {}", c.node_id))?;
            tracing::info!(
                node = %c.node_id,
                api_url = %api_url,
                record_prefix = joined.record_prefix(),
                "joined the cluster"
            );
            manager = manager.with_record_prefix(joined.record_prefix());
            node = Some(joined);
        }
        manager = manager
            .with_records(writer)
            .with_redactor(cfg.redaction.clone())
            .with_memory(voxline::call::postcall::CallerMemory::new(memory));
    }
    let running = runtime::start(opts, manager)
        .await
        .context("starting SIP")?;
    let service = CallService::new(running.commands.clone(), table, setup.trunks, setup.domain);
    Ok((service, running, records, api_endpoints, node))
}

/// How often [`trim_after_sip_bursts`] looks at the SIP transaction count.
const TRIM_CHECK: Duration = Duration::from_secs(5);
/// Bursts smaller than this many live transactions are not worth a trim.
const TRIM_AFTER_PEAK: u64 = 1024;

/// Gives the memory of a burst of SIP transactions (a flood) back to the OS once it is over.
/// The stack frees its transactions and shrinks its maps when they end, but glibc's malloc
/// keeps freed memory in its arenas: RSS stayed at the flood's peak for good
/// (docs/PERFORMANCE.md, `tools/sip-flood.sh`). The burst's size is the larger of the live
/// count and the transactions started since the last look (a burst shorter than
/// [`TRIM_CHECK`] is seen too); when the live count falls to a quarter of a burst of at least
/// [`TRIM_AFTER_PEAK`], `malloc_trim(0)` hands the free pages back.
async fn trim_after_sip_bursts(service: CallService) {
    let mut peak = 0u64;
    let mut started_before: Option<u64> = None;
    let mut tick = tokio::time::interval(TRIM_CHECK);
    loop {
        tick.tick().await;
        let Some(c) = service.stack_counters().await else {
            return; // the driver has stopped
        };
        let live = c.server_transactions + c.client_transactions;
        let started = started_before.map_or(0, |b| c.transactions_started.saturating_sub(b));
        started_before = Some(c.transactions_started);
        peak = peak.max(live).max(started);
        if peak >= TRIM_AFTER_PEAK && live <= peak / 4 {
            let released = tokio::task::spawn_blocking(voxline_heap::trim)
                .await
                .unwrap_or(false);
            tracing::info!(
                peak,
                live,
                released,
                "SIP burst over: freed memory returned to the OS"
            );
            peak = live;
        }
    }
}

async fn shutdown_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        match signal(SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = tokio::signal::ctrl_c() => {}
                    _ = term.recv() => {}
                }
            }
            Err(_) => {
                let _ = tokio::signal::ctrl_c().await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}

/// An agent that speaks with espeak-ng needs libespeak-ng: refuse to start without it (the
/// agent could not say a word); a switch prompt without it is only skipped, with a warning.
fn check_local_tts(cfg: &config::Config) -> anyhow::Result<()> {
    let speaks = cfg.agents.iter().find(|a| {
        a.cascaded
            .as_ref()
            .is_some_and(|c| c.tts.provider == voxline::agent::cascaded::tts::TtsProvider::Espeak)
    });
    let prompts = cfg
        .agents
        .iter()
        .find(|a| a.fallback.switch_prompt.is_some());
    if speaks.is_none() && prompts.is_none() {
        return Ok(());
    }
    match voxline_espeak::available() {
        Ok(rate) => {
            tracing::debug!(rate, "espeak-ng loaded for the local TTS");
            Ok(())
        }
        Err(e) => match speaks {
            Some(a) => anyhow::bail!(
                "agent {}: [agent.tts] provider = \"espeak\" needs espeak-ng: {e}",
                a.name
            ),
            None => {
                if let Some(a) = prompts {
                    tracing::warn!(agent = %a.name, error = %e, "the backend switch prompt cannot be spoken; switches will be silent");
                }
                Ok(())
            }
        },
    }
}
