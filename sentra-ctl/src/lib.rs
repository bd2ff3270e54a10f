//! Sentra controller library: policy, kernel maps, cgroups, audit, the controller daemon.

pub mod audit;
pub mod cgroup;
pub mod controller;
pub mod dns;
pub mod doctor;
pub mod enforce;
pub mod kernel;
pub mod policy;
pub mod record;
pub mod run;
pub mod shell;
