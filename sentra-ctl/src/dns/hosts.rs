//! Addresses learned from allowed DNS answers: which rule each one serves, until when, and their
//! entries in the kernel's `NET_HOSTS`.

use std::{
    collections::HashMap,
    net::IpAddr,
    time::{Duration, Instant},
};

use sentra_common::net::{MAX_PORT_RANGES, NetAllow, PortRange};

use crate::{
    kernel::{KernelError, net::HostTable},
    policy::network::{CompiledNet, addr_bytes, family_of, pack},
};

/// One (name, rule) an address was learned for.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Grant {
    /// The name the client asked for (what the rule matched).
    name: String,
    rule: u32,
    expires: Instant,
}

/// An address that expired, for the audit log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Expired {
    pub addr: IpAddr,
    pub name: String,
}

/// The learned addresses and the kernel table they are mirrored into.
pub struct Learned {
    table: HostTable,
    generation: u32,
    grants: HashMap<IpAddr, Vec<Grant>>,
}

impl Learned {
    #[must_use]
    pub fn new(table: HostTable, generation: u32) -> Self {
        Self { table, generation, grants: HashMap::new() }
    }

    /// Allows `addr` for `rules` (all matched `name`) until `ttl` from now, then writes its kernel entry.
    ///
    /// # Errors
    /// The kernel map update fails.
    pub fn learn(
        &mut self,
        policy: &CompiledNet,
        name: &str,
        rules: &[u32],
        addr: IpAddr,
        ttl: Duration,
    ) -> Result<(), KernelError> {
        let expires = Instant::now() + ttl;
        let grants = self.grants.entry(addr).or_default();
        for &rule in rules {
            match grants.iter_mut().find(|g| g.rule == rule && g.name == name) {
                // A later answer may shorten the TTL (the zone changed): the newest answer decides.
                Some(grant) => grant.expires = expires,
                None => grants.push(Grant { name: name.to_string(), rule, expires }),
            }
        }
        self.write(policy, addr, self.generation)
    }

    /// Drops expired grants; rewrites or removes their addresses' kernel entries.
    ///
    /// # Errors
    /// A kernel map update fails (the sweep stops there and is retried on the next call).
    pub fn sweep(&mut self, policy: &CompiledNet, now: Instant) -> Result<Vec<Expired>, KernelError> {
        let mut expired = Vec::new();
        let mut touched = Vec::new();
        for (addr, grants) in &mut self.grants {
            let before = grants.len();
            grants.retain(|g| {
                let live = g.expires > now;
                if !live {
                    expired.push(Expired { addr: *addr, name: g.name.clone() });
                }
                live
            });
            if grants.len() != before {
                touched.push(*addr);
            }
        }
        expired.dedup();
        for addr in touched {
            self.write(policy, addr, self.generation)?;
            if self.grants.get(&addr).is_some_and(Vec::is_empty) {
                self.grants.remove(&addr);
            }
        }
        Ok(expired)
    }

    /// Prepares `generation` for a new policy: every learned address whose name a domain rule of
    /// `policy` still matches is written there with the new rules' ports; grants whose name no longer
    /// matches are dropped. Call before the generation is activated, then [`Self::retire`] the old one.
    ///
    /// # Errors
    /// A kernel map update fails.
    pub fn prepare(&mut self, policy: &CompiledNet, generation: u32) -> Result<(), KernelError> {
        for grants in self.grants.values_mut() {
            let mut renewed: Vec<Grant> = Vec::new();
            for grant in grants.iter() {
                for rule in policy.matching_domains(&grant.name) {
                    if !renewed.iter().any(|g| g.rule == rule.rule && g.name == grant.name) {
                        renewed.push(Grant {
                            name: grant.name.clone(),
                            rule: rule.rule,
                            expires: grant.expires,
                        });
                    }
                }
            }
            *grants = renewed;
        }
        self.grants.retain(|_, grants| !grants.is_empty());
        let addrs: Vec<IpAddr> = self.grants.keys().copied().collect();
        for addr in addrs {
            self.write(policy, addr, generation)?;
        }
        Ok(())
    }

    /// Makes `new` the generation learned addresses are written to and removes `old`'s entries.
    ///
    /// # Errors
    /// A kernel map update fails.
    pub fn retire(&mut self, old: u32, new: u32) -> Result<(), KernelError> {
        self.generation = new;
        for key in self.table.keys_of(old) {
            self.table.remove(old, key.family, key.addr)?;
        }
        Ok(())
    }

    /// Number of addresses currently allowed.
    #[must_use]
    pub fn len(&self) -> usize {
        self.grants.len()
    }

    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.grants.is_empty()
    }

    /// Mirrors `addr`'s grants into the kernel: the union of its rules' port ranges, or no entry.
    fn write(&mut self, policy: &CompiledNet, addr: IpAddr, generation: u32) -> Result<(), KernelError> {
        let (family, bytes) = (family_of(addr), addr_bytes(addr));
        let mut ranges: Vec<PortRange> = Vec::new();
        for grant in self.grants.get(&addr).map_or(&[][..], Vec::as_slice) {
            for rule in policy.domains.iter().filter(|d| d.rule == grant.rule) {
                for range in &rule.ranges {
                    if !ranges.contains(range) {
                        ranges.push(*range);
                    }
                }
            }
        }
        if ranges.is_empty() {
            return self.table.remove(generation, family, bytes);
        }
        if ranges.len() > MAX_PORT_RANGES {
            // Several domain rules share this address; the first ones win (the policy compiler caps
            // each rule, not their union). Logged so the policy author can merge ports.
            tracing::warn!(
                "{addr}: {} port ranges from several domain rules; only {MAX_PORT_RANGES} kept",
                ranges.len()
            );
            ranges.truncate(MAX_PORT_RANGES);
        }
        let allow: NetAllow = pack(&ranges).unwrap_or_default();
        self.table.insert(generation, family, bytes, &allow)
    }
}
