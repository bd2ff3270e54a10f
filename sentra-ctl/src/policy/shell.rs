//! The shell layer's rule matcher: the original Sentra rules (`match {executable, args_pattern,
//! identity}`, `effect`, `reason`), first match wins, `default` when nothing matches.
//!
//! `sentra-shell` starts once per command, so loading must be cheap and evaluation flat as rules grow:
//! - executable patterns that are exact literal alternations (`^sudo$`, `^(rm|rmdir)$`, `^g\+\+$`),
//!   recognised by a scan of the pattern text, go into a hash table from name to rule indices, so most
//!   rules cost nothing per command;
//! - the other executable patterns share one `RegexSet`, compiled at the first evaluation that needs it;
//! - catch-all rules (arguments pattern, no executable pattern) are indexed by the literals their
//!   pattern requires ([`super::required`]): one Aho-Corasick search of the arguments finds those that
//!   could match; the few without such literals share one set;
//! - each rule's regexes are compiled only when that rule is first a candidate. Parsing every regex
//!   at load (even without compiling) cost more than everything else in `sentra-shell`, so full
//!   validation is [`ShellMatcher::validate`], for `sentra --check` and policy checks; a regex that
//!   fails to compile later fails closed: a deny rule matches, an allow rule does not;
//! - patterns are compiled by [`compile`]: the `regex` crate's engine and syntax, without the engines
//!   that only pay off over many searches (see there).

use std::{collections::HashMap, sync::OnceLock};

use aho_corasick::{AhoCorasick, AhoCorasickKind};
use regex_automata::meta::{self, BuildError, Regex};

use super::{
    Policy, PolicyError,
    model::{Effect, Evaluation, Mode, Rule},
};

/// One rule, with its regexes compiled on first use.
#[derive(Debug)]
struct CompiledRule {
    id: String,
    reason: Option<String>,
    effect: Effect,
    executable: Option<LazyRegex>,
    args: Option<LazyRegex>,
    identity: Option<LazyRegex>,
}

/// A validated pattern compiled on first use.
#[derive(Debug)]
struct LazyRegex {
    pattern: String,
    compiled: OnceLock<Option<Regex>>,
}

impl LazyRegex {
    fn new(pattern: &str) -> Self {
        Self { pattern: pattern.to_string(), compiled: OnceLock::new() }
    }

    /// Whether `text` matches; a pattern that fails to compile gives `broken` (fail closed: true for
    /// deny rules, false for allow rules).
    fn is_match(&self, text: &str, broken: bool) -> bool {
        self.compiled
            .get_or_init(|| compile(&[&self.pattern]).ok())
            .as_ref()
            .map_or(broken, |re| re.is_match(text))
    }
}

/// What a command looks like to the rules.
#[derive(Debug, Clone, Copy)]
pub struct Query<'a> {
    /// Basename of the program.
    pub executable: &'a str,
    /// The arguments joined by spaces.
    pub args: &'a str,
    /// False when some argument's value is only known after expansion (`$X`, `$(…)`, appended by
    /// `xargs`…): a deny rule with both an executable and an `args_pattern` is then assumed to match,
    /// an allow rule not to; `args` then holds such arguments as written.
    pub args_known: bool,
    pub identity: &'a str,
}

/// The rule (or default) that decided a query.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Verdict<'m> {
    pub effect: Effect,
    /// `None` when the default decided.
    pub rule_id: Option<&'m str>,
    pub reason: Option<&'m str>,
    /// The rule matched only because the arguments were not known (see [`Query::args_known`]).
    pub assumed_args: bool,
}

/// The compiled shell rules of a policy.
#[derive(Debug)]
pub struct ShellMatcher {
    rules: Vec<CompiledRule>,
    /// Exact executable names to the rules (ascending) whose pattern is a literal alternation.
    literal: HashMap<String, Vec<u32>>,
    /// Rules whose executable pattern starts with an anchored literal (`^tool[0-9]*$`), by that prefix:
    /// candidates when the executable starts with it, then checked with their own regex.
    prefixed: HashMap<String, Vec<u32>>,
    /// The lengths (bytes) of the keys of `prefixed`, ascending: only prefixes of these lengths are
    /// looked up, not every prefix of the executable.
    prefix_lengths: Vec<usize>,
    /// Rules whose executable pattern is another regex, in order; `general_set` is over their patterns.
    general: Vec<u32>,
    general_set: OnceLock<Option<Regex>>,
    /// Rules without an executable or an arguments pattern: candidates for every command.
    always: Vec<u32>,
    /// Rules without an executable pattern but with an arguments pattern (catch-alls), in order:
    /// candidates when `args_index` says their pattern could match. Evaluating them one by one made
    /// every command's cost grow with their number.
    by_args: Vec<u32>,
    args_index: OnceLock<ArgsIndex>,
    default: Effect,
    mode: Mode,
    evaluation: Evaluation,
}

impl ShellMatcher {
    /// Indexes the shell rules of `policy`. Regexes are compiled when a command first needs them;
    /// [`Self::validate`] compiles them all, naming the rule of an invalid one.
    ///
    /// # Errors
    /// There are more rules than fit in a `u32`.
    pub fn new(policy: &Policy) -> Result<Self, PolicyError> {
        let model = &policy.model;
        let mut matcher = Self {
            rules: Vec::with_capacity(model.rules.len()),
            literal: HashMap::new(),
            prefixed: HashMap::new(),
            prefix_lengths: Vec::new(),
            general: Vec::new(),
            general_set: OnceLock::new(),
            always: Vec::new(),
            by_args: Vec::new(),
            args_index: OnceLock::new(),
            // An absent default denies: a policy that forgets it must not let everything through.
            default: model.default.unwrap_or(Effect::Deny),
            mode: model.mode,
            evaluation: model.evaluation,
        };
        for rule in &model.rules {
            matcher.push(policy, rule)?;
        }
        Ok(matcher)
    }

    fn push(&mut self, policy: &Policy, rule: &Rule) -> Result<(), PolicyError> {
        let index = u32::try_from(self.rules.len()).map_err(|_| policy.error("too many rules"))?;
        match rule
            .matcher
            .executable
            .as_ref()
            .map(|_| policy.rule_names.get(index as usize).cloned().flatten())
        {
            None if rule.matcher.args_pattern.is_some() => self.by_args.push(index),
            None => self.always.push(index),
            Some(Some(names)) => {
                for name in names {
                    let entry = self.literal.entry(name).or_default();
                    if entry.last() != Some(&index) {
                        entry.push(index);
                    }
                }
            }
            Some(None) => match rule.matcher.executable.as_deref().and_then(anchored_prefix) {
                Some(prefix) => {
                    if let Err(at) = self.prefix_lengths.binary_search(&prefix.len()) {
                        self.prefix_lengths.insert(at, prefix.len());
                    }
                    self.prefixed.entry(prefix).or_default().push(index);
                }
                None => self.general.push(index),
            },
        }
        self.rules.push(CompiledRule {
            id: rule.id.clone(),
            reason: rule.reason.clone(),
            effect: rule.effect,
            // Literal rules never consult their executable regex.
            executable: rule.matcher.executable.as_deref().map(LazyRegex::new),
            args: rule.matcher.args_pattern.as_deref().map(LazyRegex::new),
            identity: rule.matcher.identity.as_deref().map(LazyRegex::new),
        });
        Ok(())
    }

    /// Compiles every regex of `policy`'s rules, naming the rule of the first that is invalid.
    ///
    /// # Errors
    /// A regex does not compile.
    pub fn validate(policy: &Policy) -> Result<(), PolicyError> {
        for (i, rule) in policy.model.rules.iter().enumerate() {
            let fields = [
                ("executable", &rule.matcher.executable),
                ("args_pattern", &rule.matcher.args_pattern),
                ("identity", &rule.matcher.identity),
            ];
            for (field, pattern) in fields {
                if let Some(pattern) = pattern
                    && let Err(err) = compile(&[pattern])
                {
                    let why = err.syntax_error().map_or_else(|| err.to_string(), ToString::to_string);
                    return Err(policy.error_at(
                        format!("rules[{i}].match.{field}"),
                        format!("rule `{}`: invalid {field} regex {pattern:?}: {why}", rule.id),
                    ));
                }
            }
        }
        Ok(())
    }

    #[must_use]
    pub const fn mode(&self) -> Mode {
        self.mode
    }

    #[must_use]
    pub const fn default_effect(&self) -> Effect {
        self.default
    }

    #[must_use]
    pub fn rule_count(&self) -> usize {
        self.rules.len()
    }

    /// Rules whose executable pattern could match `executable`, in policy order, with the catch-all
    /// rules whose arguments pattern could match `args`.
    fn candidates(&self, executable: &str, args: &str) -> Vec<u32> {
        let mut out: Vec<u32> = self.literal.get(executable).cloned().unwrap_or_default();
        for &length in &self.prefix_lengths {
            let Some(rules) = executable.get(..length).and_then(|prefix| self.prefixed.get(prefix)) else {
                continue;
            };
            out.extend(rules.iter().copied().filter(|&i| {
                self.rules.get(i as usize).is_some_and(|rule| {
                    rule.executable
                        .as_ref()
                        .is_some_and(|re| re.is_match(executable, rule.effect == Effect::Deny))
                })
            }));
        }
        if !self.general.is_empty() {
            self.set_matches(
                &self.general,
                &self.general_set,
                executable,
                |rule| rule.executable.as_ref(),
                &mut out,
            );
        }
        if !self.by_args.is_empty() {
            let index = self.args_index.get_or_init(|| ArgsIndex::new(&self.by_args, &self.rules));
            // Unverified: `evaluate` matches each candidate's own pattern, in policy order.
            index.candidates(args, &mut out);
            if !index.unindexed.is_empty() {
                self.set_matches(
                    &index.unindexed,
                    &index.unindexed_set,
                    args,
                    |rule| rule.args.as_ref(),
                    &mut out,
                );
            }
        }
        out.extend_from_slice(&self.always);
        out.sort_unstable();
        out.dedup();
        out
    }

    /// Adds to `out` the rules of `rules` whose pattern (`field`) matches `text`, found with one search
    /// of `set`, the patterns compiled together at first use. A set that does not compile (a broken or
    /// too large pattern) falls back to each rule's own regex, which fails closed.
    fn set_matches(
        &self,
        rules: &[u32],
        set: &OnceLock<Option<Regex>>,
        text: &str,
        field: impl Fn(&CompiledRule) -> Option<&LazyRegex>,
        out: &mut Vec<u32>,
    ) {
        let set = set.get_or_init(|| {
            let patterns: Vec<&str> = rules
                .iter()
                .filter_map(|&i| self.rules.get(i as usize).and_then(&field).map(|re| re.pattern.as_str()))
                .collect();
            compile(&patterns).ok()
        });
        match set {
            Some(set) => {
                let mut matched = regex_automata::PatternSet::new(set.pattern_len());
                set.which_overlapping_matches(&regex_automata::Input::new(text), &mut matched);
                out.extend(matched.iter().filter_map(|id| rules.get(id.as_usize())));
            }
            None => out.extend(rules.iter().copied().filter(|&i| {
                self.rules.get(i as usize).is_some_and(|rule| {
                    field(rule).is_some_and(|re| re.is_match(text, rule.effect == Effect::Deny))
                })
            })),
        }
    }

    /// The first rule matching `query` (with `evaluation: deny_overrides`, the first matching deny
    /// rule, else the first matching allow rule), else the default.
    #[must_use]
    pub fn evaluate(&self, query: &Query<'_>) -> Verdict<'_> {
        let mut allowed = None;
        for index in self.candidates(query.executable, query.args) {
            let Some(rule) = self.rules.get(index as usize) else {
                continue;
            };
            let deny = rule.effect == Effect::Deny;
            if rule.identity.as_ref().is_some_and(|re| !re.is_match(query.identity, deny)) {
                continue;
            }
            let mut assumed_args = false;
            if let Some(args) = &rule.args
                && !args.is_match(query.args, deny)
            {
                // A catch-all rule (no executable pattern) is matched on the arguments as written:
                // assuming it matches would deny every line with a `$VAR` in it.
                if query.args_known || rule.effect == Effect::Allow || rule.executable.is_none() {
                    continue;
                }
                assumed_args = true;
            }
            let verdict = Verdict {
                effect: rule.effect,
                rule_id: Some(&rule.id),
                reason: rule.reason.as_deref(),
                assumed_args,
            };
            if deny || self.evaluation == Evaluation::FirstMatch {
                return verdict;
            }
            allowed.get_or_insert(verdict);
        }
        allowed.unwrap_or(Verdict { effect: self.default, rule_id: None, reason: None, assumed_args: false })
    }

    /// Whether some rule names `executable` by its executable pattern (not a catch-all). Wrappers such
    /// as `env` or `timeout` are judged on the program they run unless the policy names them.
    #[must_use]
    pub fn names(&self, executable: &str) -> bool {
        self.candidates(executable, "")
            .iter()
            .any(|&i| self.rules.get(i as usize).is_some_and(|rule| rule.executable.is_some()))
    }
}

/// The catch-all rules' arguments patterns, indexed by the literals each requires
/// ([`super::required`]): one substring search of the arguments finds the rules that could match.
/// Searching every catch-all as one regex set costs in proportion to their number; this does not.
#[derive(Debug)]
struct ArgsIndex {
    /// Finds each required literal in the arguments; `None` when no rule has one.
    finder: Option<AhoCorasick>,
    /// For each literal of `finder`, the rules (ascending) that require it.
    owners: Vec<Vec<u32>>,
    /// Rules with no known required literal (`.*`, `\w+`…, or a pattern that does not parse), in
    /// order, searched as one set.
    unindexed: Vec<u32>,
    unindexed_set: OnceLock<Option<Regex>>,
}

impl ArgsIndex {
    fn new(by_args: &[u32], rules: &[CompiledRule]) -> Self {
        let mut literals: HashMap<Vec<u8>, Vec<u32>> = HashMap::new();
        let mut unindexed = Vec::new();
        for &index in by_args {
            let pattern = rules.get(index as usize).and_then(|rule| rule.args.as_ref());
            match pattern.and_then(|re| super::required::required_literals(&re.pattern)) {
                Some(set) => {
                    for literal in set {
                        literals.entry(literal).or_default().push(index);
                    }
                }
                None => unindexed.push(index),
            }
        }
        let (patterns, owners): (Vec<Vec<u8>>, Vec<Vec<u32>>) = literals.into_iter().unzip();
        // A contiguous NFA builds fastest; the texts searched are one command's arguments.
        let finder = if patterns.is_empty() {
            None
        } else {
            match AhoCorasick::builder().kind(Some(AhoCorasickKind::ContiguousNFA)).build(&patterns) {
                Ok(finder) => Some(finder),
                Err(_) => {
                    // Not indexable after all: every catch-all is searched.
                    return Self {
                        finder: None,
                        owners: Vec::new(),
                        unindexed: by_args.to_vec(),
                        unindexed_set: OnceLock::new(),
                    };
                }
            }
        };
        Self { finder, owners, unindexed, unindexed_set: OnceLock::new() }
    }

    /// Adds the rules one of whose required literals `args` contains.
    fn candidates(&self, args: &str, out: &mut Vec<u32>) {
        let Some(finder) = &self.finder else { return };
        for found in finder.find_overlapping_iter(args) {
            if let Some(rules) = self.owners.get(found.pattern().as_usize()) {
                out.extend_from_slice(rules);
            }
        }
    }
}

/// Compiles rule patterns (several make one set) with the syntax and semantics of the `regex` crate
/// (Unicode, UTF-8, leftmost-first; `regex::Regex` is this engine) and its size limits.
///
/// Without a fully compiled DFA and without a literal prefilter: `sentra-shell` is one process per
/// command, so each pattern is searched about once, over a short text: building those two costs far
/// more than the search they would speed up, while the lazy DFA and the one-pass and backtracking
/// engines that remain search such texts at once.
///
/// # Errors
/// A pattern is invalid or too large.
pub fn compile(patterns: &[&str]) -> Result<Regex, Box<BuildError>> {
    let config = meta::Config::new()
        .dfa(false)
        .auto_prefilter(false)
        .nfa_size_limit(Some(10 << 20))
        .hybrid_cache_capacity(2 << 20);
    let built = if let [pattern] = patterns {
        meta::Builder::new().configure(config).build(pattern)
    } else {
        meta::Builder::new().configure(config.match_kind(regex_automata::MatchKind::All)).build_many(patterns)
    };
    built.map_err(Box::new)
}

/// The literal text every match of `pattern` starts with when it is `^LITERAL…` and has no top-level
/// alternation; `None` otherwise.
fn anchored_prefix(pattern: &str) -> Option<String> {
    let body = pattern.strip_prefix('^')?;
    // A top-level `|` would make the anchor apply to one alternative only.
    let (mut depth, mut escaped, mut class) = (0_i32, false, false);
    for c in body.chars() {
        match (escaped, class, c) {
            (true, _, _) => escaped = false,
            (false, _, '\\') => escaped = true,
            (false, true, ']') => class = false,
            (false, false, '[') => class = true,
            (false, false, '(') => depth += 1,
            (false, false, ')') => depth -= 1,
            (false, false, '|') if depth == 0 => return None,
            _ => {}
        }
    }
    let mut prefix = String::new();
    let mut chars = body.chars().peekable();
    while let Some(&c) = chars.peek() {
        if !(c.is_ascii_alphanumeric() || c == '_' || c == '-') {
            // A quantifier makes the last literal character optional or repeated.
            if matches!(c, '?' | '*' | '{') {
                prefix.pop();
            }
            break;
        }
        prefix.push(c);
        chars.next();
    }
    (!prefix.is_empty()).then_some(prefix)
}

#[cfg(test)]
mod tests {
    use std::{fmt::Write as _, path::Path};

    use super::*;

    fn matcher(rules: &str) -> ShellMatcher {
        let text = format!("version: \"2.0\"\ndefault: deny\nrules:\n{rules}");
        let policy = Policy::parse(Path::new("p.yaml"), &text).expect("valid policy");
        ShellMatcher::new(&policy).expect("compiles")
    }

    fn query<'a>(executable: &'a str, args: &'a str) -> Query<'a> {
        Query { executable, args, args_known: true, identity: "agent" }
    }

    /// First match wins by default; under `evaluation: deny_overrides` any matching deny decides.
    #[test]
    fn deny_overrides_lets_any_matching_deny_decide() {
        let rules = "  - {id: read, match: {executable: '^cat$'}, effect: allow}\n  - {id: env, match: {args_pattern: '\\.env'}, effect: deny}\n  - {id: no_rm, match: {executable: '^rm$', args_pattern: '-rf'}, effect: deny}\n  - {id: rm, match: {executable: '^rm$'}, effect: allow}\n";
        let first = matcher(rules);
        assert_eq!(first.evaluate(&query("cat", ".env")).rule_id, Some("read"));
        let text = format!("version: \"2.0\"\ndefault: deny\nevaluation: deny_overrides\nrules:\n{rules}");
        let policy = Policy::parse(Path::new("p.yaml"), &text).expect("valid policy");
        let overriding = ShellMatcher::new(&policy).expect("compiles");
        let verdict = overriding.evaluate(&query("cat", ".env"));
        assert_eq!((verdict.rule_id, verdict.effect), (Some("env"), Effect::Deny));
        let verdict = overriding.evaluate(&query("cat", "README"));
        assert_eq!(
            (verdict.rule_id, verdict.effect),
            (Some("read"), Effect::Allow),
            "the first allow names it"
        );
        assert_eq!(overriding.evaluate(&query("rm", "x")).rule_id, Some("rm"));
        assert_eq!(overriding.evaluate(&query("rm", "-rf x")).rule_id, Some("no_rm"));
        assert_eq!(overriding.evaluate(&query("ls", "")).effect, Effect::Deny, "the default still applies");
        let typo = format!("version: \"2.0\"\nevaluation: deny_first\nrules:\n{rules}");
        let err = Policy::parse(Path::new("p.yaml"), &typo).expect_err("unknown evaluation");
        assert!(err.to_string().starts_with("p.yaml:2:13: "), "{err}");
    }

    #[test]
    fn anchored_prefixes() {
        assert_eq!(anchored_prefix("^python[0-9.]*$").as_deref(), Some("python"));
        assert_eq!(anchored_prefix("^mkfs(\\..+)?$").as_deref(), Some("mkfs"));
        assert_eq!(anchored_prefix("^ab?c$").as_deref(), Some("a"));
        assert_eq!(anchored_prefix("^a|b$"), None);
        assert_eq!(anchored_prefix("^(a|b)c$"), None);
        assert_eq!(anchored_prefix("python"), None);
    }

    #[test]
    fn first_match_wins_and_default_applies() {
        let m = matcher(
            "  - {id: no_force, match: {executable: '^git$', args_pattern: 'push.*--force'}, effect: deny, reason: force}\n  - {id: git, match: {executable: '^git$'}, effect: allow}\n  - {id: py, match: {executable: '^python[0-9.]*$'}, effect: allow}\n",
        );
        assert_eq!(m.evaluate(&query("git", "push --force origin")).rule_id, Some("no_force"));
        assert_eq!(m.evaluate(&query("git", "status")).rule_id, Some("git"));
        assert_eq!(m.evaluate(&query("python3.12", "-V")).rule_id, Some("py"));
        let other = m.evaluate(&query("curl", "x"));
        assert_eq!((other.effect, other.rule_id), (Effect::Deny, None));
    }

    #[test]
    fn unknown_arguments_trigger_deny_rules_but_not_allow_rules() {
        let m = matcher(
            "  - {id: no_rf, match: {executable: '^rm$', args_pattern: '-rf /'}, effect: deny}\n  - {id: rm_tmp, match: {executable: '^rm$', args_pattern: '^/tmp/'}, effect: allow}\n",
        );
        let unknown = Query { args_known: false, ..query("rm", "$X") };
        let verdict = m.evaluate(&unknown);
        assert_eq!((verdict.rule_id, verdict.assumed_args), (Some("no_rf"), true));
        let m =
            matcher("  - {id: rm_tmp, match: {executable: '^rm$', args_pattern: '^/tmp/'}, effect: allow}\n");
        assert_eq!(m.evaluate(&unknown).rule_id, None);
    }

    #[test]
    fn identity_and_catch_all_rules() {
        let m = matcher(
            "  - {id: admin, match: {identity: '^admin$'}, effect: allow}\n  - {id: ls, match: {executable: '^ls$'}, effect: allow}\n",
        );
        assert_eq!(m.evaluate(&Query { identity: "admin", ..query("anything", "") }).rule_id, Some("admin"));
        assert_eq!(m.evaluate(&query("ls", "")).rule_id, Some("ls"));
        assert_eq!(m.evaluate(&query("cat", "")).rule_id, None);
        assert!(m.names("ls"));
        assert!(!m.names("cat"), "a catch-all rule does not name a program");
    }

    #[test]
    fn catch_all_argument_rules_are_searched_together_in_policy_order() {
        let m = matcher(
            "  - {id: keys, match: {args_pattern: '\\.ssh/id_'}, effect: deny}\n  - {id: cat, match: {executable: '^cat$'}, effect: allow}\n  - {id: shadow, match: {args_pattern: '/etc/shadow'}, effect: deny}\n  - {id: any_tmp, match: {args_pattern: '^/tmp/'}, effect: allow}\n",
        );
        assert_eq!(m.evaluate(&query("cat", "/home/a/.ssh/id_rsa")).rule_id, Some("keys"));
        assert_eq!(m.evaluate(&query("cat", "/etc/shadow")).rule_id, Some("cat"), "the earlier rule wins");
        assert_eq!(m.evaluate(&query("less", "/etc/shadow")).rule_id, Some("shadow"));
        assert_eq!(m.evaluate(&query("less", "/tmp/x /etc/shadow")).rule_id, Some("shadow"));
        assert_eq!(m.evaluate(&query("less", "/tmp/x")).rule_id, Some("any_tmp"));
        assert_eq!(m.evaluate(&query("less", "/var/x")).rule_id, None);
        assert!(!m.names("less"), "argument rules do not name programs");
        // One broken pattern: the set does not compile, each rule decides alone, the broken deny
        // rule matches everything.
        let m = matcher(
            "  - {id: shadow, match: {args_pattern: '/etc/shadow'}, effect: deny}\n  - {id: broken, match: {args_pattern: '(unclosed'}, effect: deny}\n  - {id: ls, match: {executable: '^ls$'}, effect: allow}\n",
        );
        assert_eq!(m.evaluate(&query("ls", "/etc/shadow")).rule_id, Some("shadow"));
        assert_eq!(m.evaluate(&query("ls", "-la")).rule_id, Some("broken"));
    }

    /// The indexed catch-alls decide exactly as trying every rule's regex in order does, over
    /// patterns with and without required literals and texts made of their pieces.
    #[test]
    fn indexed_catch_alls_decide_as_trying_every_rule_in_order() {
        let patterns = [
            r"(^|\s)--secret-1(\s|$)",
            r"\.env\b",
            r"rm\s+-rf\s+/",
            r"/etc/(shadow|passwd)",
            r"(?i)token=",
            r"[xyz]{2}",
            r"\w+@\w+\.com",
            r"^-",
            r".*",
            r"(a|b*)c",
            r"é+t",
            r"(?-u:\x41)q",
            r"(foo|bar)+baz",
            r"\d{3}-\d{4}",
            r"(secret)?ab",
            r"(longword|\w)z",
            r"(?:kw1|kw2|(?:x|y)*)w",
        ];
        let pieces = [
            "",
            " ",
            "--secret-1",
            "--secret-12",
            ".env",
            ".envx",
            "rm -rf /",
            "rm  -rf /x",
            "/etc/shadow",
            "/etc/passwd",
            "TOKEN=",
            "Token=a",
            "xy",
            "zz",
            "a@b.com",
            "-",
            "c",
            "bc",
            "éét",
            "Aq",
            "foobaz",
            "barfoobaz",
            "555-1234",
            "x",
            "ab",
            "qz",
            "longwordz",
            "w",
            "kw1w",
        ];
        let mut rules = String::new();
        for (i, pattern) in patterns.iter().enumerate() {
            let effect = if i % 2 == 0 { "deny" } else { "allow" };
            let _ =
                writeln!(rules, "  - {{id: r{i}, match: {{args_pattern: '{pattern}'}}, effect: {effect}}}");
        }
        // The catch-all of everything is last, so that earlier ones decide.
        let rules = rules.replace("args_pattern: '.*'", "args_pattern: '^~never~$'");
        let m = matcher(&rules);
        let reference: Vec<(String, regex::Regex)> = (0..patterns.len())
            .map(|i| {
                let pattern = if patterns[i] == ".*" { "^~never~$" } else { patterns[i] };
                (format!("r{i}"), regex::Regex::new(pattern).expect("valid"))
            })
            .collect();
        let mut checked = 0;
        for a in pieces {
            for b in pieces {
                for c in ["", " ", "/"] {
                    let text = format!("{a}{c}{b}");
                    let expected =
                        reference.iter().find(|(_, re)| re.is_match(&text)).map(|(id, _)| id.as_str());
                    assert_eq!(m.evaluate(&query("tool", &text)).rule_id, expected, "{text:?}");
                    checked += 1;
                }
            }
        }
        assert!(checked > 1000);
        let index = m.args_index.get().expect("built at first use");
        assert!(index.finder.is_some() && index.unindexed.len() < patterns.len(), "{index:?}");
    }

    #[test]
    fn invalid_regex_names_the_rule_and_fails_closed() {
        let text = "default: allow\nrules:\n  - {id: broken, match: {executable: '^(sudo$'}, effect: deny}\n  - {id: broken_allow, match: {executable: '^(rm$'}, effect: allow}\n";
        let policy = Policy::parse(Path::new("p.yaml"), text).expect("parses");
        let err = ShellMatcher::validate(&policy).expect_err("invalid regex");
        assert!(err.to_string().contains("rule `broken`"), "{err}");
        let m = ShellMatcher::new(&policy).expect("loads without compiling");
        assert_eq!(m.evaluate(&query("ls", "")).rule_id, Some("broken"), "a broken deny rule denies");
        let text =
            "default: deny\nrules:\n  - {id: broken_allow, match: {executable: '^(rm$'}, effect: allow}\n";
        let policy = Policy::parse(Path::new("p.yaml"), text).expect("parses");
        let m = ShellMatcher::new(&policy).expect("loads");
        assert_eq!(m.evaluate(&query("rm", "")).rule_id, None, "a broken allow rule allows nothing");
    }
}
