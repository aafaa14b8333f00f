//! Helpers shared by the example programs: what the benchmark consumers
//! share, value parsers for their command lines, stopping on SIGINT/SIGTERM, closing statistics, a pcapng writer,
//! the iptables rules of the `firewall`, and a metrics endpoint.

pub mod bench;
pub mod cli;
pub mod metrics_http;
pub mod pcapng;
pub mod queue_rules;
pub mod summary;

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
