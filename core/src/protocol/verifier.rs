//! Gathering the signatures of concurrent requests into batches, on each request worker.
//!
//! Each HTTP worker is a single-threaded runtime serving many connections. A request that
//! reaches signature verification puts its signature into its worker's queue. If the queue
//! was empty, that request leads: it yields to the runtime, so that every other request
//! the worker can make progress on gets to add its signature too, then takes the whole queue,
//! checks it with [`verify_each`] and hands every request its answer. A request alone on its
//! worker is not delayed beyond two passes of the scheduler (nothing else is ready, so the
//! runtime comes straight back to it); under load, the batch is whatever arrived while the last batch was
//! being checked, so batches grow with the load and no timer is involved.
//!
//! Verification stays on the worker that received the request: no thread hop, and the other
//! workers keep their own batches. A worker whose batch failed (a bad signature in it)
//! checks its next [`SINGLES_AFTER_FAILED_BATCH`] signatures alone before it batches again.

use std::cell::{Cell, RefCell};
use std::rc::Rc;

use ed25519_dalek::{Signature, VerifyingKey};
use prometheus::{Histogram, IntCounter};
use tokio::sync::oneshot;

use super::batch::{verify_each, Candidate};

/// Most passes of the scheduler a leader yields for, after the first, while more
/// signatures keep arriving.
const MAX_GATHER_ROUNDS: usize = 8;

/// How many of a worker's next signatures are checked one by one after one of its batches
/// failed. A failed batch costs its equation plus a `verify_strict` per signature in it, so
/// while bad signatures keep arriving (a flood of forgeries), batching would cost more than
/// it saves; after this many single checks the worker tries batches again.
pub const SINGLES_AFTER_FAILED_BATCH: usize = 64;

/// One request's signature, waiting for its batch.
struct Job {
    key: VerifyingKey,
    message: Vec<u8>,
    signature: Signature,
    answer: oneshot::Sender<bool>,
}

/// The jobs waiting on one worker thread.
type Queue = Rc<RefCell<Vec<Job>>>;

thread_local! {
    static QUEUE: Queue = Rc::default();
    /// Single checks left before this worker batches again.
    static SINGLES_LEFT: Cell<usize> = const { Cell::new(0) };
}

/// Whether this worker should check the next signature on its own; counts it if so.
fn take_single() -> bool {
    SINGLES_LEFT.with(|left| {
        let n = left.get();
        left.set(n.saturating_sub(1));
        n > 0
    })
}

/// Signature verification for the read path: batched across concurrent requests, or one by
/// one when batching is turned off.
#[derive(Debug, Clone)]
pub struct SignatureVerifier {
    max_batch: usize,
    batch_size: Histogram,
    fallbacks: IntCounter,
}

impl SignatureVerifier {
    /// `max_batch` of 1 turns batching off: every signature is checked on its own, at once.
    /// `fallbacks` counts batches whose equation failed, so that each signature in them was
    /// checked on its own (and the worker's next [`SINGLES_AFTER_FAILED_BATCH`] as well).
    pub fn new(max_batch: usize, batch_size: Histogram, fallbacks: IntCounter) -> Self {
        Self {
            max_batch: max_batch.max(1),
            batch_size,
            fallbacks,
        }
    }

    /// Whether `signature` over `message` holds under `key`, with `verify_strict`'s answer.
    pub async fn verify(&self, key: VerifyingKey, message: Vec<u8>, signature: Signature) -> bool {
        if self.max_batch == 1 || take_single() {
            self.batch_size.observe(1.0);
            return key.verify_strict(&message, &signature).is_ok();
        }
        let (answer, answered) = oneshot::channel();
        // Holding the thread's queue (an `Rc`) makes this future impossible to move to
        // another thread, where it would lead or join a different queue.
        let queue = QUEUE.with(Rc::clone);
        let leads = {
            let mut jobs = queue.borrow_mut();
            jobs.push(Job {
                key,
                message,
                signature,
                answer,
            });
            jobs.len() == 1
        };
        if leads {
            // The guard checks the queue when dropped, so the requests waiting in it are
            // answered even if this request is cancelled (its client went away) mid-yield.
            let lead = Lead {
                verifier: self,
                queue: &queue,
            };
            self.gather(&queue).await;
            drop(lead);
        }
        // A dropped sender means the job was lost, which `Lead` does not allow: fail closed.
        answered.await.unwrap_or(false)
    }

    /// Lets the worker run every other request it has ready, so that they queue behind this
    /// one. The first yield can come back before tasks woken by the same poll of the sockets
    /// have run, so the leader yields at least twice, then again for as long as each round
    /// brings new signatures, up to a batch or [`MAX_GATHER_ROUNDS`], so that a steady
    /// trickle cannot hold the leader back for long.
    async fn gather(&self, queue: &Queue) {
        let queued = || queue.borrow().len();
        tokio::task::yield_now().await;
        let mut seen = queued();
        for _ in 0..MAX_GATHER_ROUNDS {
            tokio::task::yield_now().await;
            let now = queued();
            if now == seen || now >= self.max_batch {
                return;
            }
            seen = now;
        }
    }

    /// Checks everything queued on this worker, in batches of at most `max_batch`.
    fn run_queue(&self, queue: &Queue) {
        let jobs = std::mem::take(&mut *queue.borrow_mut());
        let mut jobs = jobs.into_iter().peekable();
        while jobs.peek().is_some() {
            let batch: Vec<Job> = jobs.by_ref().take(self.max_batch).collect();
            self.batch_size.observe(batch.len() as f64);
            let candidates: Vec<Candidate<'_>> = batch
                .iter()
                .map(|job| Candidate {
                    key: &job.key,
                    message: &job.message,
                    signature: &job.signature,
                })
                .collect();
            let checked = verify_each(&candidates);
            if checked.fell_back {
                self.fallbacks.inc();
                SINGLES_LEFT.with(|left| left.set(SINGLES_AFTER_FAILED_BATCH));
            }
            for (job, valid) in batch.into_iter().zip(checked.valid) {
                // The request may have gone away; its answer is then of no use to anyone.
                let _ = job.answer.send(valid);
            }
        }
    }
}

/// Held by the request that leads a batch; checks the queue when dropped.
struct Lead<'a> {
    verifier: &'a SignatureVerifier,
    queue: &'a Queue,
}

impl Drop for Lead<'_> {
    fn drop(&mut self) {
        self.verifier.run_queue(self.queue);
    }
}

#[cfg(test)]
mod tests {
    use ed25519_dalek::{Signer, SigningKey};
    use prometheus::HistogramOpts;

    use super::*;

    fn verifier(max_batch: usize) -> SignatureVerifier {
        let histogram = Histogram::with_opts(
            HistogramOpts::new("t", "t").buckets(vec![1.0, 2.0, 4.0, 8.0, 16.0, 64.0]),
        )
        .unwrap();
        SignatureVerifier::new(max_batch, histogram, IntCounter::new("f", "f").unwrap())
    }

    fn job(seed: u8, valid: bool) -> (VerifyingKey, Vec<u8>, Signature) {
        let key = SigningKey::from_bytes(&[seed; 32]);
        let message = format!("request {seed}").into_bytes();
        let signature = key.sign(&message);
        let message = if valid { message } else { b"forged".to_vec() };
        (key.verifying_key(), message, signature)
    }

    /// Runs `n` verifications concurrently on one single-threaded runtime, as a worker would.
    fn run_concurrently(v: &SignatureVerifier, valid: &[bool]) -> Vec<bool> {
        let rt = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        let local = tokio::task::LocalSet::new();
        local.block_on(&rt, async {
            let handles: Vec<_> = valid
                .iter()
                .enumerate()
                .map(|(i, ok)| {
                    let (k, m, s) = job(i as u8 + 1, *ok);
                    let v = v.clone();
                    tokio::task::spawn_local(async move { v.verify(k, m, s).await })
                })
                .collect();
            let mut answers = Vec::new();
            for h in handles {
                answers.push(h.await.unwrap());
            }
            answers
        })
    }

    #[test]
    fn concurrent_requests_share_a_batch_and_keep_their_own_answers() {
        let v = verifier(64);
        let valid = [true, false, true, true, false, true, true, true];
        assert_eq!(run_concurrently(&v, &valid), valid);
        let h = v.batch_size.clone();
        assert_eq!(h.get_sample_count(), 1, "all eight went in one batch");
        assert_eq!(h.get_sample_sum(), 8.0);
    }

    #[test]
    fn after_a_failed_batch_the_worker_checks_signatures_alone_for_a_while() {
        let v = verifier(64);
        let h = v.batch_size.clone();
        assert_eq!(
            run_concurrently(&v, &[true, false, true, true]),
            [true, false, true, true]
        );
        assert_eq!(
            (h.get_sample_count(), h.get_sample_sum()),
            (1, 4.0),
            "one batch"
        );

        // The next signatures, valid or not, are checked one by one...
        let valid: Vec<bool> = (0..SINGLES_AFTER_FAILED_BATCH)
            .map(|i| i % 5 != 3)
            .collect();
        assert_eq!(run_concurrently(&v, &valid), valid);
        let singles = SINGLES_AFTER_FAILED_BATCH as u64;
        assert_eq!(h.get_sample_count(), 1 + singles, "each alone");
        assert_eq!(h.get_sample_sum(), 4.0 + singles as f64);

        // ...and then batching resumes.
        assert_eq!(run_concurrently(&v, &[true; 6]), [true; 6]);
        assert_eq!(h.get_sample_count(), 2 + singles, "one batch again");
        assert_eq!(h.get_sample_sum(), 10.0 + singles as f64);
    }

    #[test]
    fn batches_are_capped() {
        let v = verifier(3);
        let valid = [true; 7];
        assert_eq!(run_concurrently(&v, &valid), valid);
        assert_eq!(v.batch_size.get_sample_count(), 3, "3 + 3 + 1");
    }

    #[test]
    fn a_lone_request_is_answered_without_company() {
        let v = verifier(64);
        assert_eq!(run_concurrently(&v, &[true]), [true]);
        assert_eq!(run_concurrently(&v, &[false]), [false]);
        assert_eq!(v.batch_size.get_sample_sum(), 2.0);
    }

    #[test]
    fn with_batching_off_each_is_checked_alone() {
        let v = verifier(1);
        let valid = [true, false, true];
        assert_eq!(run_concurrently(&v, &valid), valid);
        assert_eq!(v.batch_size.get_sample_count(), 3);
    }

    #[test]
    fn a_cancelled_leader_still_answers_the_requests_behind_it() {
        use std::future::Future;
        use std::task::{Context, Poll};

        let v = verifier(64);
        let mut cx = Context::from_waker(futures_util::task::noop_waker_ref());
        let (k, m, s) = job(1, true);
        let mut leader = Box::pin(v.verify(k, m, s));
        assert!(
            leader.as_mut().poll(&mut cx).is_pending(),
            "queued, yielding"
        );
        let (k, m, s) = job(2, true);
        let mut follower = Box::pin(v.verify(k, m, s));
        assert!(follower.as_mut().poll(&mut cx).is_pending(), "waiting");
        drop(leader);
        assert_eq!(follower.as_mut().poll(&mut cx), Poll::Ready(true));
        assert_eq!(v.batch_size.get_sample_sum(), 2.0, "both in the batch");
    }
}
