//! Counting answers, judging them, and reporting.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use ed25519_dalek::{Signer, SigningKey};
use hdrhistogram::Histogram;
use serde::Serialize;

use crate::plan::Kind;
use crate::Args;

/// The answer to one request.
pub struct Outcome {
    pub status: u16,
    pub code: String,
}

/// Counts and latencies, per kind of request.
#[derive(Default)]
pub struct Tally {
    pub sent: BTreeMap<Kind, u64>,
    pub answers: BTreeMap<(Kind, u16, String), u64>,
    pub latency: Option<Histogram<u64>>,
    pub valid_latency: Option<Histogram<u64>>,
}

fn histogram() -> Histogram<u64> {
    // 1 µs to 60 s at three significant digits.
    Histogram::new_with_bounds(1, 60_000_000, 3).expect("constant histogram bounds are valid")
}

impl Tally {
    pub fn record(&mut self, kind: Kind, outcome: &Outcome, latency: Duration) {
        *self.sent.entry(kind).or_default() += 1;
        *self
            .answers
            .entry((kind, outcome.status, outcome.code.clone()))
            .or_default() += 1;
        let micros = (latency.as_micros() as u64).clamp(1, 60_000_000);
        let _ = self.latency.get_or_insert_with(histogram).record(micros);
        if kind == Kind::Valid {
            let _ = self
                .valid_latency
                .get_or_insert_with(histogram)
                .record(micros);
        }
    }

    pub fn merge(&mut self, other: Tally) {
        for (k, v) in other.sent {
            *self.sent.entry(k).or_default() += v;
        }
        for (k, v) in other.answers {
            *self.answers.entry(k).or_default() += v;
        }
        for (mine, theirs) in [
            (&mut self.latency, other.latency),
            (&mut self.valid_latency, other.valid_latency),
        ] {
            if let Some(h) = theirs {
                let _ = mine.get_or_insert_with(histogram).add(&h);
            }
        }
    }
}

/// Process CPU time (user + system) so far, in seconds, from `/proc/self/stat`.
pub fn cpu_seconds() -> f64 {
    let Ok(stat) = std::fs::read_to_string("/proc/self/stat") else {
        return 0.0;
    };
    // Fields after the command name (which is in parentheses and may hold spaces).
    let rest = stat.rsplit_once(')').map_or("", |(_, r)| r);
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let ticks = |i: usize| {
        fields
            .get(i)
            .and_then(|f| f.parse::<f64>().ok())
            .unwrap_or(0.0)
    };
    // utime and stime are fields 14 and 15 of the whole line; USER_HZ is 100 on Linux.
    (ticks(11) + ticks(12)) / 100.0
}

/// `verify_strict` calls per second on every core for `how_long`.
pub fn verify_bound(how_long: Duration) -> f64 {
    let key = SigningKey::generate(&mut rand::rngs::OsRng);
    let message = b"tempvault-request-v1\nGET\n/v1/default/secrets/p/s\n8f14e45f-ceea-4672-9b4a-1c2d3e4f5a6b\n1712170800\nk9x2m4p7q8w3e5r6\ne3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";
    let sig = key.sign(message);
    let vk = key.verifying_key();
    let cores = std::thread::available_parallelism().map_or(2, usize::from);
    let start = Instant::now();
    let total: u64 = std::thread::scope(|s| {
        let handles: Vec<_> = (0..cores)
            .map(|_| {
                s.spawn(|| {
                    let mut n = 0u64;
                    while start.elapsed() < how_long {
                        for _ in 0..100 {
                            let _ = vk.verify_strict(std::hint::black_box(message), &sig);
                        }
                        n += 100;
                    }
                    n
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap_or(0)).sum()
    });
    total as f64 / start.elapsed().as_secs_f64()
}

/// A counter's value in Prometheus exposition text, 0 if absent.
/// Audit events the run accounts for: written (less rate-limit summaries) plus rate-limited.
pub fn audit_accounted(before: &str, after: &str, summaries: u64) -> f64 {
    let delta = |name: &str| counter(after, name) - counter(before, name);
    delta("tempvault_audit_events_total") - summaries as f64
        + delta("tempvault_audit_rate_limited_total")
}

fn counter(text: &str, name: &str) -> f64 {
    text.lines()
        .find_map(|l| l.strip_prefix(name).and_then(|rest| rest.strip_prefix(' ')))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0.0)
}

#[derive(Serialize)]
pub struct Percentiles {
    p50_ms: f64,
    p90_ms: f64,
    p99_ms: f64,
    p999_ms: f64,
    max_ms: f64,
}

fn percentiles(h: &Option<Histogram<u64>>) -> Option<Percentiles> {
    let h = h.as_ref()?;
    let ms = |q: f64| h.value_at_quantile(q) as f64 / 1000.0;
    Some(Percentiles {
        p50_ms: ms(0.5),
        p90_ms: ms(0.9),
        p99_ms: ms(0.99),
        p999_ms: ms(0.999),
        max_ms: h.max() as f64 / 1000.0,
    })
}

#[derive(Serialize)]
pub struct Verdict {
    name: String,
    pass: bool,
    detail: String,
}

/// Everything a run found.
#[derive(Serialize)]
pub struct Report {
    mode: String,
    machines: usize,
    duration_s: f64,
    requests: u64,
    throughput_rps: f64,
    valid_reads_rps: f64,
    latency_all: Option<Percentiles>,
    latency_valid: Option<Percentiles>,
    answers: BTreeMap<String, u64>,
    generator_cpu_s: f64,
    generator_cpu_share_of_run: f64,
    presign_cpu_s: f64,
    verify_strict_bound_rps: Option<f64>,
    ratio_to_bound: Option<f64>,
    audit_events_written: f64,
    audit_events_rate_limited: f64,
    audit_mean_batch_size: f64,
    verdicts: Vec<Verdict>,
}

impl Report {
    #[allow(clippy::too_many_arguments)]
    pub fn build(
        args: &Args,
        tally: &Tally,
        elapsed: Duration,
        run_cpu: f64,
        sign_cpu: f64,
        bound: Option<f64>,
        before: &str,
        after: &str,
        summaries: u64,
    ) -> Self {
        let secs = elapsed.as_secs_f64().max(1e-9);
        let requests: u64 = tally.sent.values().sum();
        let valid = tally.sent.get(&Kind::Valid).copied().unwrap_or(0);
        let delta = |name: &str| counter(after, name) - counter(before, name);
        let written = delta("tempvault_audit_events_total");
        let limited = delta("tempvault_audit_rate_limited_total");
        let batches = delta("tempvault_audit_batch_size_count");
        let batch_sum = delta("tempvault_audit_batch_size_sum");

        let mut verdicts = Vec::new();
        for kind in Kind::ALL {
            let sent = tally.sent.get(&kind).copied().unwrap_or(0);
            if sent == 0 {
                continue;
            }
            let (status, code) = kind.expected();
            let right = tally
                .answers
                .get(&(kind, status, code.to_owned()))
                .copied()
                .unwrap_or(0);
            verdicts.push(Verdict {
                name: format!("every {} request answered {status} {code}", kind.name()),
                pass: right == sent,
                detail: format!("{right} of {sent}"),
            });
        }
        let accounted = audit_accounted(before, after, summaries);
        verdicts.push(Verdict {
            name: "audit events written or rate-limited equal requests sent".into(),
            pass: (accounted - requests as f64).abs() < 0.5,
            detail: format!(
                "{written} written ({summaries} of them rate-limit summaries) + {limited} \
                 rate-limited vs {requests} sent"
            ),
        });

        let answers = tally
            .answers
            .iter()
            .map(|((k, s, c), n)| (format!("{} {s} {c}", k.name()).trim().to_owned(), *n))
            .collect();
        let throughput = requests as f64 / secs;
        let valid_rps = valid as f64 / secs;
        Self {
            mode: match args.rate {
                Some(r) => format!("open loop at {r}/s"),
                None => format!("closed loop, {} connections", args.concurrency),
            },
            machines: args.machines,
            duration_s: secs,
            requests,
            throughput_rps: throughput,
            valid_reads_rps: valid_rps,
            latency_all: percentiles(&tally.latency),
            latency_valid: percentiles(&tally.valid_latency),
            answers,
            generator_cpu_s: run_cpu,
            generator_cpu_share_of_run: run_cpu / secs,
            presign_cpu_s: sign_cpu,
            verify_strict_bound_rps: bound,
            ratio_to_bound: bound.map(|b| valid_rps / b),
            audit_events_written: written,
            audit_events_rate_limited: limited,
            audit_mean_batch_size: if batches > 0.0 {
                batch_sum / batches
            } else {
                0.0
            },
            verdicts,
        }
    }

    pub fn all_verdicts_pass(&self) -> bool {
        self.verdicts.iter().all(|v| v.pass)
    }

    pub fn print(&self) {
        println!("mode:              {}", self.mode);
        println!(
            "requests:          {} in {:.2}s",
            self.requests, self.duration_s
        );
        println!(
            "throughput:        {:.0} req/s ({:.0} valid reads/s)",
            self.throughput_rps, self.valid_reads_rps
        );
        if let Some(l) = &self.latency_valid {
            println!(
                "valid latency ms:  p50 {:.3}  p90 {:.3}  p99 {:.3}  p99.9 {:.3}  max {:.3}",
                l.p50_ms, l.p90_ms, l.p99_ms, l.p999_ms, l.max_ms
            );
        }
        if let (Some(b), Some(r)) = (self.verify_strict_bound_rps, self.ratio_to_bound) {
            println!("verify_strict bound: {b:.0}/s on all cores; valid reads / bound = {r:.3}");
        }
        println!(
            "generator cpu:     {:.2}s during the run ({:.0}% of one core)",
            self.generator_cpu_s,
            self.generator_cpu_share_of_run * 100.0
        );
        println!(
            "audit:             {} written, {} rate-limited, mean batch {:.1}",
            self.audit_events_written, self.audit_events_rate_limited, self.audit_mean_batch_size
        );
        for (answer, n) in &self.answers {
            println!("  {answer:<45} {n}");
        }
        for v in &self.verdicts {
            println!(
                "{} {} ({})",
                if v.pass { "PASS" } else { "FAIL" },
                v.name,
                v.detail
            );
        }
    }
}
