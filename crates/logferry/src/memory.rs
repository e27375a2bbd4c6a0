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
}
