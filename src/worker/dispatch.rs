//! The claim loop: claims fairly whenever in-flight slots and bytes are free
//! and starts one task per claimed message; waits for mail (NOTIFY, this
//! process's commits, maintenance) or for slots, else polls.

use std::any::Any;
use std::panic::AssertUnwindSafe;
use std::sync::Arc;
use std::time::Duration;

use futures_util::FutureExt;
use tokio::sync::watch;
use tokio::task::JoinSet;
use uuid::Uuid;

use super::inflight::Summary;
use super::{changed, relays, send, Ctx};
use crate::db;
use crate::queue::claim::{self, Want};
use crate::queue::model::Lease;
use crate::queue::record::{Outcome, Resolution};

/// After a slot frees, wait this long at most for more to free before
/// claiming, so claims stay batches under load.
const GATHER: Duration = Duration::from_millis(5);

pub async fn run(
    ctx: Ctx,
    mut wakes: Vec<watch::Receiver<u64>>,
    mut shutdown: watch::Receiver<bool>,
) -> Summary {
    let idle = Duration::from_millis(ctx.settings.worker.poll_interval_ms);
    let batch = ctx.settings.worker.claim_batch.max(1);
    let lease_secs = ctx.settings.delivery.lease_secs as f64;
    let gather_at = batch.div_ceil(4).min(ctx.inflight.max_count);
    let mut cursor = Uuid::nil();
    let mut tasks: JoinSet<bool> = JoinSet::new();
    let stopping = Arc::new(std::sync::atomic::AtomicBool::new(false));
    loop {
        while tasks.try_join_next().is_some() {}
        if *shutdown.borrow() {
            break;
        }
        // Seen before claiming, so a wake-up during the claim is not lost.
        for w in wakes.iter_mut() {
            w.borrow_and_update();
        }
        let room = ctx.inflight.room(batch);
        let blocked = room.slots == 0 || (room.bytes <= 0 && !room.idle);
        let mut more = false;
        if !blocked {
            let skip = ctx.pacer.throttled();
            let inflight = ctx.inflight.clone();
            let mut c = cursor;
            let claimed = db::run(&ctx.pool, move |conn| {
                let want = Want {
                    slots: room.slots,
                    bytes: room.bytes,
                    idle: room.idle,
                    tenant_cap: inflight.tenant_cap,
                    tenant_bytes: inflight.tenant_bytes,
                    inflight: &room.per_tenant,
                    skip: &skip,
                    lease_secs,
                };
                let got = claim::claim(conn, &want, &mut c)?;
                Ok((got, c))
            })
            .await;
            match claimed {
                Ok((got, c)) => {
                    cursor = c;
                    more = got.more;
                    let started = !got.messages.is_empty();
                    start(&ctx, got.messages, &mut tasks, &stopping).await;
                    if started && ctx.inflight.free_slots() > 0 && more {
                        continue;
                    }
                }
                Err(e) => {
                    tracing::warn!(error = %e, "claiming mail failed; retrying");
                    sleep_or_stop(idle.max(Duration::from_secs(1)), &mut shutdown).await;
                    continue;
                }
            }
        }
        // Out of slots or bytes, or some tenant had more than it could take:
        // claim again as slots free. Else wait for new mail.
        let wait_slots = blocked || more || ctx.inflight.free_slots() == 0;
        let woken = wait(&mut wakes);
        tokio::select! {
            _ = woken => {}
            _ = slots_freed(&ctx, gather_at), if wait_slots => {}
            _ = tokio::time::sleep(idle) => {}
            _ = changed(&mut shutdown) => {}
        }
    }
    stopping.store(true, std::sync::atomic::Ordering::SeqCst);
    let mut summary = Summary::default();
    while let Some(r) = tasks.join_next().await {
        match r {
            Ok(true) => summary.finished += 1,
            Ok(false) => summary.released += 1,
            Err(e) => tracing::error!(error = %e, "delivery task failed"),
        }
    }
    summary
}

/// Starts one task per claimed message. Each task's result says whether the
/// message was attempted (true) or released unstarted (false).
async fn start(
    ctx: &Ctx,
    messages: Vec<claim::Claimed>,
    tasks: &mut JoinSet<bool>,
    stopping: &Arc<std::sync::atomic::AtomicBool>,
) {
    if messages.is_empty() {
        return;
    }
    let tenants = relays::load(ctx, messages.iter().map(|m| m.lease.tenant_id).collect()).await;
    for m in messages {
        let broadcast = m.row.stream == crate::emails::stream::Stream::Broadcast.as_str();
        ctx.inflight.take(m.lease, m.size_bytes, broadcast);
        let tenant = tenants.get(&m.lease.tenant_id).cloned();
        let ctx = ctx.clone();
        let stopping = stopping.clone();
        tasks.spawn(async move {
            let (lease, size) = (m.lease, m.size_bytes);
            let attempt = m.row.attempts.saturating_add(1);
            let stop = || stopping.load(std::sync::atomic::Ordering::SeqCst);
            // A panic anywhere in one send fails that message alone: its
            // slot is freed and its outcome recorded (which ends the lease's
            // heartbeat), instead of the task dying with both held forever.
            let sent = AssertUnwindSafe(send::attempt(&ctx, m, tenant, stop))
                .catch_unwind()
                .await;
            let outcome = sent.unwrap_or_else(|panic| panicked(lease, attempt, &*panic));
            let attempted = !matches!(
                outcome.resolution,
                crate::queue::record::Resolution::Requeued { .. }
            ) || !stopping.load(std::sync::atomic::Ordering::SeqCst);
            // The slot is freed only once the recorder has taken the
            // outcome: while it is behind, this task (and its future's
            // memory) waits here holding the slot, so the claims stop
            // instead of piling up finished sends without bound (issue 24).
            // The recorder outlives every task (it stops after the loop).
            if ctx.outcomes.send(outcome).await.is_err() {
                tracing::error!(
                    "outcome recorder gone; the lease will expire and the message be retried"
                );
            }
            ctx.inflight.release(lease.tenant_id, size, broadcast);
            attempted
        });
    }
}

/// The outcome of a send that panicked: failed, not retried (the panic may
/// have come after the relay accepted it, and would likely recur).
fn panicked(lease: Lease, attempt: i32, panic: &(dyn Any + Send)) -> Outcome {
    let what = panic
        .downcast_ref::<&str>()
        .copied()
        .or_else(|| panic.downcast_ref::<String>().map(String::as_str))
        .unwrap_or("no message");
    tracing::error!(
        email_id = %lease.email_id,
        tenant_id = %lease.tenant_id,
        panic = %what,
        "sending a message panicked; it is failed, the other sends go on"
    );
    Outcome {
        lease,
        attempt,
        recipients: Vec::new(),
        resolution: Resolution::Failed {
            reason: "sending it failed unexpectedly (an internal error, logged)".into(),
        },
    }
}

/// Resolves on the first wake-up of any source.
async fn wait(wakes: &mut [watch::Receiver<u64>]) {
    let futs: Vec<_> = wakes.iter_mut().map(|w| Box::pin(changed(w))).collect();
    if futs.is_empty() {
        return std::future::pending().await;
    }
    futures_util::future::select_all(futs).await;
}

/// Resolves once `at_least` slots are free, everything is idle, or a little
/// after the first slot frees (so a claim gathers several).
async fn slots_freed(ctx: &Ctx, at_least: usize) {
    ctx.inflight.freed.notified().await;
    let deadline = tokio::time::Instant::now() + GATHER;
    while ctx.inflight.free_slots() < at_least && !ctx.inflight.is_empty() {
        tokio::select! {
            _ = ctx.inflight.freed.notified() => {}
            _ = tokio::time::sleep_until(deadline) => return,
        }
    }
}

async fn sleep_or_stop(d: Duration, shutdown: &mut watch::Receiver<bool>) {
    tokio::select! {
        _ = tokio::time::sleep(d) => {}
        _ = changed(shutdown) => {}
    }
}
