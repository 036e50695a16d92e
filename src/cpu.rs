//! CPU time, for saying how much of the machine the client and the truth server used: the whole
//! process (`getrusage`) and single threads (`/proc/self/task/<tid>/schedstat`). Linux; `None`
//! elsewhere.

use std::time::Duration;

/// The calling thread's Linux thread id, from `/proc/thread-self`.
pub fn current_tid() -> Option<u32> {
    let link = std::fs::read_link("/proc/thread-self").ok()?;
    link.file_name()?.to_str()?.parse().ok()
}

/// CPU time of one thread of this process, from its `schedstat` (nanoseconds on CPU).
pub fn thread_cpu(tid: u32) -> Option<Duration> {
    let s = std::fs::read_to_string(format!("/proc/self/task/{tid}/schedstat")).ok()?;
    let ns: u64 = s.split_whitespace().next()?.parse().ok()?;
    Some(Duration::from_nanos(ns))
}

/// CPU time (user + system) of the whole process so far, every thread that ever ran included
/// (Linux; `None` elsewhere).
pub fn process_cpu_time() -> Option<Duration> {
    // SAFETY: getrusage writes into the zeroed struct we own and reads nothing else.
    let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
    let rc = unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut ru) };
    if rc != 0 {
        return None;
    }
    let tv = |t: libc::timeval| {
        Duration::from_secs(t.tv_sec as u64) + Duration::from_micros(t.tv_usec as u64)
    };
    Some(tv(ru.ru_utime) + tv(ru.ru_stime))
}
