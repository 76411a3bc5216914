//! How fast the records queries behind `GET /records` (search, filters, pages) and
//! `GET /analytics` are on a database of many calls (100,000 by default): it writes them
//! into a fresh database, then times each query (the median of several runs).
//!
//! ```sh
//! cargo run --release --bin voxline-records-bench -- [--records 100000] [--runs 7]
//! ```

use std::time::{Duration, Instant};

use anyhow::Context as _;
use clap::Parser;
use voxline::records::search::RecordFilter;
use voxline::records::{
    CallAnalysis, CallRecord, Direction, RecordReader, RecordStore, TurnLatency, UnixMs,
};

#[derive(Parser)]
struct Args {
    /// Finished calls to write.
    #[arg(long, default_value_t = 100_000)]
    records: u32,
    /// Runs of each query (the median is shown).
    #[arg(long, default_value_t = 7)]
    runs: usize,
}

/// 2024-06-01T00:00:00Z: the first call; the others follow every ~78 s (90 days for 100k).
const START: i64 = 1_717_200_000_000;
const AGENTS: [&str; 5] = ["sales", "support", "billing", "survey", "front-desk"];

fn record(i: u32) -> CallRecord {
    let started = START + i64::from(i) * 77_760;
    let agent = AGENTS[i as usize % AGENTS.len()];
    let mut r = CallRecord::started(
        format!("{}-{i}", START),
        format!("{i:08x}@pbx.example"),
        format!("sip:+49301{:07}@trunk.example", i % 5000),
        "sip:desk@voxline",
        if i.is_multiple_of(4) {
            Direction::Outbound
        } else {
            Direction::Inbound
        },
        agent,
        UnixMs::new(started),
    );
    let answered = !i.is_multiple_of(10);
    if answered {
        r.answered_at = Some(UnixMs::new(started + 2_000));
        r.ended_at = Some(UnixMs::new(
            started + 2_000 + i64::from(30 + i % 240) * 1000,
        ));
        r.turn_latencies = (0..(3 + i % 8))
            .map(|t| {
                let end = u64::from(t) * 6_000 + 2_000;
                TurnLatency {
                    caller_speech_end_ms: end,
                    first_backend_audio_ms: Some(end + 300 + u64::from(i % 400)),
                    first_rtp_out_ms: Some(end + 420 + u64::from(i % 500)),
                    stt_final_ms: None,
                    llm_first_token_ms: None,
                    tts_first_byte_ms: None,
                }
            })
            .collect();
        r.barge_ins = i % 3;
        r.analysis = Some(CallAnalysis {
            summary: Some(format!("Caller {} asked about order {}.", i % 5000, i)),
            outcome: Some(
                serde_json::json!({"resolved": !i.is_multiple_of(3), "topic": AGENTS[i as usize % 3]}),
            ),
            error: None,
            model: "gpt-4o-mini".into(),
            at: UnixMs::new(started + 400_000),
        });
    } else {
        r.ended_at = Some(UnixMs::new(started + 30_000));
    }
    r.end_reason = Some("RemoteBye".into());
    r.recording_path = Some(format!("/var/lib/voxline/recordings/{i}.wav"));
    r
}

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let dir = std::env::temp_dir().join(format!("voxline-records-bench-{}", std::process::id()));
    let result = run(&args, &dir);
    let _ = std::fs::remove_dir_all(&dir);
    result
}

fn run(args: &Args, dir: &std::path::Path) -> anyhow::Result<()> {
    let t = Instant::now();
    {
        let mut store = RecordStore::open(dir).context("open the store")?;
        for i in 0..args.records {
            store.finish(&record(i)).context("write a record")?;
        }
    }
    println!(
        "wrote {} records in {:.1} s",
        args.records,
        t.elapsed().as_secs_f64()
    );
    let reader = RecordReader::open(dir).context("open the reader")?;
    let last = START + i64::from(args.records) * 77_760;
    let day = 86_400_000;
    let time = |name: &str, f: &dyn Fn() -> anyhow::Result<usize>| -> anyhow::Result<()> {
        let mut runs = Vec::new();
        let mut n = 0;
        for _ in 0..args.runs {
            let t = Instant::now();
            n = f()?;
            runs.push(t.elapsed());
        }
        println!(
            "{name:<58} {:>8.2} ms  ({n} rows)",
            median(runs).as_secs_f64() * 1e3
        );
        Ok(())
    };
    let search = |f: RecordFilter, limit: u32, offset: u32| -> anyhow::Result<usize> {
        Ok(reader.search(&f, limit, offset)?.len())
    };
    time("GET /records (newest 50)", &|| {
        search(RecordFilter::default(), 50, 0)
    })?;
    time("GET /records?offset=50000 (a deep page)", &|| {
        search(RecordFilter::default(), 50, 50_000)
    })?;
    time("GET /records?agent=sales&answered=false", &|| {
        search(
            RecordFilter {
                agent: Some("sales".into()),
                answered: Some(false),
                ..Default::default()
            },
            50,
            0,
        )
    })?;
    time(
        "GET /records?q=+493010004242 (a number, few matches)",
        &|| {
            search(
                RecordFilter {
                    q: Some("+493010004242".into()),
                    ..Default::default()
                },
                50,
                0,
            )
        },
    )?;
    time(
        "GET /records?q=no-such-text (no match: every row read)",
        &|| {
            search(
                RecordFilter {
                    q: Some("no-such-text".into()),
                    ..Default::default()
                },
                50,
                0,
            )
        },
    )?;
    time(
        "GET /records?since=(last 7 days)&direction=outbound",
        &|| {
            search(
                RecordFilter {
                    since: Some(UnixMs::new(last - 7 * day)),
                    direction: Some(Direction::Outbound),
                    ..Default::default()
                },
                50,
                0,
            )
        },
    )?;
    let utc = jiff::tz::TimeZone::UTC;
    time("GET /analytics (last 30 days, every agent)", &|| {
        Ok(reader
            .analytics(UnixMs::new(last - 30 * day), UnixMs::new(last), None, &utc)?
            .len())
    })?;
    time("GET /analytics?agent=sales (last 30 days)", &|| {
        Ok(reader
            .analytics(
                UnixMs::new(last - 30 * day),
                UnixMs::new(last),
                Some("sales"),
                &utc,
            )?
            .len())
    })?;
    let berlin = jiff::tz::TimeZone::get("Europe/Berlin")?;
    time(
        "GET /analytics (366 days: every record, Europe/Berlin)",
        &|| {
            Ok(reader
                .analytics(
                    UnixMs::new(last - 366 * day),
                    UnixMs::new(last),
                    None,
                    &berlin,
                )?
                .len())
        },
    )?;
    Ok(())
}
