//! Prometheus metrics, registered once on a registry of the server's own.
//!
//! Labels are bounded: outcomes, stable reason codes, machine states, route patterns and
//! status codes. No label ever carries a machine id, a nonce, a vault name or a path.

use prometheus::{
    Encoder, Histogram, HistogramOpts, IntCounter, IntCounterVec, IntGauge, IntGaugeVec, Opts,
    Registry, TextEncoder,
};

/// Every metric the server exports.
#[derive(Debug, Clone)]
pub struct Metrics {
    registry: Registry,
    pub reads: IntCounterVec,
    pub read_seconds: Histogram,
    pub signature_verifications: IntCounterVec,
    pub verify_batch_size: Histogram,
    pub verify_batch_fallbacks: IntCounter,
    pub nonce_entries: IntGauge,
    pub machines: IntGaugeVec,
    /// RocksDB's own memory by part: `memtables`, `block_cache`, `table_readers`.
    pub store_memory: IntGaugeVec,
    pub sweeps: IntCounter,
    pub sweep_seconds: Histogram,
    pub last_sweep: IntGauge,
    pub expiries: IntCounter,
    pub audit_queue_depth: IntGauge,
    pub audit_batch_size: Histogram,
    pub audit_flush_seconds: Histogram,
    pub audit_write_failures: IntCounter,
    pub audit_events: IntCounter,
    pub audit_rate_limited: IntCounter,
    pub actor_restarts: IntCounter,
    pub http_requests: IntCounterVec,
}

fn counter_vec(r: &Registry, name: &str, help: &str, labels: &[&str]) -> IntCounterVec {
    let c = IntCounterVec::new(Opts::new(name, help), labels).expect("valid metric definition");
    r.register(Box::new(c.clone()))
        .expect("metric registered once");
    c
}

fn counter(r: &Registry, name: &str, help: &str) -> IntCounter {
    let c = IntCounter::new(name, help).expect("valid metric definition");
    r.register(Box::new(c.clone()))
        .expect("metric registered once");
    c
}

fn gauge(r: &Registry, name: &str, help: &str) -> IntGauge {
    let g = IntGauge::new(name, help).expect("valid metric definition");
    r.register(Box::new(g.clone()))
        .expect("metric registered once");
    g
}

fn histogram(r: &Registry, name: &str, help: &str, buckets: Vec<f64>) -> Histogram {
    let h = Histogram::with_opts(HistogramOpts::new(name, help).buckets(buckets))
        .expect("valid metric definition");
    r.register(Box::new(h.clone()))
        .expect("metric registered once");
    h
}

const LATENCY_BUCKETS: [f64; 14] = [
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
];

impl Metrics {
    pub fn new() -> Self {
        let r = Registry::new();
        let machines = IntGaugeVec::new(
            Opts::new("tempvault_machines", "Machines by stored lifecycle state."),
            &["state"],
        )
        .expect("valid metric definition");
        r.register(Box::new(machines.clone()))
            .expect("metric registered once");
        let store_memory = IntGaugeVec::new(
            Opts::new(
                "tempvault_store_memory_bytes",
                "Memory RocksDB reports for its memtables, block cache and table readers.",
            ),
            &["part"],
        )
        .expect("valid metric definition");
        r.register(Box::new(store_memory.clone()))
            .expect("metric registered once");
        Self {
            reads: counter_vec(
                &r,
                "tempvault_reads_total",
                "Machine requests by outcome and stable reason code.",
                &["outcome", "reason"],
            ),
            read_seconds: histogram(
                &r,
                "tempvault_read_duration_seconds",
                "Time from request to response for signed machine requests.",
                LATENCY_BUCKETS.to_vec(),
            ),
            signature_verifications: counter_vec(
                &r,
                "tempvault_signature_verifications_total",
                "Ed25519 signature verifications by result.",
                &["result"],
            ),
            verify_batch_size: histogram(
                &r,
                "tempvault_signature_batch_size",
                "Signatures of concurrent machine requests verified together.",
                vec![1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0, 256.0, 1024.0],
            ),
            verify_batch_fallbacks: counter(
                &r,
                "tempvault_signature_batch_fallbacks_total",
                "Signature batches whose batch equation failed, so each signature in them was checked on its own.",
            ),
            nonce_entries: gauge(
                &r,
                "tempvault_nonce_cache_entries",
                "Nonces remembered inside the skew window.",
            ),
            machines,
            store_memory,
            sweeps: counter(&r, "tempvault_sweeps_total", "Expiry sweeps run."),
            sweep_seconds: histogram(
                &r,
                "tempvault_sweep_duration_seconds",
                "Time one expiry sweep took.",
                LATENCY_BUCKETS.to_vec(),
            ),
            last_sweep: gauge(
                &r,
                "tempvault_last_sweep_timestamp_seconds",
                "Unix time at which the last expiry sweep finished.",
            ),
            expiries: counter(
                &r,
                "tempvault_expiries_total",
                "Machines marked expired by the sweep.",
            ),
            audit_queue_depth: gauge(
                &r,
                "tempvault_audit_queue_depth",
                "Audit events waiting to be written.",
            ),
            audit_batch_size: histogram(
                &r,
                "tempvault_audit_batch_size",
                "Audit events written per RocksDB batch.",
                vec![
                    1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0, 256.0, 512.0, 1024.0, 4096.0,
                ],
            ),
            audit_flush_seconds: histogram(
                &r,
                "tempvault_audit_flush_duration_seconds",
                "Time to write and sync one audit batch.",
                LATENCY_BUCKETS.to_vec(),
            ),
            audit_write_failures: counter(
                &r,
                "tempvault_audit_write_failures_total",
                "Audit batches that could not be written.",
            ),
            audit_events: counter(&r, "tempvault_audit_events_total", "Audit events written."),
            audit_rate_limited: counter(
                &r,
                "tempvault_audit_rate_limited_total",
                "Failed-authentication events dropped by the per-machine rate limit.",
            ),
            actor_restarts: counter(
                &r,
                "tempvault_actor_restarts_total",
                "Machine actors restarted by their supervisor.",
            ),
            http_requests: counter_vec(
                &r,
                "tempvault_http_requests_total",
                "HTTP requests by route pattern and status code.",
                &["route", "status"],
            ),
            registry: r,
        }
    }

    /// The exposition text for `/metrics`.
    pub fn render(&self) -> String {
        let mut buf = Vec::new();
        let _ = TextEncoder::new().encode(&self.registry.gather(), &mut buf);
        String::from_utf8(buf).unwrap_or_default()
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}
