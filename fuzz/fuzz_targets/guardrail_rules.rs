//! Guardrail rules as an admin sends them, from arbitrary JSON: parsing and compiling never
//! panic, and a compiled rule set evaluates any instant and address without panicking.
#![no_main]

use std::net::IpAddr;

use chrono::{DateTime, Utc};
use libfuzzer_sys::fuzz_target;
use tempvault_core::guardrails::{GeoDb, GuardrailSpec, Guardrails, Source};

fuzz_target!(|data: &[u8]| {
    // The last 24 bytes, when there are that many, choose the instant and the address.
    let (json, probe) = data.split_at(data.len().saturating_sub(24));
    let Ok(spec) = serde_json::from_slice::<GuardrailSpec>(json) else {
        return;
    };
    let Ok(rules) = Guardrails::compile(&spec) else {
        return;
    };
    let geo = GeoDb::none();
    let mut probes = vec![(0i64, IpAddr::from([127, 0, 0, 1]))];
    if probe.len() == 24 {
        let secs = i64::from_le_bytes(probe[..8].try_into().unwrap_or_default());
        let ip: [u8; 16] = probe[8..].try_into().unwrap_or_default();
        probes.push((secs % 20_000_000_000, IpAddr::from(ip)));
    }
    for (secs, ip) in probes {
        let Some(now) = DateTime::<Utc>::from_timestamp(secs, 0) else {
            continue;
        };
        let verdict = rules.evaluate(&Source::new(now, ip, &geo));
        if !spec.countries.is_empty() {
            // Without a country database, a country rule can only deny.
            assert!(verdict.is_err(), "country rule passed with no database");
        }
    }
});
