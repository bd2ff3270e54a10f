//! `sentra-ctl policy learn`: the smallest additions to a policy that allow what an audit log shows
//! was refused (or, in audit mode, would have been) by a default — never what an explicit deny
//! refused, which stays denied.
//!
//! - exec: each file a kernel exec record names, as a `path:` entry; files of one directory become a
//!   `dir:` entry only when there are at least `dir_threshold` of them and the directory and all its
//!   ancestors are root's and writable by no one else (an agent that could add a file there would
//!   be allowed to run it);
//! - network: each name the resolver refused as a `domain:` entry, with the ports connected to at
//!   the addresses answered for it where the log shows them; other destinations as a single-address
//!   `cidr:` with the ports and protocol seen;
//! - shell: each program a shell line ran, as a rule allowing that executable, after the policy's
//!   own rules (its denies keep matching first).
//!
//! Each entry carries a comment saying how often and when it was seen.

use std::{
    collections::{BTreeMap, BTreeSet, HashMap},
    fmt::Write as _,
    os::unix::fs::MetadataExt as _,
    path::Path,
};

use serde_json::Value;

use super::{
    Policy, PolicyError,
    edit::{EditError, Item, append, scalar},
};
use crate::audit::query::{Entry, pending, refusal_id};

/// Why nothing was learned.
#[derive(Debug, thiserror::Error)]
pub enum LearnError {
    #[error("adding the entries to the base policy")]
    Edit(#[from] EditError),
    #[error("the learned policy does not check (this is a bug in `policy learn`; the base is unchanged)")]
    Check(#[source] PolicyError),
    #[error("the base policy")]
    Base(#[source] PolicyError),
    #[error("no refusal with id {0} in the log (`sentra-ctl pending` lists them)")]
    NoSuchRefusal(String),
    #[error(
        "{what} was refused by `{rule}`, not by a default: an explicit deny is changed by editing the policy, never approved around"
    )]
    ExplicitDeny { what: String, rule: String },
    #[error("{0}")]
    NotApprovable(String),
}

/// An approved refusal: the policy text with the narrowest entry allowing it, and that entry.
#[derive(Debug)]
pub struct Approval {
    pub text: String,
    pub item: Item,
    /// `exec`, `connect`, `dns`, `shell`: what kind of thing was refused.
    pub kind: String,
    pub what: String,
    /// The entry's id.
    pub id: String,
}

/// Adds to the policy `text` (from `file`) the narrowest entry that allows the refusal `id` of
/// `sentra-ctl pending`, lapsing at `expires` (RFC 3339) when given; `note` goes in its comment.
///
/// # Errors
/// No such refusal, one an explicit deny made, one no policy entry can allow (a system call, a
/// guard), a shell rule asked to lapse, or a policy the result does not check.
pub fn approve(
    file: &Path,
    text: &str,
    entries: &[Entry],
    id: &str,
    expires: Option<&str>,
    note: &str,
) -> Result<Approval, LearnError> {
    Policy::parse(file, text).map_err(LearnError::Base)?;
    let matching: Vec<Entry> =
        entries.iter().filter(|e| refusal_id(e).as_deref() == Some(id)).cloned().collect();
    let group =
        pending(&matching).into_iter().next().ok_or_else(|| LearnError::NoSuchRefusal(id.to_string()))?;
    if group.rule != "default" {
        return Err(LearnError::ExplicitDeny { what: group.what, rule: group.rule });
    }
    let mut taken = BTreeSet::new();
    if let Ok(value) = serde_yaml::from_str::<serde_yaml::Value>(text) {
        collect_ids(&value, &mut taken);
    }
    // Every answer in the log counts: it gives a name's connections their ports.
    let mut observed = Observed::answers(&entries.iter().collect::<Vec<_>>());
    for entry in &matching {
        observed.add(&entry.value);
    }
    // One thing, one entry: never a directory.
    let additions = observed.additions(usize::MAX, &taken, expires);
    let (list, mut item) = match (additions.exec.first(), additions.network.first(), additions.rules.first())
    {
        (Some(item), _, _) => ("exec.allow", item.clone()),
        (None, Some(item), _) => ("network.allow", item.clone()),
        (None, None, Some(item)) if expires.is_none() => ("rules", item.clone()),
        (None, None, Some(_)) => {
            return Err(LearnError::NotApprovable(
                "a shell rule cannot lapse (the shell reads the policy's rules by position); approve it without --for".into(),
            ));
        }
        (None, None, None) => {
            return Err(LearnError::NotApprovable(format!(
                "a {} refusal ({}) is not something a policy entry allows: change the profile or rule that made it",
                group.kind, group.what
            )));
        }
    };
    item.comments = vec![note.to_string()];
    let approved = append(text, list, std::slice::from_ref(&item))?;
    check(file, &approved)?;
    Ok(Approval { text: approved, id: item.id.clone(), item, kind: group.kind, what: group.what })
}

/// The base policy `text` (read from `file`) with what `entries` show was refused by a default
/// allowed; the result is checked as `policy check` would. Also returns what was added.
///
/// # Errors
/// The base is not a valid policy, one of its lists cannot be added to as text, or the result does
/// not check.
pub fn learn(
    file: &Path,
    text: &str,
    entries: &[&Entry],
    dir_threshold: usize,
) -> Result<(String, Additions), LearnError> {
    Policy::parse(file, text).map_err(LearnError::Base)?;
    let mut taken = BTreeSet::new();
    if let Ok(value) = serde_yaml::from_str::<serde_yaml::Value>(text) {
        collect_ids(&value, &mut taken);
    }
    let additions = Observed::of(entries).additions(dir_threshold, &taken, None);
    let mut learned = append(text, "exec.allow", &additions.exec)?;
    learned = append(&learned, "network.allow", &additions.network)?;
    learned = append(&learned, "rules", &additions.rules)?;
    check(file, &learned)?;
    Ok((learned, additions))
}

/// What `policy check` checks of a policy text: it parses, and its exec and network sections compile.
fn check(file: &Path, text: &str) -> Result<(), LearnError> {
    let policy = Policy::parse(file, text).map_err(LearnError::Check)?;
    super::exec::compile(&policy).map_err(LearnError::Check)?;
    super::network::compile(&policy).map_err(LearnError::Check)?;
    Ok(())
}

/// Every `id:` value anywhere in the policy.
fn collect_ids(value: &serde_yaml::Value, ids: &mut BTreeSet<String>) {
    match value {
        serde_yaml::Value::Mapping(map) => {
            for (key, value) in map {
                if key.as_str() == Some("id")
                    && let Some(id) = value.as_str()
                {
                    ids.insert(id.to_string());
                }
                collect_ids(value, ids);
            }
        }
        serde_yaml::Value::Sequence(items) => items.iter().for_each(|v| collect_ids(v, ids)),
        _ => {}
    }
}

/// How often and when something was seen.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
struct Seen {
    count: u64,
    first: String,
    last: String,
}

impl Seen {
    fn add(&mut self, time: &str) {
        self.count += 1;
        if self.first.is_empty() || time < self.first.as_str() {
            self.first = time.to_string();
        }
        if time > self.last.as_str() {
            self.last = time.to_string();
        }
    }

    fn merge(&mut self, other: &Self) {
        self.count += other.count;
        if self.first.is_empty() || (!other.first.is_empty() && other.first < self.first) {
            self.first.clone_from(&other.first);
        }
        if other.last > self.last {
            self.last.clone_from(&other.last);
        }
    }

    fn comment(&self) -> String {
        let times = if self.count == 1 { "once".to_string() } else { format!("{} times", self.count) };
        if self.first == self.last {
            format!("learned: seen {times}, at {}", self.first)
        } else {
            format!("learned: seen {times}, {} … {}", self.first, self.last)
        }
    }
}

/// A destination and what was seen of it.
#[derive(Debug, Clone, Default)]
struct Destination {
    ports: BTreeSet<u16>,
    protocols: BTreeSet<String>,
    seen: Seen,
}

/// What the log shows was refused by a default.
#[derive(Debug, Default)]
pub struct Observed {
    files: BTreeMap<String, Seen>,
    /// Applets of multi-call binaries the default refused, by name (`detail.applet`).
    applets: BTreeMap<String, Seen>,
    domains: BTreeMap<String, Destination>,
    addresses: BTreeMap<String, Destination>,
    programs: BTreeMap<String, Seen>,
    /// Addresses the resolver answered, by name (to give a learned name its ports).
    answered: HashMap<String, String>,
}

/// The additions, ready to be appended to the policy's lists.
#[derive(Debug, Default)]
pub struct Additions {
    pub exec: Vec<Item>,
    pub network: Vec<Item>,
    pub rules: Vec<Item>,
}

impl Additions {
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.exec.is_empty() && self.network.is_empty() && self.rules.is_empty()
    }
}

fn text<'a>(value: &'a Value, key: &str) -> &'a str {
    value.get(key).and_then(Value::as_str).unwrap_or_default()
}

impl Observed {
    /// Reads what the entries show.
    #[must_use]
    pub fn of(entries: &[&Entry]) -> Self {
        // Answers first: a connection may be recorded before the answer it used.
        let mut observed = Self::answers(entries);
        for entry in entries {
            observed.add(&entry.value);
        }
        observed
    }

    /// Only the addresses the resolver answered (allowed, or in audit mode), by name: what gives a
    /// name's connections their ports.
    fn answers<'a>(entries: impl IntoIterator<Item = &'a &'a Entry>) -> Self {
        let mut observed = Self::default();
        for entry in entries {
            let v = &entry.value;
            if text(v, "event").starts_with("dns") && matches!(text(v, "decision"), "allowed" | "auditonly") {
                for address in v.pointer("/detail/addresses").and_then(Value::as_array).into_iter().flatten()
                {
                    // `{"address": …, "ttl_s": …}` where the resolver allowed it, a string in audit mode.
                    if let Some(address) =
                        address.as_str().or_else(|| address.get("address").and_then(Value::as_str))
                    {
                        observed.answered.insert(address.to_string(), text(v, "domain").to_string());
                    }
                }
            }
        }
        observed
    }

    fn add(&mut self, v: &Value) {
        if !matches!(text(v, "decision"), "denied" | "auditonly") || text(v, "rule_id") != "default" {
            return;
        }
        let time = text(v, "timestamp");
        if let Some(applet) = v.pointer("/detail/applet").and_then(Value::as_str).filter(|a| !a.is_empty())
            && text(v, "layer") == "kernel"
        {
            self.applets.entry(applet.to_string()).or_default().add(time);
            return;
        }
        match (text(v, "layer"), text(v, "event")) {
            ("kernel", "exec") if text(v, "executable").starts_with('/') => {
                self.files.entry(text(v, "executable").to_string()).or_default().add(time);
            }
            (_, "net") if !text(v, "destination").is_empty() => {
                let destination = text(v, "destination").to_string();
                let entry = match self.answered.get(&destination) {
                    Some(name) => self.domains.entry(name.clone()).or_default(),
                    None => self.addresses.entry(destination).or_default(),
                };
                if let Some(port) = v.get("port").and_then(Value::as_u64).and_then(|p| u16::try_from(p).ok())
                {
                    entry.ports.insert(port);
                }
                entry.protocols.insert(text(v, "protocol").to_string());
                entry.seen.add(time);
            }
            (_, event) if event.starts_with("dns") && !text(v, "domain").is_empty() => {
                self.domains.entry(text(v, "domain").to_string()).or_default().seen.add(time);
            }
            ("shell", _) if !text(v, "executable").is_empty() => {
                let program = Path::new(text(v, "executable"))
                    .file_name()
                    .map_or_else(String::new, |n| n.to_string_lossy().into_owned());
                if !program.is_empty() {
                    self.programs.entry(program).or_default().add(time);
                }
            }
            _ => {}
        }
    }

    /// The entries that allow what was observed; ids are `learned_…`, never one `taken` already.
    /// With `expires` (RFC 3339), exec and network entries lapse then.
    #[must_use]
    pub fn additions(
        &self,
        dir_threshold: usize,
        taken: &BTreeSet<String>,
        expires: Option<&str>,
    ) -> Additions {
        let mut ids = Ids { taken: taken.clone() };
        let lapse = expires.map(|at| format!(", expires: \"{at}\"")).unwrap_or_default();
        let entry = |id: String, fields: String, comments: Vec<String>| Item {
            mapping: format!("{{ id: {id}, {fields} }}"),
            id,
            comments,
        };
        let mut additions = Additions::default();
        let mut by_dir: BTreeMap<&Path, Vec<(&String, &Seen)>> = BTreeMap::new();
        for (file, seen) in &self.files {
            by_dir.entry(Path::new(file).parent().unwrap_or(Path::new("/"))).or_default().push((file, seen));
        }
        for (dir, files) in by_dir {
            if files.len() >= dir_threshold.max(1) && only_root_writes(dir) {
                let mut seen = Seen::default();
                for (_, s) in &files {
                    seen.merge(s);
                }
                let names: Vec<&str> = files.iter().map(|(f, _)| f.rsplit('/').next().unwrap_or(f)).collect();
                let dir = dir.to_string_lossy();
                additions.exec.push(entry(
                    ids.make("exec", &dir),
                    format!("dir: {}{lapse}", scalar(&dir)),
                    vec![seen.comment(), format!("{} files: {}", files.len(), names.join(", "))],
                ));
            } else {
                for (file, seen) in files {
                    // A file the log names that is not here now (learned on another machine, or
                    // removed since): kept, as an entry that applies once it is installed.
                    let mut comments = vec![seen.comment()];
                    let optional = if Path::new(file).exists() {
                        ""
                    } else {
                        comments.push("not on this machine now: applies once it is installed".into());
                        ", optional: true"
                    };
                    additions.exec.push(entry(
                        ids.make("exec", file),
                        format!("path: {}{optional}{lapse}", scalar(file)),
                        comments,
                    ));
                }
            }
        }
        // An applet is allowed by its name (the binary itself was learned from its own record):
        // `optional`, since no program of that name need exist in `exec.path`.
        for (applet, seen) in &self.applets {
            additions.exec.push(entry(
                ids.make("exec", applet),
                format!("name: {}, optional: true{lapse}", scalar(applet)),
                vec![seen.comment(), "an applet of a multi-call binary, allowed by its name".into()],
            ));
        }
        for (name, destination) in &self.domains {
            additions.network.push(entry(
                ids.make("net", name),
                format!("domain: {}{}{lapse}", scalar(name), ports_and_protocol(destination)),
                vec![destination.seen.comment()],
            ));
        }
        for (address, destination) in &self.addresses {
            let prefix = if address.contains(':') { 128 } else { 32 };
            additions.network.push(entry(
                ids.make("net", address),
                format!(
                    "cidr: {}{}{lapse}",
                    scalar(&format!("{address}/{prefix}")),
                    ports_and_protocol(destination)
                ),
                vec![destination.seen.comment()],
            ));
        }
        // Shell rules never lapse (the shell reads them by position): `approve` refuses that.
        for (program, seen) in &self.programs {
            let pattern = serde_json::Value::String(format!("^{}$", regex::escape(program)));
            additions.rules.push(entry(
                ids.make("shell", program),
                format!("match: {{ executable: {pattern} }}, effect: allow, reason: \"learned from the audit log\""),
                vec![seen.comment()],
            ));
        }
        additions
    }
}

/// `, ports: [...]` and `, protocol: …` for what was seen (nothing for a name no connection to
/// which the log shows: all its ports, as the policy's own default for a `domain:`).
fn ports_and_protocol(destination: &Destination) -> String {
    let mut out = String::new();
    if !destination.ports.is_empty() {
        let ports: Vec<String> = destination.ports.iter().map(u16::to_string).collect();
        let _ = write!(out, ", ports: [{}]", ports.join(", "));
    }
    let protocols: Vec<&String> = destination.protocols.iter().filter(|p| !p.is_empty()).collect();
    match protocols.as_slice() {
        [one] if one.as_str() == "udp" => out.push_str(", protocol: udp"),
        [_, _, ..] => out.push_str(", protocol: any"),
        _ => {}
    }
    out
}

/// Whether only root can change `dir` or anything on the way to it (owned by root and writable
/// by no group or other user; an ancestor with the sticky bit, like `/tmp`, cannot have root's
/// directories in it renamed either).
fn only_root_writes(dir: &Path) -> bool {
    let mut first = true;
    for ancestor in dir.ancestors() {
        let Ok(meta) = std::fs::metadata(ancestor) else { return false };
        let writable_by_others = meta.mode() & 0o022 != 0;
        let sticky = meta.mode() & 0o1000 != 0;
        if meta.uid() != 0 || (writable_by_others && (first || !sticky)) {
            return false;
        }
        first = false;
    }
    true
}

/// Makes `learned_<kind>_<slug>` ids, unique among the policy's and each other.
struct Ids {
    taken: BTreeSet<String>,
}

impl Ids {
    fn make(&mut self, kind: &str, what: &str) -> String {
        let slug: String = what
            .chars()
            .map(|c| if c.is_ascii_alphanumeric() { c.to_ascii_lowercase() } else { '_' })
            .collect::<String>()
            .split('_')
            .filter(|s| !s.is_empty())
            .collect::<Vec<_>>()
            .join("_");
        let slug: String = slug.chars().rev().take(40).collect::<Vec<_>>().into_iter().rev().collect();
        let base = format!("learned_{kind}_{}", slug.trim_start_matches('_'));
        let mut id = base.clone();
        let mut n = 2;
        while self.taken.contains(&id) {
            id = format!("{base}_{n}");
            n += 1;
        }
        self.taken.insert(id.clone());
        id
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entries(lines: &[&str]) -> Vec<Entry> {
        lines.iter().map(|l| Entry::parse(l).expect("a record")).collect()
    }

    #[test]
    fn learns_only_what_a_default_refused() {
        let log = entries(&[
            r#"{"timestamp":"2026-12-07T10:00:00Z","layer":"kernel","event":"exec","decision":"auditonly","rule_id":"default","executable":"/opt/tool/bin/a"}"#,
            r#"{"timestamp":"2026-12-07T10:05:00Z","layer":"kernel","event":"exec","decision":"auditonly","rule_id":"default","executable":"/opt/tool/bin/a"}"#,
            r#"{"timestamp":"2026-12-07T10:01:00Z","layer":"kernel","event":"exec","decision":"denied","rule_id":"no_su","executable":"/usr/bin/su"}"#,
            r#"{"timestamp":"2026-12-07T10:01:00Z","layer":"kernel","event":"exec","decision":"allowed","rule_id":"usr_bin","executable":"/usr/bin/ls"}"#,
            r#"{"timestamp":"2026-12-07T10:02:00Z","layer":"dns","event":"dns","decision":"auditonly","rule_id":"default","domain":"api.example.com","detail":{"addresses":[{"address":"10.9.9.9","ttl_s":60}]}}"#,
            r#"{"timestamp":"2026-12-07T10:02:01Z","layer":"kernel","event":"net","decision":"auditonly","rule_id":"default","destination":"10.9.9.9","port":443,"protocol":"tcp"}"#,
            r#"{"timestamp":"2026-12-07T10:03:00Z","layer":"kernel","event":"net","decision":"denied","rule_id":"default","destination":"10.1.2.3","port":53,"protocol":"udp"}"#,
            r#"{"timestamp":"2026-12-07T10:04:00Z","layer":"shell","event":"command","decision":"denied","rule_id":"default","executable":"git","command":"git status"}"#,
            r#"{"timestamp":"2026-12-07T10:04:00Z","layer":"shell","event":"command","decision":"denied","rule_id":"block_rm","executable":"rm","command":"rm -rf /"}"#,
        ]);
        let refs: Vec<&Entry> = log.iter().collect();
        let additions = Observed::of(&refs).additions(3, &BTreeSet::new(), None);
        let mappings = |items: &[Item]| items.iter().map(|i| i.mapping.clone()).collect::<Vec<_>>();
        assert_eq!(
            mappings(&additions.exec),
            ["{ id: learned_exec_opt_tool_bin_a, path: /opt/tool/bin/a, optional: true }"]
        );
        assert_eq!(
            additions.exec[0].comments,
            [
                "learned: seen 2 times, 2026-12-07T10:00:00Z … 2026-12-07T10:05:00Z",
                "not on this machine now: applies once it is installed"
            ]
        );
        assert_eq!(
            mappings(&additions.network),
            [
                "{ id: learned_net_api_example_com, domain: api.example.com, ports: [443] }",
                "{ id: learned_net_10_1_2_3, cidr: 10.1.2.3/32, ports: [53], protocol: udp }"
            ]
        );
        assert_eq!(
            mappings(&additions.rules),
            [
                r#"{ id: learned_shell_git, match: { executable: "^git$" }, effect: allow, reason: "learned from the audit log" }"#
            ]
        );
    }

    #[test]
    fn a_refused_applet_is_learned_by_its_name() {
        let lines = [
            r#"{"timestamp":"2026-12-07T10:00:00Z","layer":"kernel","event":"exec","decision":"auditonly","rule_id":"default","executable":"/bin/busybox","detail":{"applet":"sh","applet_arg":0}}"#,
        ];
        let log = entries(&lines);
        let refs: Vec<&Entry> = log.iter().collect();
        let additions = Observed::of(&refs).additions(3, &BTreeSet::new(), None);
        let mappings: Vec<&str> = additions.exec.iter().map(|i| i.mapping.as_str()).collect();
        assert_eq!(mappings, ["{ id: learned_exec_sh, name: sh, optional: true }"]);
    }

    #[test]
    fn a_directory_only_root_can_change_becomes_one_entry() {
        let lines: Vec<String> = ["ls", "cat", "cp"]
            .iter()
            .map(|p| format!(r#"{{"timestamp":"2026-12-07T10:00:00Z","layer":"kernel","event":"exec","decision":"auditonly","rule_id":"default","executable":"/usr/bin/{p}"}}"#))
            .collect();
        let log = entries(&lines.iter().map(String::as_str).collect::<Vec<_>>());
        let refs: Vec<&Entry> = log.iter().collect();
        let additions = Observed::of(&refs).additions(3, &BTreeSet::new(), None);
        assert_eq!(additions.exec.len(), 1, "{additions:?}");
        assert_eq!(additions.exec[0].mapping, "{ id: learned_exec_usr_bin, dir: /usr/bin }");
        // /tmp is writable by everyone: its files stay single entries.
        let lines: Vec<String> = ["a", "b", "c"]
            .iter()
            .map(|p| format!(r#"{{"timestamp":"2026-12-07T10:00:00Z","layer":"kernel","event":"exec","decision":"auditonly","rule_id":"default","executable":"/tmp/{p}"}}"#))
            .collect();
        let log = entries(&lines.iter().map(String::as_str).collect::<Vec<_>>());
        let refs: Vec<&Entry> = log.iter().collect();
        assert_eq!(Observed::of(&refs).additions(3, &BTreeSet::new(), None).exec.len(), 3);
    }

    #[test]
    fn the_learned_policy_checks_and_keeps_the_base() {
        let base = "version: \"2.0\"\nmode: audit\ndefault: deny\n# shell rules\nrules:\n  - id: block_rm\n    match: { executable: \"^rm$\" }\n    effect: deny\nexec:\n  default: deny\n  deny:\n    - { id: no_su, path: /usr/bin/su }\n";
        let log = entries(&[
            r#"{"timestamp":"2026-12-07T10:00:00Z","layer":"kernel","event":"exec","decision":"auditonly","rule_id":"default","executable":"/usr/bin/git"}"#,
            r#"{"timestamp":"2026-12-07T10:04:00Z","layer":"shell","event":"command","decision":"auditonly","rule_id":"default","executable":"git","command":"git status"}"#,
            r#"{"timestamp":"2026-12-07T10:04:00Z","layer":"kernel","event":"net","decision":"auditonly","rule_id":"default","destination":"fd00::1","port":443,"protocol":"tcp"}"#,
        ]);
        let refs: Vec<&Entry> = log.iter().collect();
        let (learned, added) = learn(Path::new("base.yaml"), base, &refs, 3).expect("learn");
        assert_eq!((added.exec.len(), added.network.len(), added.rules.len()), (1, 1, 1));
        assert!(learned.starts_with(base.split("exec:").next().unwrap_or_default()), "{learned}");
        assert!(
            learned.contains("    effect: deny\n  # learned: seen once"),
            "after the base's rules: {learned}"
        );
        assert!(learned.contains("cidr: \"fd00::1/128\", ports: [443]"), "{learned}");
        let policy = Policy::parse(Path::new("learned.yaml"), &learned).expect("it checks");
        assert_eq!(policy.model.rules.len(), 2);
    }

    #[test]
    fn ids_never_collide() {
        let mut ids = Ids { taken: BTreeSet::from(["learned_exec_x".to_string()]) };
        assert_eq!(ids.make("exec", "/x"), "learned_exec_x_2");
        assert_eq!(ids.make("exec", "x"), "learned_exec_x_3");
    }
}
