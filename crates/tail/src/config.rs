//! The `tail` input's options, with Fluent Bit's names and defaults (Fluent Bit 5.x
//! `pipeline/inputs/tail.md`).

use std::time::Duration;

use logferry_core::config::ByteSize;
use logferry_core::options;
use logferry_engine::common::NotApplied;

options! {
    /// Options of the `tail` input.
    pub struct TailOptions for "tail input" {
        /// Glob pattern(s) of files to read; several separated by commas.
        pub path: String = ["Path"] None,
        /// Glob pattern(s) of files to leave out; several separated by commas.
        pub exclude_path: Option<String> = ["Exclude_Path"] None,
        /// Add the file's path to each record under this key.
        pub path_key: Option<String> = ["Path_Key"] None,
        /// Add the line's byte offset in its file to each record under this key.
        pub offset_key: Option<String> = ["Offset_Key"] None,
        /// Read files found at start (with no DB offset) from the beginning instead of the end.
        pub read_from_head: bool = ["Read_from_Head"] Some("false"),
        /// Files that appear after start are read from the beginning.
        pub read_newly_discovered_files_from_head: bool = ["Read_Newly_Discovered_Files_From_Head"] Some("true"),
        /// Seconds between re-scans of the Path patterns (inotify also finds new files at once).
        pub refresh_interval: Duration = ["Refresh_Interval"] Some("60"),
        /// Seconds a rotated file stays open after rotation once read to its end.
        pub rotate_wait: Duration = ["Rotate_Wait"] Some("5"),
        /// logferry only: most unread bytes of rotated or deleted files kept open until read; past it the oldest is closed, its unread bytes dropped and counted (0: no limit).
        pub rotated_hold_limit: ByteSize = ["Rotated_Hold_Limit"] Some("1G"),
        /// Skip files not modified for this long (`10m`, `2h`, `1d`).
        pub ignore_older: Option<Duration> = ["Ignore_Older"] None,
        /// Initial read buffer per file.
        pub buffer_chunk_size: ByteSize = ["Buffer_Chunk_Size"] Some("32k"),
        /// Longest line kept; see Skip_Long_Lines for what happens to longer ones.
        pub buffer_max_size: ByteSize = ["Buffer_Max_Size"] Some("32k"),
        /// Skip lines longer than Buffer_Max_Size (Off: keep their first Buffer_Max_Size bytes).
        pub skip_long_lines: bool = ["Skip_Long_Lines"] Some("off"),
        /// Keep the first Buffer_Max_Size bytes of a longer line (wins over Skip_Long_Lines).
        pub truncate_long_lines: bool = ["Truncate_Long_Lines"] Some("off"),
        /// Do not emit empty lines.
        pub skip_empty_lines: bool = ["Skip_Empty_Lines"] Some("off"),
        /// SQLite file that keeps offsets (Fluent Bit's `in_tail_files` table).
        pub db: Option<String> = ["DB"] None,
        /// SQLite synchronous mode: Extra, Full, Normal or Off.
        pub db_sync: String = ["DB.sync"] Some("normal"),
        /// Open the DB in exclusive locking mode.
        pub db_locking: bool = ["DB.locking"] Some("false"),
        /// SQLite journal mode: DELETE, TRUNCATE, PERSIST, MEMORY, WAL or OFF.
        pub db_journal_mode: String = ["DB.journal_mode"] Some("WAL"),
        /// Match DB entries by inode and file name (default: inode only).
        pub db_compare_filename: bool = ["DB.compare_filename"] Some("false"),
        /// Stop the agent once every file has been read to its end.
        pub exit_on_eof: bool = ["Exit_On_Eof"] Some("false"),
        /// Parser applied to each line.
        pub parser: Option<String> = ["Parser"] None,
        /// Key of the raw line when no parser applies.
        pub key: String = ["Key"] Some("log"),
        /// Use inotify to learn of changes at once (Off: polling only).
        pub inotify_watcher: bool = ["Inotify_Watcher"] Some("true"),
        /// Regex on the file path whose named groups fill `<name>` in Tag.
        pub tag_regex: Option<String> = ["Tag_Regex"] None,
        /// Bytes read per file per round from files that existed at start.
        pub static_batch_size: ByteSize = ["Static_Batch_Size"] Some("50M"),
        /// Bytes read per file per round (accepted; see Static_Batch_Size).
        pub event_batch_size: Option<ByteSize> = ["Event_Batch_Size"] None,
        /// Page-cache advice for read files (accepted; no effect).
        pub file_cache_advise: bool = ["File_Cache_Advise"] Some("on"),
        /// Seconds between checks for progress on idle files (accepted; polling is every 250ms).
        pub progress_check_interval: Option<String> = ["Progress_Check_Interval"] None,
        /// How often each followed file's path is checked for rotation (default 1s here; 2s in
        /// Fluent Bit, which checks symbolic links only).
        pub watcher_interval: Option<std::time::Duration> = ["Watcher_Interval"] None,
        /// Nanoseconds part of Progress_Check_Interval (accepted).
        pub progress_check_interval_nsec: Option<String> = ["Progress_Check_Interval_Nsec"] None,
        /// Multiline parsers for container framing: `docker`, `cri` (comma-separated, tried in order).
        pub multiline_parser: Option<String> = ["multiline.parser"] None,
        /// Key that multiline parsers join (default `log`).
        pub multiline_key_content: Option<String> = ["multiline.key_content"] None,
        /// Old multiline mode (Off only: On is not yet available; use multiline.parser).
        pub multiline: bool = ["Multiline"] Some("off"),
        /// Old multiline: seconds to wait for more lines.
        pub multiline_flush: Duration = ["Multiline_Flush"] Some("4"),
        /// Old multiline: parser of the first line.
        pub parser_firstline: Option<String> = ["Parser_Firstline"] None,
        /// Join Docker json-file lines split at 16 KiB (no trailing newline) before parsing.
        pub docker_mode: bool = ["Docker_Mode"] Some("off"),
        /// Seconds to wait for the rest of a split Docker line before emitting what there is.
        pub docker_mode_flush: Duration = ["Docker_Mode_Flush"] Some("4"),
        /// Parser of the first line in Docker mode (accepted; not applied yet).
        pub docker_mode_parser: Option<String> = ["Docker_Mode_Parser"] None,
        /// Input encoding conversion (accepted; input is read as UTF-8).
        pub unicode_encoding: Option<String> = ["Unicode.Encoding"] None,
        /// Input encoding conversion (accepted; input is read as UTF-8).
        pub generic_encoding: Option<String> = ["Generic.Encoding"] None,
        /// Also stop following active files once older than Ignore_Older (accepted; not applied).
        pub ignore_active_older_files: bool = ["Ignore_Active_Older_Files"] Some("false"),
        /// Path encoding on Windows (accepted; Windows only).
        pub windows_path_encoding: Option<String> = ["windows.path_encoding"] None,
    }
}

/// Keys accepted and not applied (each one set to something that matters is a build note).
pub const NOT_APPLIED: &[NotApplied] = &[
    NotApplied::new(
        "Event_Batch_Size",
        None,
        "every file is read Static_Batch_Size at a time",
    ),
    NotApplied::new(
        "File_Cache_Advise",
        Some("on"),
        "the page cache is left to the kernel",
    ),
    NotApplied::new(
        "Progress_Check_Interval",
        None,
        "idle files are polled every 250ms and inotify wakes the input",
    ),
    NotApplied::new(
        "Progress_Check_Interval_Nsec",
        None,
        "idle files are polled every 250ms and inotify wakes the input",
    ),
    NotApplied::new(
        "Docker_Mode_Parser",
        None,
        "Docker mode joins split lines without a first-line parser",
    ),
    NotApplied::new(
        "Unicode.Encoding",
        None,
        "files are read as UTF-8 (invalid bytes pass as they are)",
    ),
    NotApplied::new(
        "Generic.Encoding",
        None,
        "files are read as UTF-8 (invalid bytes pass as they are)",
    ),
    NotApplied::new(
        "Ignore_Active_Older_Files",
        Some("false"),
        "a followed file is read until it is removed or rotated away",
    ),
    NotApplied::new("windows.path_encoding", None, "Windows only"),
];

/// `Parser_1`, `Parser_2`, …: the old multiline mode's line parsers.
pub fn is_old_multiline_parser(key: &str) -> bool {
    match (key.get(..7), key.get(7..)) {
        (Some(p), Some(n)) => {
            p.eq_ignore_ascii_case("parser_")
                && !n.is_empty()
                && n.bytes().all(|b| b.is_ascii_digit())
        }
        _ => false,
    }
}

/// Splits a comma-separated pattern list.
pub fn split_patterns(s: &str) -> Vec<String> {
    s.split(',')
        .map(str::trim)
        .filter(|p| !p.is_empty())
        .map(String::from)
        .collect()
}
