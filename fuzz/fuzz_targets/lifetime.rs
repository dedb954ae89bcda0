//! Lifetimes, in the compact command-line form and as JSON: parsing never panics, the
//! expiry computed from any start is within the bounds or refused, never wrapped.
#![no_main]

use std::time::Duration;

use chrono::{DateTime, Utc};
use libfuzzer_sys::fuzz_target;
use tempvault_core::domain::{latest_expiry, Lifetime};

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    let parsed = [
        Lifetime::parse_compact(&text).ok(),
        serde_json::from_slice::<Lifetime>(data).ok(),
    ];
    let starts = [0i64, 1_700_000_000, 253_402_300_000];
    for lifetime in parsed.into_iter().flatten() {
        for start in starts {
            let start = DateTime::<Utc>::from_timestamp(start, 0).expect("in range");
            let Ok(end) = lifetime.expiry_from(start, Duration::from_secs(1)) else {
                continue;
            };
            assert!(end > start, "an accepted lifetime ends after it starts");
            assert!(
                latest_expiry(start).is_some_and(|max| end <= max),
                "an accepted lifetime ends within twelve months"
            );
        }
    }
});
