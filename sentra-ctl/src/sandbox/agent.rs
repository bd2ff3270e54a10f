//! The agent's way in. An agent runs unprivileged (it may not create namespaces or cgroups), so its
//! `sentra python` asks the controller on the records socket (`{"sentra_python": Invocation}`); the
//! controller starts the runner (`sentra-ctl sandbox-run`: root, outside every governed cgroup)
//! with the policy it enforces, and answers one [`Answer`] line once the run is over.
//!
//! The request can only narrow the policy's profile (see [`super::plan`]): the controller never
//! runs code as the agent asks beyond what the policy author allowed, the sandbox's user is the
//! policy's (`nobody`), and the agent's own identity is recorded with every record of the run.

use std::{path::Path, process::Stdio, time::Duration};

use anyhow::{Context as _, bail};
use serde::{Deserialize, Serialize};
use tokio::io::AsyncWriteExt as _;

use super::{Invocation, Plan, Program, Sink};
use crate::{controller::protocol, policy::Policy, shell::gate::ControllerLog};

/// Sandbox runs the controller holds at once; more requests wait for a slot (each holds a records
/// connection, of which there are few).
pub const PARALLEL: usize = 8;

static RUNS: tokio::sync::Semaphore = tokio::sync::Semaphore::const_new(PARALLEL);

/// The controller's answer: the run's response, or why there was none.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Answer {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub response: Option<serde_json::Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

impl Answer {
    fn error(message: impl Into<String>) -> Self {
        Self { response: None, error: Some(message.into()) }
    }
}

/// How long a client waits for the answer: the run's own timeout ends it long before.
const CLIENT_DEADLINE: Duration = Duration::from_hours(24);

/// Sends the invocation to the controller and waits for the answer (the caller prints it).
///
/// # Errors
/// No controller answers, the request is too long for one line, or the controller refused it.
pub fn ask(mut invocation: Invocation) -> anyhow::Result<serde_json::Value> {
    // The runner reads the script inside the sandbox, where this process's working directory means
    // nothing.
    if let Some(Program::File(file)) = &mut invocation.program
        && Path::new(file.as_str()).is_relative()
    {
        *file = std::path::absolute(&*file)?.to_string_lossy().into_owned();
    }
    let question = serde_json::json!({ protocol::PYTHON_KEY: invocation });
    let size = serde_json::to_vec(&question)?.len() + 1;
    if u64::try_from(size).unwrap_or(u64::MAX) > protocol::LINE_MAX_BYTES {
        bail!(
            "the request is {size} bytes, over the controller's {} per line: put the program in a file under the profile's read_allow and run that",
            protocol::LINE_MAX_BYTES
        );
    }
    let path = protocol::nearest_records_socket();
    let answer: Answer = ControllerLog::connect(&path, CLIENT_DEADLINE)
        .and_then(|controller| controller.ask(&question))
        .with_context(|| {
            format!(
                "no Sentra controller answers at {} (an unprivileged caller's sandbox is run by the controller)",
                path.display()
            )
        })?;
    match answer {
        Answer { error: Some(error), .. } => bail!("{error}"),
        Answer { response: Some(response), .. } => Ok(response),
        Answer { response: None, error: None } => bail!("the controller answered nothing"),
    }
}

/// The controller's side: runs `invocation` (a request line's value) for `requested_by` under the
/// enforced policy at `policy` (whose hash must still be `policy_hash`), one of at most
/// [`PARALLEL`] runs. Dropping the future kills the runner (its sandbox dies with it; the next run
/// sweeps its cgroup).
pub async fn serve(
    invocation: serde_json::Value,
    policy: &Path,
    policy_hash: &str,
    requested_by: &serde_json::Value,
) -> Answer {
    let invocation = match serde_json::from_value::<Invocation>(invocation) {
        Ok(invocation) => invocation,
        Err(err) => return Answer::error(format!("not a sandbox request: {err}")),
    };
    let Ok(input) = serde_json::to_vec(&invocation) else {
        return Answer::error("the request cannot be encoded again");
    };
    let Ok(_slot) = RUNS.acquire().await else { return Answer::error("the controller is stopping") };
    // The controller's own binary: `/proc/self/exe` still runs it after an upgrade replaced the file.
    let spawned = tokio::process::Command::new("/proc/self/exe")
        .arg("sandbox-run")
        .arg("--policy")
        .arg(policy)
        .args(["--policy-hash", policy_hash, "--requested-by", &requested_by.to_string()])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn();
    let mut child = match spawned {
        Ok(child) => child,
        Err(err) => return Answer::error(format!("starting the sandbox runner: {err}")),
    };
    if let Some(mut stdin) = child.stdin.take()
        && let Err(err) = stdin.write_all(&input).await
    {
        return Answer::error(format!("handing the request to the sandbox runner: {err}"));
    }
    let output = match child.wait_with_output().await {
        Ok(output) => output,
        Err(err) => return Answer::error(format!("waiting for the sandbox runner: {err}")),
    };
    if output.status.success() {
        return match serde_json::from_slice(&output.stdout) {
            Ok(response) => Answer { response: Some(response), error: None },
            Err(err) => Answer::error(format!("the sandbox runner's response: {err}")),
        };
    }
    let said = String::from_utf8_lossy(&output.stderr);
    let said = said.trim().trim_start_matches("sentra python: ");
    Answer::error(if said.is_empty() {
        format!("the sandbox runner failed: {}", output.status)
    } else {
        said.into()
    })
}

/// `sentra-ctl sandbox-run`: [`run_for`], and its exit code (126 with the reason on stderr, which
/// the controller passes on to the caller as it is).
#[must_use]
pub fn main(policy: &Path, policy_hash: &str, requested_by: &str) -> i32 {
    match run_for(policy, policy_hash, requested_by) {
        Ok(()) => 0,
        Err(err) => {
            eprintln!("{err:#}");
            126
        }
    }
}

/// Reads an [`Invocation`] on stdin, runs it under the policy at `policy`
/// (refused unless its hash is still `policy_hash`: the policy the controller enforces), records
/// everything with `requested_by`, and writes the response on stdout. A refusal is recorded too.
///
/// # Errors
/// The request is refused or the sandbox could not be set up.
fn run_for(policy: &Path, policy_hash: &str, requested_by: &str) -> anyhow::Result<()> {
    let mut text = String::new();
    std::io::Read::read_to_string(&mut std::io::stdin(), &mut text)?;
    let invocation: Invocation = serde_json::from_str(&text).context("the request on stdin")?;
    let requested_by: serde_json::Value =
        serde_json::from_str(requested_by).context("--requested-by is not JSON")?;
    let planned = Policy::load(policy).map_err(anyhow::Error::from).and_then(|policy| {
        if format!("{:016x}", policy.hash) != policy_hash {
            bail!(
                "{} changed on disk since the controller enforced it: reload the policy first",
                policy.file.display()
            );
        }
        let mut plan = super::plan(&policy, &invocation)?;
        plan.requested_by = Some(requested_by.clone());
        Ok(plan)
    });
    let plan: Plan = match planned {
        Ok(plan) => plan,
        Err(err) => {
            let mut record = super::record(
                "sandbox_exec",
                Some("denied"),
                Some(format!("{err:#}")),
                serde_json::json!({
                    "profile": invocation.profile,
                    "capability": invocation.capability,
                    "requested_by": requested_by,
                }),
            );
            record.rule_id = Some("sandbox".into());
            Sink::Controller.write(&record);
            return Err(err);
        }
    };
    let response = super::run(&plan, &Sink::Controller)?;
    println!("{}", serde_json::to_string(&response)?);
    Ok(())
}
