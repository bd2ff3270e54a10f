//! Moving events from the ring buffer to the audit log: the ring, the drain timer, the audit
//! log (shared with the resolver), and what the drains did.

use anyhow::Context as _;
use aya::maps::{MapData, RingBuf};
use sentra_common::{event::GuardHook, names::map::EVENTS};
use tokio::io::unix::AsyncFd;

use super::generations::Generations;
use crate::{
    audit::{AuditError, AuditLog, Record},
    kernel::{
        events::{self, DRAIN_EVERY, Event},
        store::MapStore,
    },
    record::{self, Clock},
};

/// Exec denials kept for [`Events::denials_since`]: a shell asks right after its command ends, so
/// only the latest few matter.
const RECENT_DENIALS: usize = 256;

/// One kept exec denial, with the task's cgroup and the kernel's time of it.
struct Recent {
    boot_ns: u64,
    cgroup_id: u64,
    denial: record::KernelDenial,
}

/// What the drains of one controller process did.
#[derive(Debug, Clone, Copy, Default, serde::Serialize)]
pub struct Drained {
    pub events_written: u64,
    pub events_undecodable: u64,
    /// The kernel's lost-event count as last written to the log (an `events_lost` record).
    pub events_lost_recorded: u64,
}

/// The `EVENTS` ring buffer and the audit log it drains into.
pub struct Events {
    ring: AsyncFd<RingBuf<MapData>>,
    /// The latest exec denials, for the shells that ran the commands ([`Self::denials_since`]).
    recent: std::collections::VecDeque<Recent>,
    tick: tokio::time::Interval,
    audit: AuditLog,
    clock: Clock,
    drained: Drained,
}

impl Events {
    /// Takes the ring buffer out of `store` (to be polled), to drain into `audit`.
    ///
    /// # Errors
    /// The map is missing or cannot be polled.
    pub fn open<S: MapStore + ?Sized>(store: &mut S, audit: AuditLog) -> anyhow::Result<Self> {
        let ring = store.take_map(EVENTS).context("map EVENTS missing")?;
        let ring: RingBuf<MapData> = RingBuf::try_from(ring).context("map EVENTS is not a ring buffer")?;
        // SAFETY: the ring buffer owns its map fd, which stays open and unchanged while the AsyncFd
        // owns it.
        let ring = unsafe { AsyncFd::register_with_interest(ring, tokio::io::Interest::READABLE) }.map_err(
            |err| anyhow::anyhow!("polling the EVENTS ring buffer: {}", std::io::Error::from(err)),
        )?;
        Ok(Self {
            ring,
            recent: std::collections::VecDeque::with_capacity(RECENT_DENIALS),
            tick: tokio::time::interval(DRAIN_EVERY),
            audit,
            clock: Clock::new(),
            drained: Drained::default(),
        })
    }

    /// Waits until events are due: a wakeup from the kernel, or the drain timer (routine events are
    /// submitted without waking the controller, see `submit_flags` in sentra-ebpf/src/maps.rs).
    /// Cancel-safe.
    ///
    /// # Errors
    /// The ring buffer cannot be polled.
    pub async fn due(&mut self) -> anyhow::Result<()> {
        tokio::select! {
            _ = self.tick.tick() => {}
            guard = self.ring.readable_mut() => {
                // Cleared before draining: an event arriving during the drain wakes the next wait.
                guard.context("polling the EVENTS ring buffer")?.clear_ready();
            }
        }
        Ok(())
    }

    /// Writes every event waiting in the ring, each named with the rules of the generation that
    /// decided.
    ///
    /// # Errors
    /// The audit log cannot be written.
    pub fn drain(&mut self, generations: &Generations) -> Result<(), AuditError> {
        self.drain_with(generations, None)
    }

    /// [`Self::drain`], writing `extra` (a record from elsewhere: a shell's, a lifecycle record) in
    /// its place by time among the drained events.
    ///
    /// The ring holds events in reservation order, and the probes take their time after reserving,
    /// so events of different CPUs can be a little out of time order; a record from elsewhere was
    /// made before it reached the controller. The window is written sorted by time (stable: events
    /// of the same microsecond keep their ring order; `extra` comes after them).
    ///
    /// # Errors
    /// The audit log cannot be written.
    pub fn drain_with(
        &mut self,
        generations: &Generations,
        extra: Option<Extra<'_>>,
    ) -> Result<(), AuditError> {
        let mut window: Vec<Record> = Vec::new();
        let ring = self.ring.get_mut();
        while let Some(item) = ring.next() {
            match events::decode(&item) {
                Ok(event) => {
                    let record = match &event {
                        Event::Exec(exec) => {
                            record::exec_record(exec, generations.exec(exec.generation), &self.clock)
                        }
                        Event::Net(net) => {
                            record::net_record(net, generations.net(net.generation), &self.clock)
                        }
                        Event::Guard(guard) => {
                            record::guard_record(guard, generations.exec(guard.generation), &self.clock)
                        }
                    };
                    // The shell is told of exec denials, and of programs killed for their loader
                    // variables (named by their comm: the file is gone with its task).
                    let denied = match &event {
                        Event::Exec(exec) => Some((&exec.header, record.executable.clone())),
                        Event::Guard(guard) if guard.hook == GuardHook::LoaderEnv => {
                            Some((&guard.header, Some(guard.header.comm.clone())))
                        }
                        _ => None,
                    };
                    if let Some((header, file)) = denied
                        && record.decision == Some("denied")
                    {
                        if self.recent.len() == RECENT_DENIALS {
                            self.recent.pop_front();
                        }
                        self.recent.push_back(Recent {
                            boot_ns: header.boot_ns,
                            cgroup_id: header.cgroup_id,
                            denial: record::KernelDenial {
                                file: file.unwrap_or_default(),
                                rule_id: record.rule_id.clone().unwrap_or_default(),
                                reason: record.reason.clone(),
                                backend: record.backend.unwrap_or_default().to_string(),
                            },
                        });
                    }
                    window.push(record);
                }
                Err(err) => {
                    self.drained.events_undecodable += 1;
                    tracing::warn!("undecodable event: {err}");
                }
            }
        }
        // Every timestamp has the same RFC 3339 form (UTC, microseconds): text order is time order.
        window.sort_by(|a, b| a.timestamp.cmp(&b.timestamp));
        let extra_at = extra.map_or(window.len(), |extra| {
            let time = extra.timestamp();
            window.partition_point(|r| r.timestamp.as_str() <= time)
        });
        let (before, after) = window.split_at(extra_at);
        self.write_events(before)?;
        if let Some(extra) = extra {
            extra.write(&self.audit)?;
        }
        self.write_events(after)
    }

    fn write_events(&mut self, records: &[Record]) -> Result<(), AuditError> {
        for record in records {
            self.audit.write(record)?;
            self.drained.events_written += 1;
        }
        Ok(())
    }

    /// The exec denials drained so far of tasks in cgroup `cgroup_id` at or after `since_boot_ns`
    /// (`CLOCK_BOOTTIME`, the clock of the events), oldest first, at most `limit`.
    #[must_use]
    pub fn denials_since(
        &self,
        cgroup_id: u64,
        since_boot_ns: u64,
        limit: usize,
    ) -> Vec<record::KernelDenial> {
        self.recent
            .iter()
            .filter(|r| r.cgroup_id == cgroup_id && r.boot_ns >= since_boot_ns)
            .take(limit)
            .map(|r| r.denial.clone())
            .collect()
    }

    /// Writes an `events_lost` record when the kernel counted lost events since the last one
    /// (`dropped`: its counter now), so that a loss is always in the log itself, with its exact count.
    /// A controller that adopts pinned maps starts from zero: the first record then also counts what
    /// was lost under its predecessor (`lost_total` is the kernel's count either way).
    ///
    /// # Errors
    /// The audit log cannot be written (the loss is then recorded by the next drain).
    pub fn record_loss(&mut self, dropped: u64) -> Result<(), AuditError> {
        if dropped <= self.drained.events_lost_recorded {
            return Ok(());
        }
        let lost = dropped - self.drained.events_lost_recorded;
        tracing::warn!("{lost} events were lost because the ring buffer was full");
        self.audit.write(&Record {
            timestamp: crate::audit::now(),
            event: "events_lost".into(),
            layer: "kernel",
            reason: Some("the ring buffer was full: the controller did not drain it in time".into()),
            detail: Some(serde_json::json!({ "lost": lost, "lost_total": dropped })),
            ..Record::default()
        })?;
        self.drained.events_lost_recorded = dropped;
        Ok(())
    }

    /// Follows a rotated or replaced audit log now (see [`AuditLog::revalidate`]).
    ///
    /// # Errors
    /// The log cannot be reopened or written.
    pub fn revalidate_log(&self) -> Result<(), AuditError> {
        self.audit.revalidate()
    }

    /// Tells `observer` of every record the log writes from now on (see [`AuditLog::observe`]).
    pub fn observe_log(&self, observer: std::sync::Arc<dyn crate::audit::Observe>) {
        self.audit.observe(observer);
    }

    /// The audit log's writer counters.
    #[must_use]
    pub fn audit_stats(&self) -> crate::audit::WriteStats {
        self.audit.stats()
    }

    /// What the drains did.
    #[must_use]
    pub const fn drained(&self) -> Drained {
        self.drained
    }
}

/// A record from elsewhere, written among the kernel's events by [`Events::drain_with`].
#[derive(Clone, Copy)]
pub enum Extra<'a> {
    Record(&'a Record),
    /// Built by another process (a shell, the launcher), in the same schema.
    Value(&'a serde_json::Value),
}

impl Extra<'_> {
    fn timestamp(&self) -> &str {
        match self {
            Self::Record(record) => &record.timestamp,
            Self::Value(value) => {
                value.get("timestamp").and_then(serde_json::Value::as_str).unwrap_or_default()
            }
        }
    }

    fn write(self, audit: &AuditLog) -> Result<(), AuditError> {
        match self {
            Self::Record(record) => audit.write(record),
            Self::Value(value) => audit.write_value(value),
        }
    }
}
