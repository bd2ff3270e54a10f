//! E-mail with credentials the agent cannot read. The agent's `email`/`send-email` (the
//! `sentra-email` binary) asks the controller on its records socket; the controller's [`Broker`]
//! decides under the enforced policy's `email:` section (recipients, hourly cap, size), composes the
//! message with the policy's sender, and hands it to himalaya, whose configuration (the SMTP
//! password) only root can read. Every request, sent, refused or failed, is one audit record.

pub mod broker;
pub mod client;
pub mod message;

pub use broker::{Broker, Job, Refusal};
