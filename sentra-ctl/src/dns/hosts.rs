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
    /// During a reload, between [`Self::prepare`] and [`Self::retire`]: the generation being prepared
    /// (new answers are written there too, so the switch loses none) and the grants to restore if
    /// the reload is abandoned.
    pending: Option<(u32, HashMap<IpAddr, Vec<Grant>>)>,
    /// Entries a previous controller wrote, found in the pinned table by a restarted one that cannot
    /// know their names, rules or TTLs: kept as they are until the policy's TTL ceiling counted from
    /// the adoption (no grant lasted longer), unless an answer grants the address again first.
    adopted: HashMap<IpAddr, Instant>,
}

impl Learned {
    #[must_use]
    pub fn new(table: HostTable, generation: u32) -> Self {
        Self { table, generation, grants: HashMap::new(), pending: None, adopted: HashMap::new() }
    }

    /// Takes over the entries of `generation` already in the table (a restarted controller), each
    /// until `ceiling` from now; returns how many.
    pub fn adopt(&mut self, ceiling: Duration) -> usize {
        let expires = Instant::now() + ceiling;
        for key in self.table.keys_of(self.generation) {
            self.adopted.insert(ip_of(key.family, key.addr), expires);
        }
        self.adopted.len()
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
        self.adopted.remove(&addr);
        let grants = self.grants.entry(addr).or_default();
        for &rule in rules {
            match grants.iter_mut().find(|g| g.rule == rule && g.name == name) {
                // A later answer may shorten the TTL (the zone changed): the newest answer decides.
                Some(grant) => grant.expires = expires,
                None => grants.push(Grant { name: name.to_string(), rule, expires }),
            }
        }
        if let Some(pending) = self.pending.as_ref().map(|(generation, _)| *generation) {
            self.write(policy, addr, pending)?;
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
        let stale: Vec<IpAddr> =
            self.adopted.iter().filter(|(_, expires)| **expires <= now).map(|(addr, _)| *addr).collect();
        for addr in stale {
            self.adopted.remove(&addr);
            expired.push(Expired { addr, name: "(learned by the previous controller)".into() });
            self.table.remove(self.generation, family_of(addr), addr_bytes(addr))?;
        }
        let pending = self.pending.as_ref().map(|(generation, _)| *generation);
        for addr in touched {
            if let Some(pending) = pending {
                self.write(policy, addr, pending)?;
            }
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
        self.pending = Some((generation, self.grants.clone()));
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
        self.pending = None;
        // Adopted entries are not carried into a new generation: their rules are unknown.
        self.adopted.clear();
        for key in self.table.keys_of(old) {
            self.table.remove(old, key.family, key.addr)?;
        }
        Ok(())
    }

    /// Abandons a prepared `generation` (never activated): removes its entries and restores the
    /// grants as they were before [`Self::prepare`].
    ///
    /// # Errors
    /// A kernel map update fails.
    pub fn discard(&mut self, generation: u32) -> Result<(), KernelError> {
        if let Some((_, grants)) = self.pending.take() {
            self.grants = grants;
        }
        for key in self.table.keys_of(generation) {
            self.table.remove(generation, key.family, key.addr)?;
        }
        Ok(())
    }

    /// Number of addresses currently allowed.
    #[must_use]
    pub fn len(&self) -> usize {
        self.grants.len() + self.adopted.keys().filter(|a| !self.grants.contains_key(a)).count()
    }

    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.len() == 0
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

/// The address of a table key (the inverse of `addr_bytes` and `family_of`).
fn ip_of(family: u32, addr: [u8; 16]) -> IpAddr {
    if family == sentra_common::net::FAMILY_V4 {
        IpAddr::from([addr[0], addr[1], addr[2], addr[3]])
    } else {
        IpAddr::from(addr)
    }
}
