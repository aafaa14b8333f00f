//! Helpers shared by the example programs: argument parsing that needs no
//! dependency, and stopping a queue on SIGINT/SIGTERM.

use nfqueue_core::StopHandle;
use std::error::Error;
use std::io;
use std::process::ExitCode;
use std::thread;

/// Ends an example: on error, prints the error's message and its causes (which
/// say what to do, unlike the `Debug` form `main` would print) and fails.
pub fn report(result: Result<(), Box<dyn Error>>) -> ExitCode {
    let Err(err) = result else {
        return ExitCode::SUCCESS;
    };
    eprint!("error: {err}");
    let mut source = err.source();
    while let Some(cause) = source {
        eprint!(": {cause}");
        source = cause.source();
    }
    eprintln!();
    ExitCode::FAILURE
}

/// Blocks SIGINT and SIGTERM in this thread (and the threads it spawns later)
/// and starts a thread that waits for them and calls `stop`.
///
/// Call it first in `main`, before other threads exist, so that no thread
/// receives these signals the default way.
///
/// # Errors
/// When the signal mask cannot be set or the thread cannot be spawned.
pub fn stop_on_signals(stop: StopHandle) -> io::Result<()> {
    // SAFETY: sigset_t is plain data and is initialised by sigemptyset before use.
    let mut set: libc::sigset_t = unsafe { std::mem::zeroed() };
    // SAFETY: `set` is a valid sigset_t; the calls only modify it and this
    // thread's signal mask.
    let rc = unsafe {
        libc::sigemptyset(&mut set);
        libc::sigaddset(&mut set, libc::SIGINT);
        libc::sigaddset(&mut set, libc::SIGTERM);
        libc::pthread_sigmask(libc::SIG_BLOCK, &set, std::ptr::null_mut())
    };
    if rc != 0 {
        return Err(io::Error::from_raw_os_error(rc));
    }
    thread::Builder::new()
        .name("signals".into())
        .spawn(move || {
            let mut signal = 0;
            // SAFETY: `set` lives in this closure; sigwait writes the signal number.
            unsafe { libc::sigwait(&set, &mut signal) };
            stop.stop();
        })?;
    Ok(())
}

/// The queue number from the last command-line argument, or exits with `usage`.
pub fn queue_number_arg(args: &[String], usage: &str) -> u16 {
    match args.last().map(|a| a.parse::<u16>()) {
        Some(Ok(queue)) => queue,
        _ => {
            eprintln!("usage: {usage}");
            std::process::exit(2);
        }
    }
}

/// Every value given after `--name` in `args` (the option may repeat), parsed;
/// exits on a bad value.
pub fn option_args<T: std::str::FromStr>(args: &[String], name: &str) -> Vec<T> {
    let mut values = Vec::new();
    let mut rest = args;
    while let Some(at) = rest.iter().position(|a| a == name) {
        match rest.get(at + 1).map(|v| v.parse::<T>()) {
            Some(Ok(value)) => values.push(value),
            _ => {
                eprintln!("{name} needs a valid value");
                std::process::exit(2);
            }
        }
        rest = &rest[at + 2..];
    }
    values
}

/// The value after `--name` in `args`, parsed, if present; exits on a bad value.
pub fn option_arg<T: std::str::FromStr>(args: &[String], name: &str) -> Option<T> {
    let at = args.iter().position(|a| a == name)?;
    match args.get(at + 1).map(|v| v.parse::<T>()) {
        Some(Ok(value)) => Some(value),
        _ => {
            eprintln!("{name} needs a valid value");
            std::process::exit(2);
        }
    }
}
