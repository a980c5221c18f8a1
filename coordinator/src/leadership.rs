//! Whether this coordinator may act now, and under which term.
//!
//! Every grant, registration answer and call to a sidecar asks [`Leadership::current`]
//! first: it answers the term's epoch only while the term can still be shown to hold. On
//! Kubernetes the leader election ([`crate::k8s::leader`]) begins a term when it takes the
//! Lease and extends it on every renewal, each time only up to a deadline that ends well
//! before any other replica may take the Lease; the term then ends on its own when renewals
//! stop succeeding, even if the election loop is stuck in a request. In local mode there is
//! one coordinator per state directory and its term never ends.
//!
//! The epoch goes with every grant and sidecar call; sidecars keep the newest they have seen
//! and refuse older ones, so a deposed coordinator's late call changes nothing.

use std::sync::Arc;

use tokio::{sync::watch, time::Instant};

/// A term of leadership.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Term {
    /// Grows with every new term (on Kubernetes: the Lease's acquire time in microseconds,
    /// made larger than the previous holder's).
    pub epoch: u64,
    /// When the term stops being shown to hold; `None` for a term that never ends.
    pub until: Option<Instant>,
}

impl Term {
    /// True while the term holds at `now`.
    pub fn holds_at(&self, now: Instant) -> bool {
        self.until.is_none_or(|until| now < until)
    }
}

/// The current term, shared by the election (which writes it) and everything that acts.
#[derive(Clone, Debug)]
pub struct Leadership {
    term: Arc<watch::Sender<Option<Term>>>,
}

impl Leadership {
    /// A term that never ends (local mode, or Kubernetes without election).
    pub fn always(epoch: u64) -> Self {
        let (term, _) = watch::channel(Some(Term { epoch, until: None }));
        Self {
            term: Arc::new(term),
        }
    }

    /// No term yet: nothing may act until the election begins one.
    pub fn none() -> Self {
        let (term, _) = watch::channel(None);
        Self {
            term: Arc::new(term),
        }
    }

    /// The epoch of the term that holds now, if one does.
    pub fn current(&self) -> Option<u64> {
        let now = Instant::now();
        self.term
            .borrow()
            .filter(|t| t.holds_at(now))
            .map(|t| t.epoch)
    }

    /// The term as last set (it may have run out since).
    pub fn term(&self) -> Option<Term> {
        *self.term.borrow()
    }

    /// Begins a term (or extends it, for the same epoch).
    pub fn hold(&self, epoch: u64, until: Instant) {
        self.term.send_if_modified(|t| {
            let next = Some(Term {
                epoch,
                until: Some(until),
            });
            let begins = t.is_none_or(|t| t.epoch != epoch);
            *t = next;
            begins
        });
    }

    /// Ends the term.
    pub fn end(&self) {
        self.term.send_if_modified(|t| t.take().is_some());
    }

    /// Resolves with the epoch once a term holds.
    pub async fn acquired(&self) -> u64 {
        let mut rx = self.term.subscribe();
        loop {
            if let Some(epoch) = self.current() {
                return epoch;
            }
            if rx.changed().await.is_err() {
                std::future::pending::<()>().await;
            }
        }
    }

    /// Resolves once no term holds: ended, or run out at its deadline.
    pub async fn lost(&self) {
        let mut rx = self.term.subscribe();
        loop {
            let Some(term) = self.term().filter(|t| t.holds_at(Instant::now())) else {
                return;
            };
            match term.until {
                Some(until) => {
                    tokio::select! {
                        _ = tokio::time::sleep_until(until) => {}
                        _ = rx.changed() => {}
                    }
                }
                None => {
                    if rx.changed().await.is_err() {
                        std::future::pending::<()>().await;
                    }
                }
            }
        }
    }

    /// Watches the beginning and end of terms (extensions are not announced).
    pub fn subscribe(&self) -> watch::Receiver<Option<Term>> {
        self.term.subscribe()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[tokio::test(start_paused = true)]
    async fn a_term_holds_until_its_deadline_and_not_after() {
        let l = Leadership::none();
        assert_eq!(l.current(), None);
        let now = Instant::now();
        l.hold(7, now + Duration::from_secs(10));
        assert_eq!(l.current(), Some(7));
        tokio::time::advance(Duration::from_secs(9)).await;
        assert_eq!(l.current(), Some(7));
        // Extended: holds again for as long.
        l.hold(7, Instant::now() + Duration::from_secs(10));
        tokio::time::advance(Duration::from_secs(9)).await;
        assert_eq!(l.current(), Some(7));
        // Not renewed: runs out on its own, with nobody calling end().
        tokio::time::advance(Duration::from_secs(2)).await;
        assert_eq!(l.current(), None);
        assert!(l.term().is_some(), "ran out, was not ended");
        l.end();
        assert_eq!(l.term(), None);
        assert_eq!(Leadership::always(3).current(), Some(3));
    }

    #[tokio::test(start_paused = true)]
    async fn only_beginnings_and_ends_are_announced() {
        let l = Leadership::none();
        let mut rx = l.subscribe();
        l.hold(1, Instant::now() + Duration::from_secs(5));
        assert!(rx.has_changed().unwrap());
        rx.mark_unchanged();
        l.hold(1, Instant::now() + Duration::from_secs(9));
        assert!(!rx.has_changed().unwrap(), "an extension is not a new term");
        l.hold(2, Instant::now() + Duration::from_secs(9));
        assert!(rx.has_changed().unwrap());
        rx.mark_unchanged();
        l.end();
        assert!(rx.has_changed().unwrap());
    }

    #[tokio::test(start_paused = true)]
    async fn lost_resolves_at_the_deadline_without_an_end() {
        let l = Leadership::none();
        let waiting = tokio::spawn({
            let l = l.clone();
            async move { l.acquired().await }
        });
        tokio::task::yield_now().await;
        assert!(!waiting.is_finished());
        let begun = Instant::now();
        l.hold(9, begun + Duration::from_secs(10));
        assert_eq!(waiting.await.unwrap(), 9);
        l.lost().await;
        assert_eq!(Instant::now(), begun + Duration::from_secs(10));
    }
}
