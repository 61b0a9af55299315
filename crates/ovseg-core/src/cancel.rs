//! Cancellation of a core call that is already running (an AbortSignal fired in JavaScript, or a
//! server client gone).
//!
//! A call runs inside [`Cancel::scope`]; its stages call [`check`] between them, and every ONNX
//! Runtime run started in the scope is registered so that [`Cancel::cancel`] stops it mid-graph
//! (ONNX Runtime's terminate flag). Outside a scope nothing is ever cancelled.

use std::cell::RefCell;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, Weak};

use ort::session::RunOptions;

use crate::error::{Error, ErrorCode, Result};

/// A token shared between the thread running a call and the one that may cancel it.
#[derive(Clone, Default)]
pub struct Cancel(Arc<Inner>);

#[derive(Default)]
struct Inner {
    cancelled: AtomicBool,
    /// ONNX Runtime runs in flight in this call's scope.
    runs: Mutex<Vec<Weak<RunOptions>>>,
}

thread_local! {
    static CURRENT: RefCell<Option<Cancel>> = const { RefCell::new(None) };
}

impl Cancel {
    pub fn new() -> Self {
        Self::default()
    }

    /// Marks the call cancelled and terminates its ONNX Runtime runs in flight. Any thread; idempotent.
    pub fn cancel(&self) {
        self.0.cancelled.store(true, Ordering::SeqCst);
        let runs = crate::lock(&self.0.runs);
        for run in runs.iter().filter_map(Weak::upgrade) {
            // Fails only for a null handle, which a live RunOptions never has.
            let _ = run.terminate();
        }
    }

    pub fn is_cancelled(&self) -> bool {
        self.0.cancelled.load(Ordering::SeqCst)
    }

    /// Runs `f` with this token as the current thread's cancellation scope.
    pub fn scope<T>(&self, f: impl FnOnce() -> T) -> T {
        with_current(Some(self.clone()), f)
    }

    /// Options for one ONNX Runtime run, registered so that `cancel` can terminate it; already
    /// terminated when the call was cancelled before the run started.
    fn register_run(&self) -> Result<Arc<RunOptions>> {
        let options = Arc::new(RunOptions::new()?);
        let mut runs = crate::lock(&self.0.runs);
        runs.retain(|r| r.strong_count() > 0);
        runs.push(Arc::downgrade(&options));
        // Checked under the lock `cancel` takes: a cancel either sees this run or is seen here.
        if self.is_cancelled() {
            let _ = options.terminate();
        }
        Ok(options)
    }
}

/// The current thread's cancellation token (`None` outside a scope).
pub(crate) fn current() -> Option<Cancel> {
    CURRENT.with(|c| c.borrow().clone())
}

/// Runs `f` outside any cancellation scope: work shared by several calls (a batch of their crops)
/// must not stop when one of them is aborted.
pub(crate) fn detached<T>(f: impl FnOnce() -> T) -> T {
    with_current(None, f)
}

/// Runs `f` with `token` as the current scope, restoring the outer one after (a panic included).
fn with_current<T>(token: Option<Cancel>, f: impl FnOnce() -> T) -> T {
    struct Restore(Option<Cancel>);
    impl Drop for Restore {
        fn drop(&mut self) {
            CURRENT.with(|c| *c.borrow_mut() = self.0.take());
        }
    }
    let _restore = Restore(CURRENT.with(|c| std::mem::replace(&mut *c.borrow_mut(), token)));
    f()
}

pub(crate) fn aborted() -> Error {
    Error::new(ErrorCode::Aborted, "the call was aborted")
}

/// `ABORTED` when the current scope's call was cancelled; between stages.
pub fn check() -> Result<()> {
    if current().is_some_and(|c| c.is_cancelled()) {
        return Err(aborted());
    }
    Ok(())
}

/// Whether the current scope's call was cancelled, for loops on other threads (rayon's workers
/// do not see the calling thread's scope).
pub(crate) fn stopped() -> impl Fn() -> bool + Sync {
    let token = current();
    move || token.as_ref().is_some_and(Cancel::is_cancelled)
}

/// Run options for an ONNX Runtime run in the current scope (`None` outside one).
pub(crate) fn run_options() -> Result<Option<Arc<RunOptions>>> {
    current().map(|c| c.register_run()).transpose()
}

/// A failed run in a cancelled scope was terminated: report it as `ABORTED`.
pub(crate) fn map_run_error(error: Error) -> Error {
    if current().is_some_and(|c| c.is_cancelled()) {
        aborted()
    } else {
        error
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn check_sees_only_the_current_scope() {
        let token = Cancel::new();
        assert!(check().is_ok());
        token.scope(|| assert!(check().is_ok()));
        token.cancel();
        token.cancel();
        assert!(check().is_ok(), "no scope: never cancelled");
        let err = token.scope(check).unwrap_err();
        assert_eq!(err.code, ErrorCode::Aborted);
        // Nested scopes restore the outer one.
        Cancel::new().scope(|| {
            assert!(check().is_ok());
            token.scope(|| assert!(check().is_err()));
            assert!(check().is_ok());
        });
    }

    #[test]
    fn the_scope_is_restored_after_a_panic() {
        let token = Cancel::new();
        token.cancel();
        let caught = std::panic::catch_unwind(|| token.scope(|| panic!("inside")));
        assert!(caught.is_err());
        assert!(check().is_ok());
    }

    #[test]
    fn detached_work_is_outside_every_scope() {
        let token = Cancel::new();
        token.cancel();
        token.scope(|| {
            assert!(detached(check).is_ok());
            assert!(check().is_err(), "the scope is back after");
        });
    }
}
