//! The allocator: tuned once at start so that memory used for a moment goes back to the
//! kernel, and asked to give back what it holds after work that needed a lot at once.

/// glibc's malloc serves a block above its mmap threshold with a mapping of its own, returned
/// to the kernel on free, but then raises the threshold to that block's size (up to 32 MiB).
/// Each password hash works in a 19 MiB argon2 buffer, so after the first one every later
/// buffer came from the heap arena of whichever blocking-pool thread ran it and stayed
/// there once freed: 20-60 MiB kept per arena, three quarters of the server's memory after a
/// load run. A fixed threshold (setting it turns the adjustment off) hands such blocks, and
/// the other rare multi-megabyte ones (a large room's state, a big federation answer), back
/// as soon as they are freed, while smaller allocations stay in the arenas.
///
/// Free memory inside a heap, below its topmost live allocation, glibc gives back only when
/// asked. Joining a room of 10,000 members left 80 MiB of such holes among a few long-lived
/// allocations (caches) after 16 MiB of live data; a thread asks every few seconds.
#[cfg(all(target_os = "linux", target_env = "gnu"))]
pub fn tune() {
    const MMAP_THRESHOLD: libc::c_int = 1 << 20;
    const TRIM_EVERY: std::time::Duration = std::time::Duration::from_secs(5);
    // SAFETY: mallopt only sets an allocator parameter; no other thread exists yet.
    unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, MMAP_THRESHOLD);
    }
    let trim = || {
        loop {
            std::thread::sleep(TRIM_EVERY);
            // SAFETY: malloc_trim is thread-safe and only returns free pages to the kernel.
            unsafe {
                libc::malloc_trim(0);
            }
        }
    };
    if let Err(e) = std::thread::Builder::new()
        .name("malloc-trim".to_owned())
        .spawn(trim)
    {
        eprintln!("trellis: cannot start the malloc-trim thread: {e}");
    }
}

#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
pub fn tune() {}

/// Hand memory freed by a large piece of work (a big room's state, a large federation
/// answer) back to the kernel now rather than at the next periodic trim.
#[cfg(all(target_os = "linux", target_env = "gnu"))]
pub fn give_back() {
    tokio::task::spawn_blocking(|| {
        // SAFETY: malloc_trim is thread-safe and only returns free pages to the kernel.
        unsafe {
            libc::malloc_trim(0);
        }
    });
}

#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
pub fn give_back() {}
