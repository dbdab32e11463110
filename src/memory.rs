//! Bounds on the server's memory (issue 24): how many malloc arenas and
//! blocking threads a process may grow, and its resident size for the
//! benchmarks and soaks.
//!
//! Under a many-tenant load each blocking thread (every `db::run`, the
//! ingest writers' commits, DKIM signing) allocates request bodies, diesel
//! buffers and JSON; glibc gives threads their own arenas (up to 8 per core)
//! and keeps freed memory in each, so the resident size grew to the sum of
//! many arenas' high-water marks. Two arenas and a blocking pool sized by
//! the connection pool keep it to what the work needs.

/// Arenas when `MALLOC_ARENA_MAX` does not say otherwise.
pub const ARENAS: i32 = 2;

/// Limits glibc to [`ARENAS`] malloc arenas, unless the operator set
/// `MALLOC_ARENA_MAX` (glibc reads that itself). Call before threads start.
pub fn bound_arenas() {
    if std::env::var_os("MALLOC_ARENA_MAX").is_some() {
        return;
    }
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: mallopt only changes allocator parameters; it is called
    // before the process starts its threads.
    unsafe {
        libc::mallopt(libc::M_ARENA_MAX, ARENAS);
    }
}

/// Blocking threads for a runtime whose blocking work mostly waits for one
/// of `connections` database connections: a thread more than there are
/// connections only waits for one, so the pool bounds them, with room
/// for CPU work (signing, hashing) that needs no connection.
pub fn blocking_threads(connections: u32) -> usize {
    (connections as usize).saturating_add(8).clamp(8, 512)
}

/// Resident and peak resident size of this process, in KiB
/// (`/proc/self/status`: `VmRSS`, `VmHWM`); `None` off Linux.
pub fn rss_kib() -> Option<(u64, u64)> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let field = |name: &str| -> Option<u64> {
        let line = status.lines().find(|l| l.starts_with(name))?;
        line.split_whitespace().nth(1)?.parse().ok()
    };
    Some((field("VmRSS:")?, field("VmHWM:")?))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn blocking_threads_follow_the_pool_within_bounds() {
        assert_eq!(blocking_threads(0), 8);
        assert_eq!(blocking_threads(16), 24);
        assert_eq!(blocking_threads(u32::MAX), 512);
    }

    #[test]
    fn rss_is_read() {
        let (rss, peak) = rss_kib().expect("linux /proc/self/status");
        assert!(rss > 0 && peak >= rss);
    }
}
