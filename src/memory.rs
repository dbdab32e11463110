//! Bounds on the server's memory (issue 24): how many malloc arenas and
//! blocking threads a process may grow, and its resident size for the
//! benchmarks and soaks.
//!
//! Under a 50-tenant load the resident size rose from ~105 MB to ~950 MB
//! within the first seconds and stayed at 420–800 MB: each tenant's key is
//! verified once (argon2id, one 19 MiB block at a time). glibc serves the
//! first such block by `mmap`, and on its `free` raises its mmap threshold
//! to that size, so every later block came from the heap, was freed between
//! small allocations and could not be reused or returned: `malloc_stats`
//! then showed 365 MB held in one arena with 44 MB in use. A fixed
//! [`MMAP_THRESHOLD`] keeps large blocks on `mmap` (returned on `free`), and
//! [`ARENAS`] arenas keep the many blocking threads from each keeping their
//! own high-water mark.

/// Arenas when `MALLOC_ARENA_MAX` does not say otherwise.
pub const ARENAS: i32 = 2;

/// Allocations from this size up are mapped and unmapped on their own
/// (unless `MALLOC_MMAP_THRESHOLD_` says otherwise): request bodies and
/// argon2's block, never the small buffers of the hot path.
pub const MMAP_THRESHOLD: i32 = 1024 * 1024;

/// Bounds glibc's malloc: [`ARENAS`] arenas (unless the operator set
/// `MALLOC_ARENA_MAX`) and a fixed [`MMAP_THRESHOLD`] (unless
/// `MALLOC_MMAP_THRESHOLD_` is set; glibc reads both itself). Call before
/// threads start.
pub fn bound_arenas() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        if std::env::var_os("MALLOC_ARENA_MAX").is_none() {
            // SAFETY: mallopt only changes allocator parameters; it is
            // called before the process starts its threads.
            unsafe {
                libc::mallopt(libc::M_ARENA_MAX, ARENAS);
            }
        }
        if std::env::var_os("MALLOC_MMAP_THRESHOLD_").is_none() {
            // SAFETY: as above.
            unsafe {
                libc::mallopt(libc::M_MMAP_THRESHOLD, MMAP_THRESHOLD);
            }
        }
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
    Some((
        status_kib(&status, "VmRSS:")?,
        status_kib(&status, "VmHWM:")?,
    ))
}

/// Resident size of process `pid`, in KiB (`/proc/<pid>/status`); the soak
/// benchmark reads the server's from outside.
pub fn rss_kib_of(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status_kib(&status, "VmRSS:")
}

fn status_kib(status: &str, field: &str) -> Option<u64> {
    let line = status.lines().find(|l| l.starts_with(field))?;
    line.split_whitespace().nth(1)?.parse().ok()
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
        let of = rss_kib_of(std::process::id()).expect("/proc/<pid>/status");
        assert!(of > 0);
        assert_eq!(rss_kib_of(u32::MAX), None);
    }
}
