//! The requests of a run, signed before it starts so that signing does not compete with
//! the server for the machine's cores during the measurement.

use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;
use ed25519_dalek::{Signer, SigningKey};
use sha2::{Digest, Sha256};

use crate::setup::{Fleet, Identity};
use crate::wire;

/// What a request is meant to test, and so what answer it must get.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Kind {
    Valid,
    Replay,
    Forged,
    Expired,
    Guardrail,
}

impl Kind {
    pub const ALL: [Kind; 5] = [
        Kind::Valid,
        Kind::Replay,
        Kind::Forged,
        Kind::Expired,
        Kind::Guardrail,
    ];

    /// The status and code every request of this kind must get.
    pub fn expected(self) -> (u16, &'static str) {
        match self {
            Kind::Valid => (200, ""),
            Kind::Replay => (401, "nonce_replayed"),
            Kind::Forged => (401, "authentication_failed"),
            Kind::Expired => (401, "machine_expired"),
            Kind::Guardrail => (403, "ip_not_allowed"),
        }
    }
}

/// Percentages of each kind.
#[derive(Debug, Clone, Copy)]
pub struct Mix {
    pub valid: u32,
    pub replay: u32,
    pub forged: u32,
    pub expired: u32,
    pub guardrail: u32,
}

impl Mix {
    pub fn parse(s: &str) -> Result<Self, String> {
        let parts: Vec<u32> = s
            .split(',')
            .map(|p| {
                p.trim()
                    .parse::<u32>()
                    .map_err(|_| format!("--mix {s:?}: {p:?} is not a number"))
            })
            .collect::<Result<_, _>>()?;
        let [valid, replay, forged, expired, guardrail] = parts[..] else {
            return Err("--mix takes five numbers: valid,replay,forged,expired,guardrail".into());
        };
        if valid + replay + forged + expired + guardrail != 100 {
            return Err("--mix must add up to 100".into());
        }
        if valid == 0 && replay > 0 {
            return Err("replays need some valid reads to replay".into());
        }
        Ok(Self {
            valid,
            replay,
            forged,
            expired,
            guardrail,
        })
    }

    /// The kind of the `i`-th request: kinds spread evenly over every run of 100.
    fn kind(&self, i: usize) -> Kind {
        let slot = ((i * 37) % 100) as u32;
        let mut edge = self.valid;
        for (kind, share) in [
            (Kind::Valid, self.valid),
            (Kind::Replay, self.replay),
            (Kind::Forged, self.forged),
            (Kind::Expired, self.expired),
            (Kind::Guardrail, self.guardrail),
        ] {
            if kind != Kind::Valid {
                edge += share;
            }
            if slot < edge {
                return kind;
            }
        }
        Kind::Valid
    }
}

/// One ready-to-send request.
pub struct Prepared {
    pub kind: Kind,
    /// The whole HTTP request, as written to the connection.
    pub bytes: Vec<u8>,
}

fn sign(
    id: &str,
    key: &SigningKey,
    target: &str,
    ts: &str,
    nonce: &str,
) -> [(&'static str, String); 4] {
    let digest = hex::encode(Sha256::digest(b""));
    let message = format!("tempvault-request-v1\nGET\n{target}\n{id}\n{ts}\n{nonce}\n{digest}");
    let sig = STANDARD.encode(key.sign(message.as_bytes()).to_bytes());
    [
        ("X-Machine-Id", id.to_owned()),
        ("X-Timestamp", ts.to_owned()),
        ("X-Nonce", nonce.to_owned()),
        ("X-Signature", sig),
    ]
}

/// Unix seconds `ahead` seconds from now, as a timestamp header value.
fn unix_in(ahead: u64) -> String {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() + ahead)
        .unwrap_or_default()
        .to_string()
}

/// Signs `n` requests of the mix, on every core. Replays copy requests that were sent and
/// answered 200 before the run, so a replay can never race its original.
///
/// Every request carries one timestamp, set half the run ahead of now: the server accepts
/// timestamps up to its skew (60 s by default) either side of its clock, so the requests
/// stay acceptable from before the run starts until well past its end (runs are at most
/// 110 s).
pub fn prepare(
    fleet: &Fleet,
    mix: &Mix,
    n: usize,
    run: std::time::Duration,
) -> Result<Vec<Prepared>, String> {
    let ts = unix_in((run.as_secs() / 2).min(55));
    let authority = wire::authority(&fleet.server)?;
    let originals = if mix.replay > 0 {
        seed_originals(fleet, &ts)?
    } else {
        Vec::new()
    };
    let forger = SigningKey::generate(&mut rand::rngs::OsRng);
    let cores = std::thread::available_parallelism().map_or(2, usize::from);
    let chunk = n.div_ceil(cores).max(1);
    let pick = |list: &[Identity], i: usize| list[i % list.len()].clone();
    let mut out: Vec<Prepared> = Vec::with_capacity(n);
    std::thread::scope(|scope| {
        let handles: Vec<_> = (0..n)
            .step_by(chunk)
            .map(|from| {
                let (ts, originals, forger, authority) = (&ts, &originals, &forger, &authority);
                scope.spawn(move || {
                    (from..(from + chunk).min(n))
                        .map(|i| {
                            let kind = mix.kind(i);
                            let nonce =
                                format!("lt{i:020}{}", hex::encode(rand::random::<[u8; 4]>()));
                            let headers = match kind {
                                Kind::Valid => {
                                    let m = pick(&fleet.valid, i);
                                    sign(&m.id, &m.key, &fleet.target, ts, &nonce)
                                }
                                Kind::Replay => originals[i % originals.len()].clone(),
                                Kind::Forged => sign(
                                    &pick(&fleet.valid, i).id,
                                    forger,
                                    &fleet.target,
                                    ts,
                                    &nonce,
                                ),
                                Kind::Expired => {
                                    let m = pick(&fleet.expired, i);
                                    sign(&m.id, &m.key, &fleet.target, ts, &nonce)
                                }
                                Kind::Guardrail => {
                                    let m = pick(&fleet.guarded, i);
                                    sign(&m.id, &m.key, &fleet.target, ts, &nonce)
                                }
                            };
                            Prepared {
                                kind,
                                bytes: wire::get_request(authority, &fleet.target, &headers),
                            }
                        })
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        for h in handles {
            if let Ok(part) = h.join() {
                out.extend(part);
            }
        }
    });
    Ok(out)
}

/// Sends a few valid requests one at a time and keeps their headers for replaying.
fn seed_originals(fleet: &Fleet, ts: &str) -> Result<Vec<[(&'static str, String); 4]>, String> {
    let agent = ureq::agent();
    let mut kept = Vec::new();
    for (i, m) in fleet.valid.iter().cycle().take(64).enumerate() {
        let headers = sign(
            &m.id,
            &m.key,
            &fleet.target,
            ts,
            &format!("seed{i:020}{}", hex::encode(rand::random::<[u8; 4]>())),
        );
        let mut req = agent.get(&format!("{}{}", fleet.server, fleet.target));
        for (k, v) in &headers {
            req = req.set(k, v);
        }
        req.call().map_err(|e| format!("seed read failed: {e}"))?;
        kept.push(headers);
    }
    Ok(kept)
}
