//! lsinit: the PID-1 entrypoint of the LocalStack Pro image. This file is the lifecycle of
//! SPEC section 1 and nothing else: each step lives in its own module.

use std::io::Write;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Instant;

use lsinit::cli::{self, Invocation};
use lsinit::config::{Environment, Settings};
use lsinit::licensing::{self, Activation, Edition};
use lsinit::supervision::emulator::{self, Plan};
use lsinit::supervision::signals::{self, SignalReader};
use lsinit::{boot, logging, supervision};

/// lsinit could not set itself up.
const EXIT_SETUP: u8 = 1;
/// Bad command line.
const EXIT_USAGE: u8 = 2;
/// Licensing failed with `ACTIVATE_PRO` on, or `lsinit check` found no active license.
const EXIT_LICENSE: u8 = 55;

fn main() -> ExitCode {
    // Step 1: before any thread exists, and before lsinit opens anything of its own.
    if let Err(e) = signals::block_all() {
        // Not eprintln!: with stderr closed or a broken pipe it would panic instead of exiting.
        let _ = writeln!(std::io::stderr(), "lsinit: cannot block signals: {e}");
        return ExitCode::from(EXIT_SETUP);
    }
    emulator::remember_inherited_descriptors();
    let invocation = match cli::parse(std::env::args_os().skip(1)) {
        Ok(invocation) => invocation,
        Err(e) => {
            let _ = writeln!(std::io::stderr(), "lsinit: {e}");
            return ExitCode::from(EXIT_USAGE);
        }
    };
    match invocation {
        // writeln!, not println!: `lsinit --help | head -1` must not panic.
        Invocation::Help => {
            let _ = writeln!(std::io::stdout(), "{}", cli::USAGE);
            return ExitCode::SUCCESS;
        }
        Invocation::Version => {
            let _ = writeln!(std::io::stdout(), "lsinit {}", env!("CARGO_PKG_VERSION"));
            return ExitCode::SUCCESS;
        }
        Invocation::Check | Invocation::Start { .. } => {}
    }

    // Step 2.
    let settings = match Settings::from_environment(Environment::from_vars(std::env::vars_os())) {
        Ok(settings) => settings,
        Err(e) => {
            logging::init(log::LevelFilter::Info);
            log::error!("{e}");
            return ExitCode::from(EXIT_SETUP);
        }
    };
    logging::init(settings.log_level);
    for warning in &settings.warnings {
        log::warn!("{warning}");
    }

    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build();
    let runtime = match runtime {
        Ok(runtime) => runtime,
        Err(e) => {
            log::error!("cannot start the event loop: {e}");
            return ExitCode::from(EXIT_SETUP);
        }
    };
    ExitCode::from(runtime.block_on(run(invocation, settings)))
}

/// Steps 3 to 8 of the lifecycle; returns lsinit's exit status.
async fn run(invocation: Invocation, settings: Settings) -> u8 {
    let mut signals = match SignalReader::open() {
        Ok(signals) => signals,
        Err(e) => {
            log::error!("cannot read signals: {e}");
            return EXIT_SETUP;
        }
    };
    // Step 3.
    supervision::become_subreaper_unless_pid1();
    // Step 4.
    boot::prepare(&settings);
    let cwd = emulator::starting_directory();
    if let Err(status) = boot::run_hooks(&settings, cwd.clone(), &mut signals).await {
        return status;
    }

    // Step 5.
    let settings = Arc::new(settings);
    let started = Instant::now();
    let activation = activate_unless_stopped(&settings, &mut signals).await;
    let command = match invocation {
        Invocation::Start { command } => command,
        // Help and Version returned before the settings were read.
        Invocation::Check | Invocation::Help | Invocation::Version => {
            let active = licensing::report(&activation, started.elapsed());
            return if active { 0 } else { EXIT_LICENSE };
        }
    };
    let Some(edition) = licensing::enforce(&settings, &activation) else {
        return EXIT_LICENSE;
    };

    // Step 6. A TERM or INT that came while licensing finished still means no emulator.
    if let Some(signo) = signals.settle_before_start() {
        log::info!(
            "got {} before the emulator started: exiting",
            signals::name(signo)
        );
        exit_during_activation(128 + signo);
    }
    let mut words = emulator::command_line(command, &settings).into_iter();
    let plan = Plan {
        program: words.next().unwrap_or_default(),
        args: words.collect(),
        environment: emulator::environment(&settings, Some(edition.activate_pro_value())),
        cwd,
        foreground: supervision::owns_terminal(),
    };
    let first = match emulator::spawn(&plan) {
        Ok(first) => first,
        Err(e) => {
            log::error!("{e}");
            return e.exit_code();
        }
    };
    let edition = match edition {
        Edition::Pro => "Pro",
        Edition::Community => "community",
    };
    log::info!(
        "started the emulator as process {} ({edition} edition)",
        first.pid
    );
    // lsinit keeps no directory busy; the emulator got the original one.
    let _ = std::env::set_current_dir("/");

    // Steps 7 and 8.
    let before_restart = licensing::reactivation_hook(Arc::clone(&settings), &activation);
    let status = supervision::supervise(
        &mut signals,
        &plan,
        first,
        settings.shutdown_timeout,
        before_restart,
    )
    .await;
    // A re-activation abandoned by a TERM may still run: held until the process is gone, so no
    // cache write can start or be cut by the exit.
    std::mem::forget(licensing::cache::hold_writes());
    status
}

/// Runs the activation on its own thread while signals are read here. `TERM` or `INT` exits at
/// once with 143 or 130: the HTTP request is abandoned, and a cache write in flight finishes
/// first, so no half-written or temp file is left.
async fn activate_unless_stopped(
    settings: &Arc<Settings>,
    signals: &mut SignalReader,
) -> Activation {
    let (done, mut outcome) = tokio::sync::oneshot::channel();
    let for_thread = Arc::clone(settings);
    let spawned = std::thread::Builder::new()
        .name("activation".into())
        .spawn(move || {
            let _ = done.send(licensing::activate(&for_thread));
        });
    if let Err(e) = spawned {
        log::error!("cannot start the activation: {e}");
        std::process::exit(i32::from(EXIT_SETUP));
    }
    loop {
        // Signals first: a TERM pending when the activation finishes must still win (SPEC 1).
        tokio::select! {
            biased;
            signal = signals.recv() => match signal {
                Ok(signo @ (libc::SIGTERM | libc::SIGINT)) => {
                    log::info!(
                        "got {} before the emulator started: exiting",
                        signals::name(signo)
                    );
                    exit_during_activation(128 + signo);
                }
                Ok(libc::SIGCHLD) => {
                    supervision::reaper::drain_all(None);
                }
                Ok(libc::SIGUSR1) => {
                    log::debug!("got SIGUSR1 before the emulator exists, thus ignoring it");
                }
                Ok(signo) => log::debug!(
                    "got {} before the emulator exists, dropping it",
                    signals::name(signo)
                ),
                Err(e) => {
                    log::error!("cannot read signals: {e}");
                    exit_during_activation(i32::from(EXIT_SETUP));
                }
            },
            activation = &mut outcome => {
                return activation.unwrap_or_else(|_| Activation::Failed(licensing::Failure {
                    reason: "the activation stopped unexpectedly, which is a bug in lsinit; please report it with \
                     the log above".into(),
                    no_credentials: false,
                }));
            }
        }
    }
}

/// Exits while the activation thread may still run: cache writes are held until the process is
/// gone, so none can start or be cut halfway.
fn exit_during_activation(status: i32) -> ! {
    std::mem::forget(licensing::cache::hold_writes());
    std::process::exit(status);
}
