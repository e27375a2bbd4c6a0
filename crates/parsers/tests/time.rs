//! Time parsing edge cases: zones, fractions, `%z` forms, missing year, Time_Offset, Time_Keep,
//! Time_Strict, and time fields that do not read.

#![allow(clippy::unwrap_used, clippy::expect_used)] // helpers of an integration test are test code

mod common;

use common::{check, classic_config, rfc3339};
use logferry_core::EventTime;
use logferry_parsers::time::TimeFormat;
use logferry_parsers::Parsers;
use serde_json::json;

/// (format, input, expected RFC 3339 time or None for no match)
const CASES: &[(&str, &str, Option<&str>)] = &[
    // %z forms
    (
        "%Y-%m-%dT%H:%M:%S%z",
        "2020-02-29T23:59:59Z",
        Some("2020-02-29T23:59:59Z"),
    ),
    (
        "%Y-%m-%dT%H:%M:%S%z",
        "2020-02-29T23:59:59+0000",
        Some("2020-02-29T23:59:59Z"),
    ),
    (
        "%Y-%m-%dT%H:%M:%S%z",
        "2020-02-29T23:59:59+05:30",
        Some("2020-02-29T18:29:59Z"),
    ),
    (
        "%Y-%m-%dT%H:%M:%S%z",
        "2020-03-01T01:00:00-02:00",
        Some("2020-03-01T03:00:00Z"),
    ),
    (
        "%Y-%m-%dT%H:%M:%S%z",
        "2020-03-01T01:00:00-02",
        Some("2020-03-01T03:00:00Z"),
    ),
    (
        "%Y-%m-%dT%H:%M:%S %z",
        "2020-03-01T01:00:00 UTC",
        Some("2020-03-01T01:00:00Z"),
    ),
    ("%Y-%m-%dT%H:%M:%S%z", "2020-03-01T01:00:00", None),
    ("%Y-%m-%dT%H:%M:%S%z", "2020-03-01T01:00:00+2500", None),
    // fractions: any number of digits, nanoseconds kept
    (
        "%Y-%m-%dT%H:%M:%S.%L%z",
        "2019-12-19T17:41:12.7Z",
        Some("2019-12-19T17:41:12.7Z"),
    ),
    (
        "%Y-%m-%dT%H:%M:%S.%L%z",
        "2019-12-19T17:41:12.706Z",
        Some("2019-12-19T17:41:12.706Z"),
    ),
    (
        "%Y-%m-%dT%H:%M:%S.%L%z",
        "2019-12-19T17:41:12.706307780Z",
        Some("2019-12-19T17:41:12.70630778Z"),
    ),
    (
        "%Y-%m-%dT%H:%M:%S.%L%z",
        "2019-12-19T17:41:12.7063077801234+01:00",
        Some("2019-12-19T16:41:12.706307780Z"),
    ),
    ("%Y-%m-%dT%H:%M:%S.%L%z", "2019-12-19T17:41:12.Z", None),
    ("%s.%L", "1576777272.5", Some("2019-12-19T17:41:12.5Z")),
    ("%s", "1576777272", Some("2019-12-19T17:41:12Z")),
    // names, day of year, two-digit year, %T, %e, %a, 12-hour clock
    (
        "%a, %d %b %Y %T %z",
        "Thu, 19 Dec 2019 17:41:12 +0000",
        Some("2019-12-19T17:41:12Z"),
    ),
    (
        "%A %B %e %Y %H:%M:%S",
        "Thursday December  9 2021 08:00:00",
        Some("2021-12-09T08:00:00Z"),
    ),
    (
        "%Y-%j %H:%M:%S",
        "2020-060 12:00:00",
        Some("2020-02-29T12:00:00Z"),
    ),
    (
        "%y%m%d %H%M%S",
        "991231 235959",
        Some("1999-12-31T23:59:59Z"),
    ),
    (
        "%y%m%d %H%M%S",
        "200101 000000",
        Some("2020-01-01T00:00:00Z"),
    ),
    (
        "%I:%M:%S %p %d/%m/%Y",
        "01:30:00 PM 02/03/2021",
        Some("2021-03-02T13:30:00Z"),
    ),
    (
        "%I:%M:%S %p %d/%m/%Y",
        "12:30:00 am 02/03/2021",
        Some("2021-03-02T00:30:00Z"),
    ),
    // literals and blanks
    (
        "[%d/%b/%Y:%H:%M:%S %z]",
        "[19/Dec/2019:17:41:12 +0000]",
        Some("2019-12-19T17:41:12Z"),
    ),
    ("%d/%b/%Y:%H:%M:%S %z", "19-Dec-2019:17:41:12 +0000", None),
    (
        "%b %d %H:%M:%S %Y",
        "Feb  5 17:32:18 2021",
        Some("2021-02-05T17:32:18Z"),
    ),
    // invalid dates
    ("%Y-%m-%d", "2021-02-30", None),
    ("%Y-%m-%d", "2021-13-01", None),
    ("%H:%M:%S %Y", "24:61:00 2021", None),
];

#[test]
fn strptime_table() {
    for (fmt, input, expected) in CASES {
        let got = TimeFormat::new(fmt).unwrap().parse(input);
        assert_eq!(got, expected.map(rfc3339), "{fmt} on {input:?}");
    }
}

#[test]
fn missing_year_takes_the_year_of_now() {
    let f = TimeFormat::new("%b %d %H:%M:%S").unwrap();
    let now = rfc3339("2021-06-15T00:00:00Z");
    assert_eq!(
        f.parse_at("Oct 11 22:14:15", now),
        Some(rfc3339("2021-10-11T22:14:15Z"))
    );
    let now = rfc3339("1999-01-01T00:00:00Z");
    assert_eq!(
        f.parse_at("Feb 28 00:00:00", now),
        Some(rfc3339("1999-02-28T00:00:00Z"))
    );
    // Missing month and day take today's.
    let f = TimeFormat::new("%H:%M:%S").unwrap();
    let now = rfc3339("2022-07-04T10:00:00Z");
    assert_eq!(
        f.parse_at("08:09:10", now),
        Some(rfc3339("2022-07-04T08:09:10Z"))
    );
}

#[test]
fn time_offset_applies_only_without_a_zone() {
    let f = TimeFormat::new("%Y-%m-%d %H:%M:%S")
        .unwrap()
        .with_offset(2 * 3600);
    assert_eq!(
        f.parse("2021-01-01 12:00:00"),
        Some(rfc3339("2021-01-01T10:00:00Z"))
    );
    let f = TimeFormat::new("%Y-%m-%d %H:%M:%S %z")
        .unwrap()
        .with_offset(2 * 3600);
    assert_eq!(
        f.parse("2021-01-01 12:00:00 +0000"),
        Some(rfc3339("2021-01-01T12:00:00Z"))
    );
}

const PARSERS: &str = r#"
[PARSER]
    Name        offset
    Format      regex
    Regex       ^(?<time>[^ ]+ [^ ]+) (?<msg>.*)$
    Time_Key    time
    Time_Format %Y-%m-%d %H:%M:%S
    Time_Offset -0600

[PARSER]
    Name        keep
    Format      json
    Time_Key    ts
    Time_Format %Y-%m-%dT%H:%M:%S.%L%z
    Time_Keep   On

[PARSER]
    Name        drop
    Format      json
    Time_Key    ts
    Time_Format %Y-%m-%dT%H:%M:%S.%L%z

[PARSER]
    Name        lenient
    Format      regex
    Regex       ^(?<time>\S+) (?<msg>.*)$
    Time_Format %Y-%m-%dT%H:%M:%S.%L
    Time_Strict Off

[PARSER]
    Name        ltsv
    Format      ltsv
    Time_Key    time
    Time_Format [%d/%b/%Y:%H:%M:%S %z]
    Types       status:integer

[PARSER]
    Name        logfmt_time
    Format      logfmt
    Time_Key    ts
    Time_Format %s
"#;

#[test]
fn time_options_in_parsers() {
    let parsers = Parsers::from_config(&classic_config("time.conf", PARSERS)).unwrap();
    let p = |n: &str| parsers.get(n).unwrap();

    // Time_Offset: local 12:00 at -0600 is 18:00 UTC; the time key is removed.
    check(
        &p("offset"),
        "2021-01-01 12:00:00 hello",
        Some(json!({"msg": "hello"})),
        Some(rfc3339("2021-01-01T18:00:00Z")),
    );
    // Time_Keep On keeps the field; Off removes it.
    check(
        &p("keep"),
        r#"{"ts":"2021-01-01T00:00:00.5+01:00","m":1}"#,
        Some(json!({"ts": "2021-01-01T00:00:00.5+01:00", "m": 1})),
        Some(rfc3339("2020-12-31T23:00:00.5Z")),
    );
    check(
        &p("drop"),
        r#"{"ts":"2021-01-01T00:00:00.5+01:00","m":1}"#,
        Some(json!({"m": 1})),
        Some(rfc3339("2020-12-31T23:00:00.5Z")),
    );
    // A JSON time that does not read stays, and the time is unset.
    check(
        &p("drop"),
        r#"{"ts":"soon","m":1}"#,
        Some(json!({"ts": "soon", "m": 1})),
        None,
    );
    // A non-string time is not read.
    check(
        &p("drop"),
        r#"{"ts":1700000000,"m":1}"#,
        Some(json!({"ts": 1700000000, "m": 1})),
        None,
    );
    // Time_Strict Off: the missing fraction is tolerated. (Time_Key defaults to `time`.)
    check(
        &p("lenient"),
        "2021-05-05T05:05:05 up",
        Some(json!({"msg": "up"})),
        Some(rfc3339("2021-05-05T05:05:05Z")),
    );
    // LTSV with time and Types.
    check(
        &p("ltsv"),
        "host:127.0.0.1\ttime:[10/Oct/2000:13:55:36 -0700]\tstatus:200\tsize:777",
        Some(json!({"host": "127.0.0.1", "status": 200, "size": "777"})),
        Some(rfc3339("2000-10-10T20:55:36Z")),
    );
    // logfmt epoch seconds; a time that does not read fails the line (as Fluent Bit).
    check(
        &p("logfmt_time"),
        "ts=1576777272 level=info",
        Some(json!({"level": "info"})),
        Some(EventTime::from_parts(1_576_777_272, 0)),
    );
    check(&p("logfmt_time"), "ts=never level=info", None, None);
}

/// Fluent Bit 5.1's `Time_Zone`: an IANA name read from the system zoneinfo, daylight saving
/// included; a fixed offset, a missing Time_Format, or a combination with Time_Offset or
/// Time_System_Timezone is a config error naming the key.
#[test]
fn time_zone_reads_local_times_in_an_iana_zone() {
    let text = "[PARSER]
    Name   berlin
    Format regex
    Regex  ^(?<time>[^ ]+ [^ ]+) (?<msg>.*)$
    Time_Key time
    Time_Format %Y-%m-%d %H:%M:%S
    Time_Zone Europe/Berlin
";
    let parsers = Parsers::from_config(&classic_config("tz.conf", text)).unwrap();
    let p = parsers.get("berlin").unwrap();
    // Winter: CET, +01:00. Summer: CEST, +02:00.
    let winter = p.parse("2024-01-15 10:00:00 hello").unwrap();
    assert_eq!(winter.time, Some(rfc3339("2024-01-15T09:00:00Z")));
    let summer = p.parse("2024-07-15 10:00:00 hello").unwrap();
    assert_eq!(summer.time, Some(rfc3339("2024-07-15T08:00:00Z")));
    // The hour that happens twice (end of summer time): the first, CEST.
    let fold = p.parse("2024-10-27 02:30:00 x").unwrap();
    assert_eq!(fold.time, Some(rfc3339("2024-10-27T00:30:00Z")));

    for (extra, want) in [
        (
            "    Time_Zone +0100\n",
            "Time_Zone: '+0100' is not an IANA time zone name",
        ),
        (
            "    Time_Zone Mars/Olympus\n",
            "Time_Zone: unknown time zone 'Mars/Olympus'",
        ),
        (
            "    Time_Zone Europe/Berlin\n    Time_Offset +0100\n",
            "Time_Zone: parser 'p': Time_Zone cannot be combined with Time_Offset",
        ),
        (
            "    Time_Zone Europe/Berlin\n    Time_System_Timezone On\n",
            "Time_Zone: parser 'p': Time_Zone cannot be combined with Time_System_Timezone",
        ),
    ] {
        let text = format!(
            "[PARSER]\n    Name p\n    Format json\n    Time_Key t\n    Time_Format %Y\n{extra}"
        );
        let Err(errs) = Parsers::from_config(&classic_config("bad.conf", &text)) else {
            panic!("{extra:?} was accepted");
        };
        let all: Vec<String> = errs.iter().map(ToString::to_string).collect();
        assert!(
            all.iter().any(|e| e.contains(want)),
            "{all:?} lacks {want:?}"
        );
    }
    let Err(errs) = Parsers::from_config(&classic_config(
        "nofmt.conf",
        "[PARSER]\n    Name p\n    Format json\n    Time_Zone Europe/Berlin\n",
    )) else {
        panic!("Time_Zone without Time_Format was accepted");
    };
    assert!(errs[0]
        .to_string()
        .contains("Time_Zone: parser 'p': Time_Zone requires Time_Format"));
}
