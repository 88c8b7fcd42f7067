//! Threads that work for later (the journal's writer, the notices, the digests, the owner
//! mail): started through `spawn`, they ask the kernel for short turns on the CPU, so a request
//! worker woken on their core gets it within a tenth of a millisecond. Not a pool: each is
//! one named thread; the request workers and the blocking pool keep the kernel's defaults.
//!
//! Why: Linux's scheduler (EEVDF, 6.6 and later) lets a running thread finish its turn, its
//! "slice" (0.75 ms times 1 + log2 of the CPUs by default), before a thread it woke takes the
//! core. In the benchmark's fixed-rate run (mailwarden on one core) the journal's SQLite
//! batches ran up to 3.7 ms at a stretch while a worker waited behind them: in one
//! 12-second window, 83 hand-overs from the journal to a worker came after more than 0.5 ms
//! of journal work. With the shortest slice the kernel allows (0.1 ms, Linux 6.12 and later)
//! there were 7 (docs/BENCHMARKS.md, issue 21). The thread still gets its fair share of a busy
//! core, in shorter pieces, so its queue keeps up as before. An older kernel ignores the
//! request.

use std::io;
use std::thread::JoinHandle;
use std::time::Duration;

/// The turn a background thread asks for: the shortest slice Linux accepts.
pub const SHORT_TURN: Duration = Duration::from_micros(100);

/// Starts the thread `name` running `work`, taking short turns (see the module's comment).
pub fn spawn<T: Send + 'static>(
    name: impl Into<String>,
    work: impl FnOnce() -> T + Send + 'static,
) -> io::Result<JoinHandle<T>> {
    std::thread::Builder::new().name(name.into()).spawn(move || {
        if let Err(e) = take_short_turns() {
            // Not worth a warning: the thread works as before, only in longer pieces.
            tracing::debug!(error = %e, "a background thread keeps the kernel's default turns");
        }
        work()
    })
}

/// Asks for `SHORT_TURN` slices for the calling thread, keeping its policy and nice value
/// (an admin's `nice` or systemd's `CPUSchedulingPolicy=` stand).
#[cfg(target_os = "linux")]
pub fn take_short_turns() -> io::Result<()> {
    let mut attr = current_attributes()?;
    attr.sched_runtime = u64::try_from(SHORT_TURN.as_nanos()).unwrap_or(u64::MAX);
    // Only the fair policies have slices; a real-time thread (set by an admin) is left alone.
    let fair = [libc::SCHED_OTHER, libc::SCHED_BATCH, libc::SCHED_IDLE];
    if !fair.iter().any(|policy| u32::try_from(*policy).is_ok_and(|policy| policy == attr.sched_policy)) {
        return Ok(());
    }
    attr.sched_flags = 0;
    // SAFETY: `attr` is a valid, initialised `sched_attr` whose `size` field names its size;
    // the kernel only reads it. Thread id 0 is the calling thread.
    let result = unsafe { libc::syscall(libc::SYS_sched_setattr, 0, &attr as *const libc::sched_attr, 0) };
    if result == 0 { Ok(()) } else { Err(io::Error::last_os_error()) }
}

#[cfg(not(target_os = "linux"))]
pub fn take_short_turns() -> io::Result<()> {
    Ok(())
}

/// The calling thread's scheduling attributes (policy, nice, slice on Linux 6.12 and later).
#[cfg(target_os = "linux")]
pub fn current_attributes() -> io::Result<libc::sched_attr> {
    let size = std::mem::size_of::<libc::sched_attr>();
    let mut attr = libc::sched_attr {
        size: u32::try_from(size).unwrap_or(u32::MAX),
        sched_policy: 0,
        sched_flags: 0,
        sched_nice: 0,
        sched_priority: 0,
        sched_runtime: 0,
        sched_deadline: 0,
        sched_period: 0,
    };
    // SAFETY: the kernel writes at most `size` bytes, the size of `attr`, into it.
    let result = unsafe {
        libc::syscall(
            libc::SYS_sched_getattr,
            0,
            &mut attr as *mut libc::sched_attr,
            u32::try_from(size).unwrap_or(0),
            0,
        )
    };
    if result == 0 { Ok(attr) } else { Err(io::Error::last_os_error()) }
}

#[cfg(all(test, target_os = "linux"))]
mod tests {
    use super::*;

    /// Linux 6.12 brought slices a thread can ask for; an older kernel accepts the request and
    /// keeps its own.
    fn kernel_has_custom_slices() -> bool {
        let release = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
        let mut numbers = release.trim().split(['.', '-']).map(|part| part.parse::<u32>().unwrap_or(0));
        let (major, minor) = (numbers.next().unwrap_or(0), numbers.next().unwrap_or(0));
        (major, minor) >= (6, 12)
    }

    #[test]
    fn a_background_thread_takes_short_turns_and_keeps_its_nice_value() {
        let (attributes, nice) = spawn("background-test", || {
            // An admin's `nice -n 3` (raising one's nice needs no privilege).
            // SAFETY: plain syscalls on the calling thread.
            unsafe {
                let thread = libc::syscall(libc::SYS_gettid);
                libc::setpriority(libc::PRIO_PROCESS, u32::try_from(thread).unwrap(), 3);
            }
            take_short_turns().unwrap();
            // SAFETY: as above.
            let nice = unsafe { libc::getpriority(libc::PRIO_PROCESS, 0) };
            (current_attributes().unwrap(), nice)
        })
        .unwrap()
        .join()
        .unwrap();
        assert_eq!(nice, 3, "the thread's nice value stands");
        assert_eq!(attributes.sched_nice, 3);
        assert_eq!(attributes.sched_policy, libc::SCHED_OTHER as u32);
        if kernel_has_custom_slices() {
            assert_eq!(attributes.sched_runtime, SHORT_TURN.as_nanos() as u64, "the kernel gives the short slice");
        }
    }

    #[test]
    fn the_request_workers_keep_the_kernels_default_turns() {
        // A thread not started through `spawn` (as actix's workers are not).
        let attributes = std::thread::spawn(|| current_attributes().unwrap()).join().unwrap();
        assert_ne!(attributes.sched_runtime, SHORT_TURN.as_nanos() as u64);
    }
}
