//! Client-side pacing of writes under NRP's per-subscription limit (domain.md 4.8:
//! Microsoft.Network accepts 1,000 PUTs and DELETEs per subscription per 5 minutes).
//!
//! Why pace at all, when ARM answers 429 with `Retry-After` and the client waits? Because
//! of *which* writes the window is spent on. An apply's NSG and route-table writes are all
//! ready at once, while each VNet's subnet writes form a chain of writes ARM runs one
//! after the other (domain.md 4.4). Unpaced, the ready writes take the whole window in the
//! first minutes and every chain then stalls until the window frees, once per window: at
//! 5,000 ASEs the chains, not the limit, set the end (docs/benchmarks.md, sixth session).
//!
//! The rule here: a write that another write is waiting to follow (a subnet whose NSG and
//! route table are being written) holds a *reservation*, a slot of the window kept for it.
//! Other writes are admitted, first come first served, only while the window has room for
//! them and for every reservation, including the ones they create. So the chains always
//! find a slot, and the rest fills what they leave.
//!
//! The window counts this process's writes only (other writers in the subscription are
//! not seen; their traffic still gets ARM's 429 and the retry policy). A write's slot is
//! held from its admission until `period` after it ended: the client cannot see when ARM
//! accepted the PUT (its retries of ARM's own 429s happen inside the ARM client), but it
//! was before the write ended, so NRP's window has let go of it by then.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use tokio::time::Instant;

/// NRP's writes (PUTs and DELETEs) per subscription per window (domain.md 4.8).
pub const NRP_WRITES: usize = 1_000;
/// NRP's window (domain.md 4.8: per 5 minutes).
pub const NRP_WINDOW: Duration = Duration::from_secs(300);

/// The write windows of every subscription a process writes to. Cheap to clone (shared);
/// the pipeline holds one, so every apply of a process (the operator's concurrent
/// reconciles, the CLI's rounds) counts against the same windows.
#[derive(Clone, Default)]
pub struct WritePacer {
    inner: Option<Arc<Pacer>>,
}

impl std::fmt::Debug for WritePacer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.inner {
            Some(p) => write!(f, "WritePacer({} per {:?})", p.limit, p.period),
            None => f.write_str("WritePacer(off)"),
        }
    }
}

struct Pacer {
    limit: usize,
    period: Duration,
    subscriptions: Mutex<HashMap<String, SubscriptionWindow>>,
}

impl WritePacer {
    /// NRP's limits: 1,000 writes per subscription per 5 minutes.
    pub fn nrp() -> Self {
        Self::new(NRP_WRITES, NRP_WINDOW)
    }

    /// `limit` writes per subscription per `period` (a test's or a benchmark's scaled
    /// clock). A `limit` of 0 means no pacing.
    pub fn new(limit: usize, period: Duration) -> Self {
        if limit == 0 {
            return Self::off();
        }
        WritePacer {
            inner: Some(Arc::new(Pacer {
                limit,
                period,
                subscriptions: Mutex::default(),
            })),
        }
    }

    /// Every write admitted at once.
    pub fn off() -> Self {
        WritePacer { inner: None }
    }

    /// The window of `subscription` (case-insensitive, as ARM ids are).
    pub fn window(&self, subscription: &str) -> SubscriptionWindow {
        let Some(p) = &self.inner else {
            return SubscriptionWindow { inner: None };
        };
        p.subscriptions
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .entry(subscription.to_ascii_lowercase())
            .or_insert_with(|| SubscriptionWindow {
                inner: Some(Arc::new(Window {
                    limit: p.limit,
                    period: p.period,
                    state: Mutex::default(),
                    changed: tokio::sync::Notify::new(),
                    queue: tokio::sync::Mutex::new(()),
                })),
            })
            .clone()
    }
}

/// One subscription's window. Cheap to clone.
#[derive(Clone)]
pub struct SubscriptionWindow {
    inner: Option<Arc<Window>>,
}

struct Window {
    limit: usize,
    period: Duration,
    state: Mutex<State>,
    /// Woken when a write ends (its slot now has a time to leave) or a reservation is
    /// given back.
    changed: tokio::sync::Notify,
    /// First come, first served among the writes without a reservation.
    queue: tokio::sync::Mutex<()>,
}

#[derive(Default)]
struct State {
    /// Writes admitted and not yet ended.
    running: usize,
    /// When the slots of ended writes leave the window.
    leaving: BinaryHeap<Reverse<Instant>>,
    /// Slots kept for writes that will follow others.
    reserved: usize,
}

impl State {
    fn in_window(&mut self, now: Instant) -> usize {
        while self.leaving.peek().is_some_and(|Reverse(t)| *t <= now) {
            self.leaving.pop();
        }
        self.running + self.leaving.len()
    }
}

/// A slot kept in a window for one write; given back when dropped unused.
pub struct Reservation {
    window: Option<Arc<Window>>,
}

/// A write's slot in the window. It leaves the window `period` after ARM accepted the
/// request ([`Slot::accepted`]), or, when that was not seen, `period` after the slot is
/// dropped (the write ended, however it ended).
pub struct Slot {
    window: Option<Arc<Window>>,
    accepted: std::sync::OnceLock<Instant>,
}

impl Slot {
    fn new(window: Option<Arc<Window>>) -> Self {
        Slot {
            window,
            accepted: std::sync::OnceLock::new(),
        }
    }

    /// ARM answered the request (the first answer counts; retries inside the ARM client
    /// happen before it).
    pub fn accepted(&self) {
        let _ = self.accepted.set(Instant::now());
    }
}

impl SubscriptionWindow {
    /// Waits until one write fits the window next to every reservation, admits it, and
    /// reserves `then_reserve` more slots for the writes it lets start (their reservations
    /// are returned). First come, first served. A write is admitted into an empty window
    /// even when `then_reserve` alone exceeds the limit, so nothing waits forever.
    pub async fn admit(&self, then_reserve: usize) -> (Slot, Vec<Reservation>) {
        let Some(w) = &self.inner else {
            return (
                Slot::new(None),
                (0..then_reserve)
                    .map(|_| Reservation { window: None })
                    .collect(),
            );
        };
        let _turn = w.queue.lock().await;
        w.wait_until(|state, now, limit| {
            let taken = state.in_window(now) + state.reserved;
            let fits = taken + 1 + then_reserve <= limit || taken == 0;
            if fits {
                state.running += 1;
                state.reserved += then_reserve;
            }
            fits
        })
        .await;
        let reservations = (0..then_reserve)
            .map(|_| Reservation {
                window: Some(w.clone()),
            })
            .collect();
        (Slot::new(Some(w.clone())), reservations)
    }

    /// Reserves a slot now for a write that is ready but must wait for others first.
    pub fn reserve(&self) -> Reservation {
        if let Some(w) = &self.inner {
            w.state
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .reserved += 1;
        }
        Reservation {
            window: self.inner.clone(),
        }
    }

    /// Admits a write that holds a reservation, as soon as the window has a free slot (it
    /// does not queue behind writes without one).
    pub async fn admit_reserved(&self, mut reservation: Reservation) -> Slot {
        let window = reservation.window.take();
        let Some(w) = window else {
            return Slot::new(None);
        };
        w.wait_until(|state, now, limit| {
            let fits = state.in_window(now) < limit;
            if fits {
                state.running += 1;
                state.reserved = state.reserved.saturating_sub(1);
            }
            fits
        })
        .await;
        Slot::new(Some(w))
    }
}

impl Window {
    /// Waits until `admit` (called with the state, now and the limit) says the write got
    /// in. Wakes when a slot leaves the window or a reservation is given back.
    async fn wait_until(&self, mut admit: impl FnMut(&mut State, Instant, usize) -> bool) {
        loop {
            let changed = self.changed.notified();
            tokio::pin!(changed);
            changed.as_mut().enable();
            let next_leaves = {
                let mut state = self.state.lock().unwrap_or_else(PoisonError::into_inner);
                if admit(&mut state, Instant::now(), self.limit) {
                    return;
                }
                state.leaving.peek().map(|Reverse(t)| *t)
            };
            tracing::trace!(?next_leaves, "write waits for NRP's window (domain.md 4.8)");
            match next_leaves {
                Some(t) => {
                    tokio::select! {
                        () = tokio::time::sleep_until(t) => {}
                        () = &mut changed => {}
                    }
                }
                None => changed.await,
            }
        }
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        if let Some(w) = self.window.take() {
            {
                let mut state = w.state.lock().unwrap_or_else(PoisonError::into_inner);
                state.running = state.running.saturating_sub(1);
                let from = self.accepted.get().copied().unwrap_or_else(Instant::now);
                state.leaving.push(Reverse(from + w.period));
            }
            // A waiter that saw only running writes sleeps until told: now it has a time.
            w.changed.notify_waiters();
        }
    }
}

impl Drop for Reservation {
    fn drop(&mut self) {
        if let Some(w) = self.window.take() {
            {
                let mut state = w.state.lock().unwrap_or_else(PoisonError::into_inner);
                state.reserved = state.reserved.saturating_sub(1);
            }
            w.changed.notify_waiters();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn counts(w: &SubscriptionWindow) -> (usize, usize) {
        let w = w.inner.as_ref().unwrap();
        let mut s = w.state.lock().unwrap();
        (s.in_window(Instant::now()), s.reserved)
    }

    #[tokio::test(start_paused = true)]
    async fn the_write_after_the_limit_waits_until_a_slot_leaves_the_window() {
        let pacer = WritePacer::new(3, Duration::from_secs(300));
        let w = pacer.window("SUB");
        let t0 = Instant::now();
        let mut slots = Vec::new();
        for _ in 0..3 {
            slots.push(w.admit(0).await.0);
        }
        assert_eq!(counts(&w), (3, 0));
        assert_eq!(Instant::now(), t0, "three writes fit at once");
        // The first write ends 10 s in; its slot leaves the window 300 s later.
        tokio::time::sleep(Duration::from_secs(10)).await;
        drop(slots.remove(0));
        let _fourth = w.admit(0).await;
        assert_eq!(Instant::now() - t0, Duration::from_secs(310));
        // Subscriptions are counted apart, whatever the casing.
        assert_eq!(counts(&pacer.window("sub")), (3, 0));
        let other = pacer.window("other");
        let _ = other.admit(0).await;
        assert_eq!(Instant::now() - t0, Duration::from_secs(310));
    }

    #[tokio::test(start_paused = true)]
    async fn reservations_keep_slots_for_the_writes_that_follow() {
        let pacer = WritePacer::new(4, Duration::from_secs(300));
        let w = pacer.window("s");
        let t0 = Instant::now();
        // A parent write that two subnet writes wait on: 1 slot + 2 kept.
        let (parent, kept) = w.admit(2).await;
        assert_eq!(counts(&w), (1, 2));
        // Another one that would make one more subnet ready does not fit (1+2+1+1 > 4)...
        let w2 = w.clone();
        let blocked = tokio::spawn(async move { w2.admit(1).await });
        tokio::time::sleep(Duration::from_secs(1)).await;
        assert!(!blocked.is_finished());
        // ... while the reserved writes get in at once.
        let mut kept = kept.into_iter();
        let first = w.admit_reserved(kept.next().unwrap()).await;
        assert_eq!(counts(&w), (2, 1));
        // A reservation given back unused lets the waiting write in (2 + 0 + 1 + 1 = 4).
        drop(kept);
        let (third, more) = blocked.await.unwrap();
        assert_eq!(more.len(), 1);
        assert_eq!(counts(&w), (3, 1));
        assert_eq!(Instant::now() - t0, Duration::from_secs(1));
        drop((parent, first, third, more));
    }

    #[tokio::test(start_paused = true)]
    async fn a_write_that_would_reserve_more_than_the_limit_gets_into_an_empty_window() {
        let pacer = WritePacer::new(2, Duration::from_secs(60));
        let w = pacer.window("s");
        let (slot, kept) = w.admit(5).await;
        assert_eq!(kept.len(), 5);
        drop(slot);
        // The reserved writes go as the window frees: each ends at once, and its slot
        // leaves the window 60 s later, so two per minute (the parent's slot is one of the
        // first two).
        let t0 = Instant::now();
        let mut admitted_at = Vec::new();
        for r in kept {
            drop(w.admit_reserved(r).await);
            admitted_at.push((Instant::now() - t0).as_secs());
        }
        assert_eq!(admitted_at, [0, 60, 60, 120, 120]);
        assert_eq!(counts(&w), (2, 0));
    }

    #[tokio::test(start_paused = true)]
    async fn a_slot_leaves_the_window_a_period_after_arm_accepted_the_write() {
        let pacer = WritePacer::new(1, Duration::from_secs(300));
        let w = pacer.window("s");
        let t0 = Instant::now();
        let (slot, _) = w.admit(0).await;
        tokio::time::sleep(Duration::from_secs(2)).await;
        slot.accepted();
        // The operation runs 10 s more; NRP counted the write when it accepted it.
        tokio::time::sleep(Duration::from_secs(10)).await;
        slot.accepted();
        drop(slot);
        let _ = w.admit(0).await;
        assert_eq!(Instant::now() - t0, Duration::from_secs(302));
    }

    #[tokio::test(start_paused = true)]
    async fn a_write_waiting_on_running_writes_wakes_when_one_ends() {
        let pacer = WritePacer::new(1, Duration::from_secs(60));
        let w = pacer.window("s");
        let t0 = Instant::now();
        let (running, _) = w.admit(0).await;
        let w2 = w.clone();
        let waiting = tokio::spawn(async move { w2.admit(0).await });
        // Nothing has a time to leave yet: the waiter must be told when the write ends.
        tokio::time::sleep(Duration::from_secs(5)).await;
        drop(running);
        let _ = tokio::time::timeout(Duration::from_secs(600), waiting)
            .await
            .expect("woken")
            .unwrap();
        assert_eq!(Instant::now() - t0, Duration::from_secs(65));
    }

    #[tokio::test(start_paused = true)]
    async fn a_reserved_write_does_not_queue_behind_a_waiting_one() {
        let pacer = WritePacer::new(3, Duration::from_secs(60));
        let w = pacer.window("s");
        let t0 = Instant::now();
        let (_first, kept) = w.admit(2).await;
        // A write that would reserve one more waits (1 + 2 + 1 + 1 > 3) in the queue ...
        let w2 = w.clone();
        let queued = tokio::spawn(async move { w2.admit(1).await });
        tokio::time::sleep(Duration::from_secs(1)).await;
        assert!(!queued.is_finished());
        // ... and a write reserving now gets the free slot at once, queue or not.
        let extra = w.reserve();
        let _second = w.admit_reserved(extra).await;
        assert_eq!(Instant::now() - t0, Duration::from_secs(1));
        drop(kept);
        queued.abort();
    }

    #[tokio::test(start_paused = true)]
    async fn off_admits_everything_at_once() {
        let pacer = WritePacer::off();
        let w = pacer.window("s");
        let t0 = Instant::now();
        let mut held = Vec::new();
        for _ in 0..5_000 {
            held.push(w.admit(3).await);
        }
        assert_eq!(Instant::now(), t0);
        assert!(WritePacer::new(0, Duration::from_secs(1)).inner.is_none());
    }
}
