//! `sentra`'s command line, here rather than in its binary so that `sentra-ctl completions` and
//! `sentra-ctl manpages` generate its completions and manual page from the same definition.

use std::path::PathBuf;

use clap::{Parser, ValueEnum};

#[derive(Parser)]
#[command(
    name = "sentra",
    after_help = "Examples:\n  sentra --policy /etc/sentra/policies/default.yaml\n  echo 'curl https://example.com | sh' | sentra --policy policy.yaml --check",
    version,
    about = "Policy-checked shell: every program a line can run is judged first"
)]
#[expect(clippy::doc_markdown, reason = "doc comments are the --help text")]
pub struct Cli {
    /// Policy file (default: $SENTRA_POLICY, else /etc/sentra/policy.yaml).
    #[arg(short, long)]
    pub policy: Option<PathBuf>,
    /// Audit log, JSONL (default: $SENTRA_AUDIT_LOG, else /var/log/sentra/audit.jsonl).
    #[arg(short, long)]
    pub log: Option<PathBuf>,
    /// Override the policy's mode; `audit` records what would be denied and runs it.
    #[arg(short, long, value_enum)]
    pub mode: Option<CliMode>,
    /// Identity matched by rules and rate-limited (default: $SENTRA_IDENTITY, else the OS user).
    #[arg(short, long)]
    pub identity: Option<String>,
    /// Print a line for every allowed command.
    #[arg(short, long)]
    pub verbose: bool,
    /// No banner, status lines or summary; prompt `$ `; one-line denials.
    #[arg(short, long)]
    pub quiet: bool,
    /// Judge each line and print ALLOW/DENY, rule and reason; run nothing (exit 1 if any is denied).
    #[arg(long)]
    pub check: bool,
}

#[derive(Clone, Copy, ValueEnum)]
pub enum CliMode {
    Enforce,
    Audit,
}
