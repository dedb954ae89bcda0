//! `tempvault-loadtest`: drives signed reads at a tempvault server and judges the answers.
//!
//! What it measures: throughput, latency percentiles (HdrHistogram; in open-loop mode
//! measured from each request's intended send time, so coordinated omission is corrected),
//! status and error-code counts, its own CPU use, and, in the same run, the machine's
//! `verify_strict` throughput on all cores: the bound a signed-read server cannot beat
//! without batching.
//! On what: N temporary machines it sets up itself through the admin API (bootstrap key
//! registration, approval, membership, grant), one secret, and a scenario mix of valid
//! reads, replays, forged signatures, expired machines and guardrail denials.
//! Reproduce: see the README's performance section; every loop here is bounded in count
//! and time, and targets only the server URL given (use loopback).

mod plan;
mod report;
mod setup;
mod wire;

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use clap::Parser;

use crate::plan::{Kind, Prepared};
use crate::report::{Report, Tally};

/// Load generator and verdict checker for a tempvault server.
#[derive(Debug, Parser)]
#[command(name = "tempvault-loadtest", version)]
pub struct Args {
    /// Server base URL; use a loopback address.
    #[arg(long, default_value = "http://127.0.0.1:8750")]
    server: String,
    /// Operator or vault admin token; default: `{data_dir}/admin.token`.
    #[arg(long, env = "TEMPVAULT_TOKEN", hide_env_values = true)]
    token: Option<String>,
    #[arg(long, default_value = "./data")]
    data_dir: PathBuf,
    #[arg(long, default_value = "default")]
    vault: String,
    /// Machines to set up for valid reads.
    #[arg(long, default_value_t = 16)]
    machines: usize,
    /// How long to drive load (at most 110 s: pre-signed requests must stay inside the
    /// server's skew window of 60 s either side).
    #[arg(long, default_value = "10s", value_parser = humantime::parse_duration)]
    duration: Duration,
    /// Open loop: requests per second, sent on schedule whatever the answers.
    #[arg(long)]
    rate: Option<u64>,
    /// Closed loop: this many connections, each sending as soon as the last answer came.
    /// Open loop: this many sender threads (at least 8) sharing the schedule.
    #[arg(long, default_value_t = 32)]
    concurrency: usize,
    /// Scenario mix in percent: valid,replay,forged,expired,guardrail.
    #[arg(long, default_value = "100,0,0,0,0")]
    mix: String,
    /// Where to write the JSON report.
    #[arg(long, default_value = "loadtest-report.json")]
    report: PathBuf,
    /// Seconds to measure the `verify_strict` bound (0 skips it).
    #[arg(long, default_value_t = 3)]
    bound_seconds: u64,
    /// Most requests to send in the run, whatever the duration.
    #[arg(long, default_value_t = 2_000_000)]
    max_requests: usize,
}

fn main() -> std::process::ExitCode {
    let args = Args::parse();
    match run(&args) {
        Ok(true) => std::process::ExitCode::SUCCESS,
        Ok(false) => {
            eprintln!("loadtest: some verdicts failed");
            std::process::ExitCode::from(2)
        }
        Err(e) => {
            eprintln!("loadtest: {e}");
            std::process::ExitCode::FAILURE
        }
    }
}

fn run(args: &Args) -> Result<bool, String> {
    if args.duration > Duration::from_secs(110) {
        return Err("--duration is at most 110s".into());
    }
    let mix = plan::Mix::parse(&args.mix)?;
    let admin = setup::Admin::new(args)?;
    eprintln!("setting up {} machines ...", args.machines);
    let fleet = setup::fleet(&admin, args.machines, &mix)?;

    let started_cpu = report::cpu_seconds();
    let expected = match args.rate {
        Some(rate) => (rate as f64 * args.duration.as_secs_f64()) as usize,
        None => args.max_requests.min(estimate_closed_loop(args)),
    };
    eprintln!("pre-signing {expected} requests ...");
    let prepared = plan::prepare(&fleet, &mix, expected.min(args.max_requests), args.duration)?;
    let sign_cpu = report::cpu_seconds() - started_cpu;
    // Taken after the replay seeds were sent, so the deltas count only the run.
    let before = admin.metrics()?;

    eprintln!("driving load for {:?} ...", args.duration);
    let run_cpu_start = report::cpu_seconds();
    let run_started = std::time::SystemTime::now();
    let (tally, elapsed) = drive(args, &wire::authority(&args.server)?, prepared);
    let run_cpu = report::cpu_seconds() - run_cpu_start;

    // Let the audit writer drain, then compare the server's own counts. When a machine's
    // rate-limit window closes, the server writes one summary event of the failures it
    // dropped: written, but not one of the requests sent, so those are counted apart. A
    // summary can land between the two readings; then both are read again.
    let sent = tally.sent.values().sum::<u64>() as f64;
    let mut attempt = 0;
    let (after, summaries) = loop {
        std::thread::sleep(Duration::from_millis(500));
        let after = admin.metrics()?;
        let read_at = std::time::SystemTime::now();
        let summaries = admin.count_events("auth.failures_dropped", run_started, read_at)?;
        attempt += 1;
        let accounted = report::audit_accounted(&before, &after, summaries);
        if (accounted - sent).abs() < 0.5 || attempt == 4 {
            break (after, summaries);
        }
    };
    let bound = (args.bound_seconds > 0)
        .then(|| report::verify_bound(Duration::from_secs(args.bound_seconds)));

    let report = Report::build(
        args, &tally, elapsed, run_cpu, sign_cpu, bound, &before, &after, summaries,
    );
    report.print();
    let json = serde_json::to_string_pretty(&report).map_err(|e| e.to_string())?;
    std::fs::write(&args.report, json)
        .map_err(|e| format!("cannot write {}: {e}", args.report.display()))?;
    eprintln!("report written to {}", args.report.display());
    Ok(report.all_verdicts_pass())
}

/// Closed loop has no schedule; pre-sign enough for a fast server and stop when used up.
fn estimate_closed_loop(args: &Args) -> usize {
    (40_000.0 * args.duration.as_secs_f64()) as usize
}

/// Sends the prepared requests, open or closed loop, until time or requests run out.
fn drive(args: &Args, authority: &str, prepared: Vec<Prepared>) -> (Tally, Duration) {
    let threads = match args.rate {
        Some(_) => args.concurrency.max(8),
        None => args.concurrency,
    };
    let queue = Arc::new(Mutex::new(prepared.into_iter()));
    let tally = Arc::new(Mutex::new(Tally::default()));
    let stop = Arc::new(AtomicBool::new(false));
    let sent = Arc::new(AtomicU64::new(0));
    let start = Instant::now();
    let deadline = start + args.duration;
    let interval = args
        .rate
        .map(|r| Duration::from_secs_f64(1.0 / r.max(1) as f64));

    let workers: Vec<_> = (0..threads)
        .map(|_| {
            let (queue, tally, stop, sent) =
                (queue.clone(), tally.clone(), stop.clone(), sent.clone());
            let mut connection = wire::Connection::new(authority);
            std::thread::spawn(move || {
                let mut local = Tally::default();
                loop {
                    if stop.load(Ordering::Relaxed) || Instant::now() >= deadline {
                        break;
                    }
                    let Some(req) = queue.lock().ok().and_then(|mut q| q.next()) else {
                        break;
                    };
                    let n = sent.fetch_add(1, Ordering::Relaxed);
                    // Open loop: each request has its slot; latency counts from the slot.
                    let intended = match interval {
                        Some(iv) => {
                            let slot = start + iv.mul_f64(n as f64);
                            if slot >= deadline {
                                break;
                            }
                            let now = Instant::now();
                            if slot > now {
                                std::thread::sleep(slot - now);
                            }
                            slot
                        }
                        None => Instant::now(),
                    };
                    let outcome = connection.send(&req.bytes);
                    local.record(req.kind, &outcome, intended.elapsed());
                }
                if let Ok(mut t) = tally.lock() {
                    t.merge(local);
                }
            })
        })
        .collect();

    let progress = {
        let (sent, stop) = (sent.clone(), stop.clone());
        std::thread::spawn(move || {
            let mut last = 0;
            while !stop.load(Ordering::Relaxed) && Instant::now() < deadline {
                std::thread::sleep(Duration::from_secs(1));
                let now = sent.load(Ordering::Relaxed);
                eprintln!(
                    "  {:>5.1}s  sent {now:>8}  {:>7} req/s",
                    start.elapsed().as_secs_f64(),
                    now - last
                );
                last = now;
            }
        })
    };
    for w in workers {
        let _ = w.join();
    }
    let elapsed = start.elapsed();
    stop.store(true, Ordering::Relaxed);
    let _ = progress.join();
    let tally = Arc::try_unwrap(tally)
        .ok()
        .and_then(|m| m.into_inner().ok())
        .unwrap_or_default();
    (tally, elapsed)
}

impl Kind {
    pub fn name(self) -> &'static str {
        match self {
            Kind::Valid => "valid",
            Kind::Replay => "replay",
            Kind::Forged => "forged",
            Kind::Expired => "expired",
            Kind::Guardrail => "guardrail",
        }
    }
}
