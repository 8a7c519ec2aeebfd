//! The command line: what the person types, dispatched to one file per subcommand.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, Parser, Subcommand};

pub mod check;
pub mod demo;
pub mod init;
pub mod run;
pub mod simulate;
pub mod status;

/// patchbay turns a FreeSWITCH server into one person's phone system, driven by a git repo of
/// rules (Rhai), contacts (vCard) and greetings (WAV).
#[derive(Debug, Parser)]
#[command(name = "patchbay", version, about, long_about = None)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the daemon: serve FreeSWITCH (xml_curl, ESL) and follow the phone repo.
    Run(RunArgs),
    /// Run everything on embedded defaults: a simulated FreeSWITCH, a demo phone repo and a
    /// few scripted calls; prints what happened and where the results went.
    Demo(DemoArgs),
    /// Check a phone repo's rules before committing: every error as file:line:column.
    Check(CheckArgs),
    /// Dry-run one call through the rules and show what would happen, and why.
    Simulate(SimulateArgs),
    /// Create a new phone repo with default rules, a sample contact and a README.
    Init(InitArgs),
    /// Show registered devices, gateway states, active calls and open incidents.
    Status(StatusArgs),
}

#[derive(Debug, Args)]
pub struct RunArgs {
    /// The settings file (JSON with comments; secrets live here, outside git).
    #[arg(long, value_name = "FILE")]
    pub settings: PathBuf,
    /// The phone repo to follow (overrides the settings' repo.path).
    #[arg(long, value_name = "PATH")]
    pub repo: Option<PathBuf>,
}

#[derive(Debug, Args)]
pub struct DemoArgs {
    /// Keep the demo's files (maildir, calendar, journal) in this folder instead of a temporary one.
    #[arg(long, value_name = "DIR")]
    pub output: Option<PathBuf>,
}

#[derive(Debug, Args)]
pub struct CheckArgs {
    /// The phone repo (default: the current directory).
    #[arg(value_name = "REPO", default_value = ".")]
    pub repo: PathBuf,
    /// Check the files as they are on disk instead of the HEAD commit.
    #[arg(long)]
    pub worktree: bool,
    /// Default region for numbers written without a country code (ISO code, e.g. CA).
    #[arg(long, value_name = "CODE", default_value = "CA")]
    pub region: String,
}

#[derive(Debug, Args)]
pub struct SimulateArgs {
    /// The caller's number, as it would arrive.
    #[arg(long, value_name = "NUMBER")]
    pub from: String,
    /// The number called (a DID for inbound calls, any number or extension for outbound).
    #[arg(long, value_name = "NUMBER")]
    pub to: String,
    /// Local time of the call, "YYYY-MM-DD HH:MM" (default: now).
    #[arg(long, value_name = "TIME")]
    pub at: Option<String>,
    /// Pretend the person is already on a call.
    #[arg(long)]
    pub busy: bool,
    /// Pretend do-not-disturb is on (`*86`, 3).
    #[arg(long)]
    pub do_not_disturb: bool,
    /// Number of registered devices.
    #[arg(long, value_name = "N", default_value_t = 2)]
    pub devices: u32,
    /// The phone repo (default: the current directory).
    #[arg(long, value_name = "PATH", default_value = ".")]
    pub repo: PathBuf,
    /// Default region for numbers written without a country code (ISO code, e.g. CA).
    #[arg(long, value_name = "CODE", default_value = "CA")]
    pub region: String,
    /// Timezone for time-based rules (IANA name).
    #[arg(long, value_name = "TZ", default_value = "America/Montreal")]
    pub timezone: String,
}

#[derive(Debug, Args)]
pub struct InitArgs {
    /// The folder to create (must not exist or be empty).
    #[arg(value_name = "DIR")]
    pub dir: PathBuf,
}

#[derive(Debug, Args)]
pub struct StatusArgs {
    /// The settings file of the running daemon.
    #[arg(long, value_name = "FILE")]
    pub settings: PathBuf,
}

/// Runs the parsed command; the error, if any, is printed once by `main`.
pub fn dispatch(cli: Cli) -> anyhow::Result<ExitCode> {
    match cli.command {
        Command::Run(args) => run::run(&args),
        Command::Demo(args) => demo::run(&args),
        Command::Check(args) => check::run(&args),
        Command::Simulate(args) => simulate::run(&args),
        Command::Init(args) => init::run(&args),
        Command::Status(args) => status::run(&args),
    }
}
