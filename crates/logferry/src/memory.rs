//! Idle memory: the pages of the binary that only start-up used.
//!
//! Starting the agent runs much of its code once (config readers, every plugin's build, the
//! AWS SDK's and rustls' set-up) and the kernel then keeps those pages of the executable mapped
//! in the process (whole large folios at a time): about 10 MB of the 19 MB an idle agent had
//! resident were the binary's own read-only pages, against 4 MB of heap and stacks
//! (docs/performance.md, "Idle and pod churn"). They are handed back to the kernel with
//! `MADV_PAGEOUT` twice: just before the pipeline runs (so an agent that starts on a backlog
//! does not carry them at its peak: 2.7–3.5 MB less for P1 and P4), and once it is up, for
//! what its plugins' start ran. What the running pipeline uses is faulted back in from the
//! file as it is used.
//!
//! And the allocator's: mimalloc gives freed pages back after [`PURGE_DELAY_MS`] rather than
//! its default 10 ms ([`tune_allocator`]).

use std::time::Duration;

/// How long after the pipeline starts the start-up pages are released (its outputs, inputs
/// and the HTTP server are up by then).
pub const RELEASE_AFTER: Duration = Duration::from_secs(2);

/// One mapping of `/proc/self/maps`: start, length, whether it is writable, and its path.
fn parse_mapping(line: &str) -> Option<(usize, usize, bool, &str)> {
    let mut fields = line.splitn(6, ' ');
    let range = fields.next()?;
    let perms = fields.next()?;
    let (_offset, _dev, _inode) = (fields.next()?, fields.next()?, fields.next()?);
    let path = fields.next().unwrap_or("").trim_start();
    let (start, end) = range.split_once('-')?;
    let start = usize::from_str_radix(start, 16).ok()?;
    let end = usize::from_str_radix(end, 16).ok()?;
    Some((
        start,
        end.checked_sub(start)?,
        perms.as_bytes().get(1) == Some(&b'w'),
        path,
    ))
}

/// The read-only mappings of `exe` in `maps` (the text of `/proc/self/maps`): code, constants
/// and relocated read-only data. Writable ones (`.data`, `.bss`) are left alone: their pages
/// are the process's own and could only go to swap.
fn read_only_mappings<'a>(
    maps: &'a str,
    exe: &'a str,
) -> impl Iterator<Item = (usize, usize)> + 'a {
    maps.lines()
        .filter_map(parse_mapping)
        .filter(move |&(_, len, writable, path)| path == exe && !writable && len > 0)
        .map(|(start, len, _, _)| (start, len))
}

/// Hands the resident pages of the binary's read-only mappings back to the kernel
/// (`MADV_PAGEOUT`, Linux 5.4 and later): returns the bytes advised. Nothing changes for the
/// program: a page used again is read back from the executable (a page a process altered,
/// such as relocated data, is never dropped, only swapped where there is swap).
#[cfg(target_os = "linux")]
pub fn release_startup_pages() -> std::io::Result<usize> {
    let exe = std::fs::read_link("/proc/self/exe")?;
    let exe = exe.to_string_lossy();
    let maps = std::fs::read_to_string("/proc/self/maps")?;
    let mut advised = 0;
    for (start, len) in read_only_mappings(&maps, &exe) {
        // SAFETY: MADV_PAGEOUT is a reclaim hint: it never changes what the range holds (clean
        // file pages are read back on their next use, altered ones are kept or swapped), so
        // no reference into these mappings is invalidated. The range is a whole mapping of
        // this process, as the kernel listed it.
        #[allow(unsafe_code)]
        let rc = unsafe { libc::madvise(start as *mut libc::c_void, len, libc::MADV_PAGEOUT) };
        if rc != 0 {
            return Err(std::io::Error::last_os_error());
        }
        advised += len;
    }
    Ok(advised)
}

/// Elsewhere: nothing to do.
#[cfg(not(target_os = "linux"))]
pub fn release_startup_pages() -> std::io::Result<usize> {
    Ok(0)
}

/// mimalloc's `mi_option_purge_delay`: its place in `mi_option_e` (v2's `include/mimalloc.h`),
/// which `libmimalloc-sys` does not name. A test checks it reads mimalloc's documented default.
const MI_OPTION_PURGE_DELAY: libmimalloc_sys::mi_option_t = 15;

/// How long, in milliseconds, mimalloc keeps freed pages before giving them back to the kernel
/// (its own default is 10). Records are made and freed at hundreds of MB/s, so pages given
/// back after 10 ms are soon faulted in again: in P5 (the seed into CloudWatch Logs) that was
/// 42,781–43,842 page faults per 300,000 events; at 50 ms, 21,142–25,293, for 2–5 MB more at
/// P5's peak, still under its target (docs/performance.md, eleventh session).
pub const PURGE_DELAY_MS: i64 = 50;

/// The environment variables mimalloc reads the purge delay from (the second is its old name).
const PURGE_DELAY_ENV: [&str; 2] = ["MIMALLOC_PURGE_DELAY", "MIMALLOC_RESET_DELAY"];

/// Sets mimalloc's purge delay to [`PURGE_DELAY_MS`] unless the environment sets it, which
/// mimalloc has read at process start and which then stays. Must run before any other thread
/// starts (mimalloc's options are plain variables). Returns the delay it set, if any.
pub fn tune_allocator() -> Option<i64> {
    tune_allocator_with(|k| std::env::var_os(k).is_some())
}

fn tune_allocator_with(is_set: impl Fn(&str) -> bool) -> Option<i64> {
    if PURGE_DELAY_ENV.iter().any(|k| is_set(k)) {
        return None;
    }
    // SAFETY: `mi_option_set` writes one of mimalloc's option variables, checking the index
    // against its table; it is called from `main` before the runtime starts other threads.
    #[allow(unsafe_code)]
    unsafe {
        libmimalloc_sys::mi_option_set(MI_OPTION_PURGE_DELAY, PURGE_DELAY_MS as _);
    }
    Some(PURGE_DELAY_MS)
}

/// mimalloc's current purge delay.
#[cfg(test)]
fn purge_delay() -> i64 {
    // SAFETY: reads one of mimalloc's option variables (index checked by mimalloc).
    #[allow(unsafe_code)]
    unsafe {
        libmimalloc_sys::mi_option_get(MI_OPTION_PURGE_DELAY)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MAPS: &str = "\
5581a0000000-5581a0200000 r--p 00000000 fd:01 1234 /usr/bin/log ferry
5581a0200000-5581a1800000 r-xp 00200000 fd:01 1234 /usr/bin/log ferry
5581a1800000-5581a1900000 rw-p 01800000 fd:01 1234 /usr/bin/log ferry
5581a1900000-5581a1a00000 rw-p 00000000 00:00 0 
7f0000000000-7f0000100000 r-xp 00000000 fd:01 99 /usr/lib/x86_64-linux-gnu/libc.so.6
7ffd00000000-7ffd00021000 rw-p 00000000 00:00 0                          [stack]
";

    #[test]
    fn only_the_binarys_read_only_mappings() {
        let got: Vec<(usize, usize)> = read_only_mappings(MAPS, "/usr/bin/log ferry").collect();
        assert_eq!(
            got,
            vec![(0x5581a0000000, 0x200000), (0x5581a0200000, 0x1600000)],
            "code and read-only data, not .data nor other files nor anonymous memory"
        );
    }

    #[test]
    fn a_malformed_line_is_skipped() {
        assert_eq!(parse_mapping("zzzz r-xp"), None);
        assert_eq!(parse_mapping("2000-1000 r-xp 0 0:0 0 /x"), None);
    }

    /// Resident kB of this test binary's read-only mappings (`/proc/self/smaps`).
    fn resident_read_only_kb() -> u64 {
        let exe = std::fs::read_link("/proc/self/exe").unwrap();
        let exe = exe.to_string_lossy().into_owned();
        let smaps = std::fs::read_to_string("/proc/self/smaps").unwrap();
        let mut ours = false;
        let mut kb = 0;
        for line in smaps.lines() {
            if let Some((_, _, writable, path)) = parse_mapping(line) {
                ours = path == exe && !writable;
            } else if let Some(v) = line.strip_prefix("Rss:") {
                if ours {
                    kb += v.trim().trim_end_matches(" kB").parse::<u64>().unwrap();
                }
            }
        }
        kb
    }

    #[test]
    fn releasing_pages_the_binary_out_and_it_keeps_running() {
        let before = resident_read_only_kb();
        let advised = release_startup_pages().expect("madvise(MADV_PAGEOUT)");
        assert!(advised > 0, "the test binary has read-only mappings");
        let after = resident_read_only_kb();
        assert!(
            after < before,
            "resident {before} kB before, {after} kB after"
        );
        // Code and constants are read back as they are used.
        assert_eq!(
            read_only_mappings(MAPS, "/usr/bin/log ferry").count(),
            2,
            "still runs after its pages went"
        );
    }

    /// One test, so nothing else in this binary sets the option between its reads.
    #[test]
    fn the_purge_delay_is_set_unless_the_environment_sets_it() {
        if PURGE_DELAY_ENV
            .iter()
            .any(|k| std::env::var_os(k).is_some())
        {
            panic!("unset {PURGE_DELAY_ENV:?} to run this test: it reads mimalloc's default");
        }
        // mimalloc's documented default for purge_delay: this fails if the index names
        // another option (eager_commit_delay is 1, use_numa_nodes 0).
        assert_eq!(
            purge_delay(),
            10,
            "mimalloc's own default, read at index 15"
        );
        assert_eq!(tune_allocator_with(|k| k == "MIMALLOC_PURGE_DELAY"), None);
        assert_eq!(tune_allocator_with(|k| k == "MIMALLOC_RESET_DELAY"), None);
        assert_eq!(purge_delay(), 10, "a delay set in the environment stays");
        assert_eq!(tune_allocator_with(|_| false), Some(PURGE_DELAY_MS));
        assert_eq!(purge_delay(), PURGE_DELAY_MS);
    }
}
