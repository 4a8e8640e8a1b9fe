//! The `meetbot` binary: parse arguments, load configuration, run a command.

use clap::Parser;
use meetbot::cli::{self, AuditCommand, Cli, Command};

fn main() {
    // Before anything sensitive is in memory: a crash must never write a core
    // file holding plaintext audio or keys (containers often inherit an
    // unlimited core size), and other processes of the same user must not
    // ptrace us or read /proc/<pid>/mem.
    meetbot::cli::harden_process();
    let cli = Cli::parse();
    if matches!(cli.command, Command::Config) {
        match meetbot::config::Config::load_effective(cli.config.as_deref(), std::env::vars()) {
            Ok((_, table)) => {
                print!("{}", toml::to_string(&table).unwrap_or_default());
                std::process::exit(0);
            }
            Err(e) => {
                eprintln!("meetbot: {e}");
                std::process::exit(2);
            }
        }
    }
    let cfg = match cli::load_config(&cli) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("meetbot: {e}");
            if matches!(cli.command, Command::Join(_) | Command::Worker(_)) {
                // Machine readers of `join` get a final status line too.
                println!(
                    "{}",
                    serde_json::json!({"status": "fatal", "at": meetbot::status::now_rfc3339(), "reason": e.to_string()})
                );
            }
            std::process::exit(2);
        }
    };
    cli::init_logging(&cfg.log.level);
    // A bot's work per packet is microseconds: one thread runs it without the
    // cross-thread wake-ups (futex, context switches) a pool costs per packet.
    // Whisper and file I/O go to the blocking pool either way.
    let builder = match &cli.command {
        Command::Join(_) | Command::Worker(_) => tokio::runtime::Builder::new_current_thread(),
        _ => {
            let mut b = tokio::runtime::Builder::new_multi_thread();
            b.worker_threads(2);
            b
        }
    };
    let runtime = match { builder }.enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("meetbot: cannot start the async runtime: {e}");
            std::process::exit(1);
        }
    };
    let code = match cli.command {
        Command::Join(args) => runtime.block_on(cli::join(cfg, args)),
        Command::SttServe(args) => match runtime.block_on(cli::stt_serve(cfg, args)) {
            Ok(()) => 0,
            Err(e) => {
                eprintln!("meetbot stt-serve: {e:#}");
                1
            }
        },
        Command::Audit {
            command: AuditCommand::Verify { log, tenant },
        } => match tenant {
            Some(t) => runtime.block_on(cli::audit_verify_chain(&cfg, &t)),
            None => cli::audit_verify(&cfg, log),
        },
        Command::Worker(args) => runtime.block_on(cli::worker(cfg, args)),
        Command::Serve => match runtime.block_on(meetbot::fleet::api::serve_cmd(cfg)) {
            Ok(()) => 0,
            Err(e) => {
                eprintln!("meetbot serve: {e:#}");
                1
            }
        },
        Command::Sweep(args) => {
            runtime.block_on(meetbot::fleet::sweep::sweep_cmd(cfg, args.dry_run))
        }
        Command::Config => 0,
        Command::Bench(args) => match runtime.block_on(meetbot::benchcmd::run(cfg, args)) {
            Ok(()) => 0,
            Err(e) => {
                eprintln!("meetbot bench: {e:#}");
                1
            }
        },
    };
    // Don't wait for a Whisper call that was abandoned at shutdown.
    runtime.shutdown_timeout(cli::RUNTIME_SHUTDOWN);
    std::process::exit(code);
}
