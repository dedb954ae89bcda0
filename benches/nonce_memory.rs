//! Memory of the nonce cache under a steady request rate: bytes per live nonce, and whether
//! the resident set stays flat once the skew window is full.
//!
//! What: feeds the real `NonceCache` a fixed rate of fresh nonces (from 1 000 machines) on
//! a simulated clock, purging once a simulated second as the server does, for four windows;
//! samples the process's resident set size each simulated second. Reports bytes per live
//! nonce (RSS growth over the empty cache divided by the live entries at the plateau) and
//! the RSS change over the last two windows, which should be nil.
//! Data: synthetic; rate from `TEMPVAULT_BENCH_NONCE_RATE` (default 20 000 per second),
//! window 60 s (the default skew).
//! Reproduce: `cargo bench --profile dev --bench nonce_memory`; the README has the figures.

#![expect(
    clippy::unwrap_used,
    reason = "a bench with a broken setup should stop at once"
)]

use tempvault::domain::MachineId;
use tempvault::nonce::NonceCache;
use tempvault::protocol::Nonce;

fn rss_bytes() -> f64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    let kib: f64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .unwrap();
    kib * 1024.0
}

fn main() {
    let rate: u64 = std::env::var("TEMPVAULT_BENCH_NONCE_RATE")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(20_000);
    let skew = 60u64;
    let machines: Vec<MachineId> = (0..1_000).map(|_| MachineId::random()).collect();
    let cache = NonceCache::new(skew);
    let start = 1_800_000_000i64;
    let seconds = 4 * skew as i64;

    let empty = rss_bytes();
    let mut samples = Vec::new();
    let mut counter = 0u64;
    for t in 0..seconds {
        let now = start + t;
        for _ in 0..rate {
            counter += 1;
            let machine = machines[(counter % machines.len() as u64) as usize];
            let nonce = Nonce::parse(&format!("n{counter:0>20}")).unwrap();
            cache.consume(machine, &nonce, now, now).unwrap();
        }
        let live = cache.purge(now + 1);
        samples.push((t, live, rss_bytes()));
    }

    let (_, plateau_live, plateau_rss) = samples[samples.len() - 1];
    let at_two_windows = samples[(2 * skew) as usize].2;
    println!("rate {rate}/s, window {skew} s, {seconds} simulated seconds");
    for (t, live, rss) in samples.iter().step_by(30) {
        println!(
            "  t={t:>3}s  live {live:>9}  RSS {:.1} MiB",
            rss / 1024.0 / 1024.0
        );
    }
    println!(
        "bytes per live nonce: {:.1} ({} live, RSS {:.1} MiB over the empty cache)",
        (plateau_rss - empty) / plateau_live as f64,
        plateau_live,
        (plateau_rss - empty) / 1024.0 / 1024.0
    );
    println!(
        "RSS change over the last two windows: {:+.2} MiB",
        (plateau_rss - at_two_windows) / 1024.0 / 1024.0
    );
}
