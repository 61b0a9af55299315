//! Cross-request batching of the image encoder. Concurrent `segment()` calls on one model queue
//! their crops; a waiting call that finds no batch running leads the next one: it waits up to
//! `max_wait` for the crops of calls still on their way to the encoder, takes up to `max_crops`
//! rows from the front of the queue (splitting a call's crops where the batch is full), runs them
//! in one session run and hands every call its rows. There is no thread of its own: the callers
//! take turns, so an idle model costs nothing.
//!
//! A call aborted while its crops wait leaves the queue; one aborted while they run gets nothing
//! back. A batch of one call's crops runs in that call's cancellation scope (its abort stops the
//! run); a batch shared by several calls runs to its end. A failed shared batch is re-run one call
//! at a time, so an error reaches only the call it belongs to.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use crate::cancel::{self, Cancel};
use crate::error::{bail, catch_panic, Result};

/// Crops per session run when cross-request batching is on (one call's crops beyond it are split).
pub const DEFAULT_MAX_CROPS: usize = 128;
/// How long a batch waits for the crops of calls that have not reached the encoder yet.
pub const DEFAULT_MAX_WAIT_MS: f64 = 2.0;
/// Whether a model on the CPU batches by default: no (an encoder's cost per crop hardly depends on
/// the batch there, docs/benchmarks.md "Cross-request batching"), a GPU one does.
pub const DEFAULT_ON_CPU: bool = false;
/// The largest `max_crops` a model accepts.
pub const MAX_CROPS_LIMIT: usize = 4096;
/// The longest `max_wait` a model accepts.
pub const MAX_WAIT_LIMIT_MS: f64 = 1000.0;

/// How often a waiting call looks at its cancellation token (an abort cannot wake a condvar).
const POLL: Duration = Duration::from_millis(5);

#[derive(Debug, Clone, Copy, PartialEq)]
pub struct BatchOptions {
    pub max_crops: usize,
    pub max_wait: Duration,
    /// Batch on the CPU provider too (otherwise only when the image encoder runs on CUDA).
    pub on_cpu: bool,
}

impl Default for BatchOptions {
    fn default() -> Self {
        Self {
            max_crops: DEFAULT_MAX_CROPS,
            max_wait: Duration::from_secs_f64(DEFAULT_MAX_WAIT_MS / 1e3),
            on_cpu: DEFAULT_ON_CPU,
        }
    }
}

impl BatchOptions {
    /// Options from a JS-side `maxCrops` / `maxWaitMs` / `onCpu`, checked.
    pub fn new(max_crops: usize, max_wait_ms: f64, on_cpu: bool) -> Result<Self> {
        if !(1..=MAX_CROPS_LIMIT).contains(&max_crops) {
            bail!(
                InvalidArgument,
                "Expected an integer in 1..={MAX_CROPS_LIMIT} for `maxCrops` but received {max_crops}"
            );
        }
        if !(0.0..=MAX_WAIT_LIMIT_MS).contains(&max_wait_ms) {
            bail!(
                InvalidArgument,
                "Expected a number of milliseconds in [0, {MAX_WAIT_LIMIT_MS}] for `maxWaitMs` but received {max_wait_ms}"
            );
        }
        Ok(Self {
            max_crops,
            max_wait: Duration::from_secs_f64(max_wait_ms / 1e3),
            on_cpu,
        })
    }
}

/// One call's encoder inputs: `rows` crops, `pixel_row` and `keep_row` values each.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Rows {
    pub pixels: Vec<f32>,
    pub keep: Vec<f32>,
}

/// What a session run of `rows` crops gives: `[rows, dim]` features and its time in the session.
pub struct RunRows {
    pub features: Vec<f32>,
    pub session_ms: f64,
}

/// One session run: `(pixels, keep, crops)` to their features.
pub type RunFn<'a> = dyn Fn(&[f32], &[f32], usize) -> Result<RunRows> + Sync + 'a;

/// A call's features, its inputs handed back, and the session time of the runs it took part in.
pub struct Batched {
    pub features: Vec<f32>,
    pub rows: Rows,
    pub session_ms: f64,
    /// Session runs this call's crops were part of.
    pub runs: usize,
}

struct Job {
    id: u64,
    rows: Arc<Rows>,
    count: usize,
    /// The first row no batch has taken yet.
    next: usize,
    cancel: Option<Cancel>,
}

struct Done {
    features: Vec<f32>,
    filled: usize,
    session_ms: f64,
    runs: usize,
    error: Option<crate::Error>,
}

#[derive(Default)]
struct State {
    queue: VecDeque<Job>,
    results: HashMap<u64, Done>,
    running: bool,
    next_id: u64,
    /// Calls that hold a ticket: started, and not at the encoder yet.
    approaching: usize,
    /// Session runs, for tests and statistics.
    batches: u64,
}

/// A part of a batch: rows `from..to` of job `id`.
struct Part {
    id: u64,
    rows: Arc<Rows>,
    from: usize,
    to: usize,
    cancel: Option<Cancel>,
}

pub struct Batcher {
    options: BatchOptions,
    /// Values per crop of the pixels, the keep mask and the features.
    pixel_row: usize,
    keep_row: usize,
    dim: usize,
    state: Mutex<State>,
    wake: Condvar,
}

/// Says that a call is on its way to the encoder (a batch waits for it, up to `max_wait`).
pub struct Ticket<'a>(&'a Batcher);

impl Drop for Ticket<'_> {
    fn drop(&mut self) {
        let mut state = crate::lock(&self.0.state);
        state.approaching -= 1;
        drop(state);
        self.0.wake.notify_all();
    }
}

impl Batcher {
    pub fn new(options: BatchOptions, pixel_row: usize, keep_row: usize, dim: usize) -> Self {
        Self {
            options,
            pixel_row,
            keep_row,
            dim,
            state: Mutex::default(),
            wake: Condvar::new(),
        }
    }

    pub fn options(&self) -> BatchOptions {
        self.options
    }

    /// Session runs made so far.
    pub fn batches(&self) -> u64 {
        crate::lock(&self.state).batches
    }

    /// Taken when a call starts, so that batches wait for its crops.
    pub fn ticket(&self) -> Ticket<'_> {
        crate::lock(&self.state).approaching += 1;
        Ticket(self)
    }

    /// Encodes `count` crops of this call with those of other calls; `run` does one session run.
    pub fn encode(&self, ticket: Ticket, rows: Rows, count: usize, run: &RunFn) -> Result<Batched> {
        if rows.pixels.len() != count * self.pixel_row || rows.keep.len() != count * self.keep_row {
            bail!(
                Internal,
                "a batch job of {count} crops has {} pixel and {} keep values",
                rows.pixels.len(),
                rows.keep.len()
            );
        }
        drop(ticket);
        if count == 0 {
            return Ok(Batched {
                features: Vec::new(),
                rows,
                session_ms: 0.0,
                runs: 0,
            });
        }
        let token = cancel::current();
        let rows = Arc::new(rows);
        let mut state = crate::lock(&self.state);
        let id = state.next_id;
        state.next_id += 1;
        state.queue.push_back(Job {
            id,
            rows: Arc::clone(&rows),
            count,
            next: 0,
            cancel: token.clone(),
        });
        state.results.insert(
            id,
            Done {
                features: vec![0.0; count * self.dim],
                filled: 0,
                session_ms: 0.0,
                runs: 0,
                error: None,
            },
        );
        self.wake.notify_all();
        loop {
            let done = &state.results[&id];
            if done.error.is_some() || done.filled == count {
                let done = state.results.remove(&id).expect("looked up above");
                if let Some(error) = done.error {
                    // Rows of this call still queued are not worth running.
                    state.queue.retain(|job| job.id != id);
                    return Err(error);
                }
                drop(state);
                // Every other holder (queue entry, batch part) is gone once all rows are filled.
                let rows = Arc::try_unwrap(rows).unwrap_or_else(|shared| (*shared).clone());
                return Ok(Batched {
                    features: done.features,
                    rows,
                    session_ms: done.session_ms,
                    runs: done.runs,
                });
            }
            if token.as_ref().is_some_and(Cancel::is_cancelled) {
                state.queue.retain(|job| job.id != id);
                state.results.remove(&id);
                return Err(cancel::aborted());
            }
            if !state.running && state.queue.iter().any(|job| job.id == id) {
                state = self.lead(state, run);
                continue;
            }
            state = self
                .wake
                .wait_timeout(state, POLL)
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .0;
        }
    }

    /// Runs the next batch and files its rows; `state` is unlocked during the run.
    fn lead<'a>(&'a self, mut state: MutexGuard<'a, State>, run: &RunFn) -> MutexGuard<'a, State> {
        state.running = true;
        let start = Instant::now();
        loop {
            let queued: usize = state.queue.iter().map(|j| j.count - j.next).sum();
            let left = self.options.max_wait.saturating_sub(start.elapsed());
            if queued >= self.options.max_crops || state.approaching == 0 || left.is_zero() {
                break;
            }
            state = self
                .wake
                .wait_timeout(state, left)
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .0;
        }
        // Aborted calls' crops are not run (their callers clear their own results).
        state
            .queue
            .retain(|job| !job.cancel.as_ref().is_some_and(Cancel::is_cancelled));
        let mut parts = Vec::new();
        let mut room = self.options.max_crops;
        while room > 0 {
            let Some(job) = state.queue.front_mut() else {
                break;
            };
            let take = room.min(job.count - job.next);
            parts.push(Part {
                id: job.id,
                rows: Arc::clone(&job.rows),
                from: job.next,
                to: job.next + take,
                cancel: job.cancel.clone(),
            });
            job.next += take;
            room -= take;
            if job.next == job.count {
                state.queue.pop_front();
            }
        }
        if !parts.is_empty() {
            state.batches += 1;
        }
        drop(state);

        let outcomes = self.run_parts(&parts, run);
        let filed: Vec<(u64, usize, usize)> = parts.iter().map(|p| (p.id, p.from, p.to)).collect();
        // The rows go back to their callers whole: no batch may hold them once results are filed.
        drop(parts);
        let mut state = crate::lock(&self.state);
        for ((id, from, to), outcome) in filed.into_iter().zip(outcomes) {
            // An aborted caller removed its entry: its rows are dropped.
            let Some(done) = state.results.get_mut(&id) else {
                continue;
            };
            match outcome {
                Ok((features, session_ms)) => {
                    done.features[from * self.dim..to * self.dim].copy_from_slice(&features);
                    done.filled += to - from;
                    done.session_ms += session_ms;
                    done.runs += 1;
                }
                Err(error) => done.error = Some(error),
            }
        }
        state.running = false;
        self.wake.notify_all();
        state
    }

    /// A part's pixels and keep values.
    fn slice<'p>(&self, p: &'p Part) -> (&'p [f32], &'p [f32]) {
        (
            &p.rows.pixels[p.from * self.pixel_row..p.to * self.pixel_row],
            &p.rows.keep[p.from * self.keep_row..p.to * self.keep_row],
        )
    }

    /// Each part's features (`[to - from, dim]`) and the session time, or the error of its run.
    fn run_parts(&self, parts: &[Part], run: &RunFn) -> Vec<Result<(Vec<f32>, f64)>> {
        let run_one = |pixels: &[f32], keep: &[f32], count: usize, scope: Option<&Cancel>| {
            let go = || catch_panic(|| run(pixels, keep, count));
            let out = match scope {
                Some(token) => token.scope(go),
                None => cancel::detached(go),
            }?;
            if out.features.len() != count * self.dim {
                bail!(
                    Internal,
                    "the image encoder gave {} values for {count} crops",
                    out.features.len()
                );
            }
            Ok(out)
        };
        match parts {
            [] => Vec::new(),
            [p] => {
                let (pixels, keep) = self.slice(p);
                vec![run_one(pixels, keep, p.to - p.from, p.cancel.as_ref())
                    .map(|out| (out.features, out.session_ms))]
            }
            _ => {
                let count: usize = parts.iter().map(|p| p.to - p.from).sum();
                let mut pixels = Vec::with_capacity(count * self.pixel_row);
                let mut keep = Vec::with_capacity(count * self.keep_row);
                for p in parts {
                    let (px, k) = self.slice(p);
                    pixels.extend_from_slice(px);
                    keep.extend_from_slice(k);
                }
                let shared_scope = parts
                    .iter()
                    .all(|p| p.id == parts[0].id)
                    .then(|| parts[0].cancel.as_ref())
                    .flatten();
                match run_one(&pixels, &keep, count, shared_scope) {
                    Ok(out) => {
                        let mut at = 0;
                        parts
                            .iter()
                            .map(|p| {
                                let n = (p.to - p.from) * self.dim;
                                at += n;
                                Ok((out.features[at - n..at].to_vec(), out.session_ms))
                            })
                            .collect()
                    }
                    // Which call's crops failed: each on its own.
                    Err(_) => parts
                        .iter()
                        .map(|p| {
                            let (pixels, keep) = self.slice(p);
                            run_one(pixels, keep, p.to - p.from, p.cancel.as_ref())
                                .map(|out| (out.features, out.session_ms))
                        })
                        .collect(),
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::ErrorCode;
    use std::sync::atomic::{AtomicUsize, Ordering};

    /// A fake encoder: 2 pixel values and 1 keep value per crop, feature = [sum, keep, batch size].
    fn fake(runs: &AtomicUsize) -> impl Fn(&[f32], &[f32], usize) -> Result<RunRows> + Sync + '_ {
        move |pixels, keep, count| {
            runs.fetch_add(1, Ordering::SeqCst);
            if pixels.iter().any(|v| v.is_nan()) {
                bail!(InferenceFailed, "NaN in the batch");
            }
            std::thread::sleep(Duration::from_millis(20));
            let features = (0..count)
                .flat_map(|i| [pixels[2 * i] + pixels[2 * i + 1], keep[i], count as f32])
                .collect();
            Ok(RunRows {
                features,
                session_ms: 1.0,
            })
        }
    }

    fn job(call: usize, count: usize) -> Rows {
        Rows {
            pixels: (0..count)
                .flat_map(|i| [call as f32 * 1000.0, i as f32])
                .collect(),
            keep: (0..count).map(|i| (call * 10 + i) as f32).collect(),
        }
    }

    fn expected(call: usize, count: usize) -> Vec<[f32; 2]> {
        (0..count)
            .map(|i| [call as f32 * 1000.0 + i as f32, (call * 10 + i) as f32])
            .collect()
    }

    /// The `[value, keep]` pairs of a call's fake features (the third column is the run's size).
    fn pairs(features: &[f32]) -> Vec<[f32; 2]> {
        features.chunks(3).map(|f| [f[0], f[1]]).collect()
    }

    /// `call(i, ticket)` for `calls` calls on their own threads; every ticket is taken before any
    /// thread starts, as concurrent `segment()` calls take theirs before reaching the encoder.
    fn concurrently<R: Send>(
        batcher: &Batcher,
        calls: usize,
        call: impl Fn(usize, Ticket) -> R + Sync,
    ) -> Vec<R> {
        let tickets: Vec<_> = (0..calls).map(|_| batcher.ticket()).collect();
        std::thread::scope(|s| {
            let handles: Vec<_> = tickets
                .into_iter()
                .enumerate()
                .map(|(i, ticket)| {
                    let call = &call;
                    s.spawn(move || call(i, ticket))
                })
                .collect();
            handles.into_iter().map(|h| h.join().unwrap()).collect()
        })
    }

    fn options(max_crops: usize, wait_ms: u64) -> BatchOptions {
        BatchOptions {
            max_crops,
            max_wait: Duration::from_millis(wait_ms),
            on_cpu: true,
        }
    }

    #[test]
    fn concurrent_calls_share_runs_and_get_their_own_rows_back() {
        let runs = AtomicUsize::new(0);
        let run = fake(&runs);
        // Tickets make the wait deterministic: a batch waits until it is full or every call is in.
        let batcher = Batcher::new(options(8, 60_000), 2, 1, 3);
        let calls = [3usize, 5, 2, 7];
        let results = concurrently(&batcher, calls.len(), |call, ticket| {
            let rows = job(call, calls[call]);
            let out = batcher
                .encode(ticket, rows.clone(), calls[call], &run)
                .unwrap();
            assert_eq!(out.rows, rows, "the inputs come back whole");
            out
        });
        for (call, (out, &count)) in results.iter().zip(&calls).enumerate() {
            assert_eq!(pairs(&out.features), expected(call, count), "call {call}");
            assert!(
                out.features.chunks(3).all(|f| f[2] <= 8.0),
                "max_crops holds"
            );
        }
        // 17 crops at 8 per run: 3 runs, where one run per call would have made 4.
        assert_eq!(runs.load(Ordering::SeqCst), 3);
        assert_eq!(batcher.batches(), 3);
    }

    #[test]
    fn a_lone_call_does_not_wait_and_a_long_one_is_split() {
        let runs = AtomicUsize::new(0);
        let run = fake(&runs);
        let batcher = Batcher::new(options(4, 10_000), 2, 1, 3);
        let start = Instant::now();
        let out = batcher
            .encode(batcher.ticket(), job(1, 10), 10, &run)
            .unwrap();
        assert!(
            start.elapsed() < Duration::from_secs(5),
            "no other call: no wait"
        );
        assert_eq!((out.runs, runs.load(Ordering::SeqCst)), (3, 3));
        assert_eq!(pairs(&out.features), expected(1, 10));
    }

    #[test]
    fn an_aborted_call_leaves_and_the_others_finish() {
        let runs = AtomicUsize::new(0);
        let run = fake(&runs);
        let batcher = Batcher::new(options(64, 300), 2, 1, 3);
        let aborted = Cancel::new();
        aborted.cancel();
        let results = concurrently(&batcher, 3, |call, ticket| {
            let go = || batcher.encode(ticket, job(call, 4), 4, &run);
            if call == 1 {
                aborted.scope(go)
            } else {
                Cancel::new().scope(go)
            }
        });
        assert_eq!(
            results[1].as_ref().err().map(|e| e.code),
            Some(ErrorCode::Aborted)
        );
        for call in [0, 2] {
            let out = results[call].as_ref().unwrap();
            assert_eq!(pairs(&out.features), expected(call, 4));
        }
    }

    #[test]
    fn a_failing_call_does_not_fail_the_batch_it_shared() {
        let runs = AtomicUsize::new(0);
        let run = fake(&runs);
        let batcher = Batcher::new(options(64, 300), 2, 1, 3);
        let results = concurrently(&batcher, 3, |call, ticket| {
            let mut rows = job(call, 2);
            if call == 2 {
                rows.pixels[1] = f32::NAN;
            }
            batcher.encode(ticket, rows, 2, &run)
        });
        assert_eq!(
            results[2].as_ref().err().map(|e| e.code),
            Some(ErrorCode::InferenceFailed)
        );
        for call in [0, 1] {
            let out = results[call].as_ref().unwrap();
            assert_eq!(pairs(&out.features), expected(call, 2));
        }
    }

    #[test]
    fn options_are_checked() {
        assert!(BatchOptions::new(0, 1.0, true).is_err());
        assert!(BatchOptions::new(MAX_CROPS_LIMIT + 1, 1.0, true).is_err());
        assert!(BatchOptions::new(8, -1.0, true).is_err());
        assert!(BatchOptions::new(8, f64::NAN, true).is_err());
        assert!(BatchOptions::new(8, 1001.0, true).is_err());
        assert_eq!(
            BatchOptions::new(8, 0.0, false).unwrap().max_wait,
            Duration::ZERO
        );
    }
}
