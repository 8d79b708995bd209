//! The service's heap on glibc: few malloc arenas and free pages handed back after work, so a
//! long-running service with many containers stays small (glibc `mallopt(3)`,
//! `malloc_trim(3)`).

/// At most two malloc arenas (`M_ARENA_MAX`; glibc's default is 8 per core): the service's
/// threads (event loop, worker, conf watch, audit helpers) allocate little and rarely at the
/// same time, and every extra arena keeps its own free pages resident. Call before threads
/// start. Without effect on other C libraries.
pub fn limit_arenas() {
    #[cfg(target_env = "gnu")]
    // SAFETY: mallopt only sets an allocator tunable; called before other threads exist.
    unsafe {
        libc::mallopt(libc::M_ARENA_MAX, 2);
    }
}

/// Returns free heap pages to the kernel (`malloc_trim(0)`), after a burst of runs.
pub fn trim() {
    #[cfg(target_env = "gnu")]
    // SAFETY: malloc_trim only releases free memory of the allocator.
    unsafe {
        libc::malloc_trim(0);
    }
}
