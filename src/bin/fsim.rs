//! `fsim`: the FreeSWITCH simulator as a standalone program, for trying patchbay without a
//! FreeSWITCH. It listens for ESL clients, registers the scenario's devices and gateways
//! through the xml endpoint, places the scenario's calls and prints what it did.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::Parser;
use patchbay::settings::Secret;
use patchbay::sim::{Config, Entry, Scenario, Sim};

/// A FreeSWITCH 1.10 simulator speaking ESL (inbound and outbound) and mod_xml_curl.
#[derive(Parser, Debug)]
#[command(name = "fsim", version)]
struct Args {
    /// Address of the inbound ESL server.
    #[arg(long, default_value = "127.0.0.1")]
    esl_host: std::net::IpAddr,
    /// Port of the inbound ESL server (0 picks a free one).
    #[arg(long, default_value_t = 8021)]
    esl_port: u16,
    /// Password ESL clients must send with `auth`.
    #[arg(
        long,
        env = "FSIM_PASSWORD",
        default_value = "ClueCon",
        hide_env_values = true
    )]
    password: String,
    /// mod_xml_curl endpoint to POST directory and dialplan lookups to.
    #[arg(long)]
    xml_url: Option<String>,
    /// Basic-auth user for the xml endpoint.
    #[arg(long, requires = "xml_password")]
    xml_user: Option<String>,
    /// Basic-auth password for the xml endpoint.
    #[arg(long, env = "FSIM_XML_PASSWORD", hide_env_values = true)]
    xml_password: Option<String>,
    /// Scenario file (TOML): devices, gateways and calls.
    #[arg(long)]
    scenario: Option<PathBuf>,
    /// Seconds between HEARTBEAT events.
    #[arg(long, default_value_t = 20.0)]
    heartbeat: f64,
    /// Multiplies every scenario delay (0.1 runs ten times faster).
    #[arg(long, default_value_t = 1.0)]
    time_scale: f64,
    /// SIP domain of the simulated devices.
    #[arg(long, default_value = "127.0.0.1")]
    domain: String,
    /// Directory for relative recording paths.
    #[arg(long)]
    recordings: Option<PathBuf>,
    /// Outbound socket (host:port) of the static dialplan, used when the xml endpoint does not
    /// route a call (as FreeSWITCH falls back to its static XML).
    #[arg(long)]
    socket: Option<String>,
    /// Also print every ESL command received and every event emitted.
    #[arg(long, short)]
    verbose: bool,
}

fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("FSIM_LOG")
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .init();
    let args = Args::parse();
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(runtime) => runtime,
        Err(err) => {
            eprintln!("fsim: cannot start the async runtime: {err}");
            return ExitCode::from(2);
        }
    };
    match runtime.block_on(run(args)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("fsim: {err:#}");
            ExitCode::from(2)
        }
    }
}

async fn run(args: Args) -> anyhow::Result<()> {
    let valid = args.heartbeat.is_finite()
        && args.heartbeat > 0.0
        && args.time_scale.is_finite()
        && args.time_scale >= 0.0;
    if !valid {
        anyhow::bail!("--heartbeat must be above 0 and --time-scale at least 0");
    }
    let heartbeat = Duration::try_from_secs_f64(args.heartbeat).map_err(|_| {
        anyhow::anyhow!(
            "--heartbeat {}: not a usable number of seconds",
            args.heartbeat
        )
    })?;
    let scenario = match &args.scenario {
        Some(path) => Scenario::load(path)?,
        None => Scenario::default(),
    };
    let config = Config {
        esl_addr: SocketAddr::new(args.esl_host, args.esl_port),
        password: Secret::new(args.password),
        heartbeat,
        time_scale: args.time_scale,
        xml_url: args.xml_url,
        xml_credentials: args.xml_user.zip(args.xml_password.map(Secret::new)),
        domain: args.domain,
        recordings_dir: args.recordings,
        static_socket: args.socket,
        log_events: args.verbose,
        ..Config::default()
    };
    let sim = Sim::start_with(config, scenario).await?;
    eprintln!("fsim: ESL listening on {} (Ctrl-C stops)", sim.esl_addr());
    sim.run_scenario();
    let printer = tokio::spawn(print_log(sim.clone(), args.verbose));
    shutdown_signal().await?;
    sim.stop();
    printer.abort();
    Ok(())
}

/// Prints what the simulator does, one line per log entry.
async fn print_log(sim: Sim, verbose: bool) {
    let mut seen = 0;
    loop {
        let entries = sim.log().since(seen);
        seen += entries.len();
        for entry in entries {
            let chatty = matches!(entry, Entry::Emitted { .. } | Entry::Command { .. });
            if verbose || !chatty {
                println!("fsim: {entry}");
            }
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Ctrl-C or SIGTERM (what Docker and `kill` send).
async fn shutdown_signal() -> std::io::Result<()> {
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    tokio::select! {
        result = tokio::signal::ctrl_c() => result,
        _ = term.recv() => Ok(()),
    }
}
