//! Moving events from the ring buffer to the audit log.

use aya::maps::{MapData, RingBuf};

use super::generations::Generations;
use crate::{
    audit::{AuditError, AuditLog},
    kernel::events::{self, Event},
    record::{self, Clock},
};

/// What the drains of one controller process did.
#[derive(Debug, Clone, Copy, Default, serde::Serialize)]
pub struct Drained {
    pub events_written: u64,
    pub events_undecodable: u64,
}

/// Writes every event waiting in `ring`, each named with the rules of the generation that decided.
///
/// # Errors
/// The audit log cannot be written.
pub fn drain(
    ring: &mut RingBuf<MapData>,
    generations: &Generations,
    audit: &mut AuditLog,
    clock: &Clock,
    drained: &mut Drained,
) -> Result<(), AuditError> {
    while let Some(item) = ring.next() {
        match events::decode(&item) {
            Ok(event) => {
                let record = match &event {
                    Event::Exec(exec) => record::exec_record(exec, generations.exec(exec.generation), clock),
                    Event::Net(net) => record::net_record(net, generations.net(net.generation), clock),
                };
                audit.write(&record)?;
                drained.events_written += 1;
            }
            Err(err) => {
                drained.events_undecodable += 1;
                tracing::warn!("undecodable event: {err}");
            }
        }
    }
    Ok(())
}
