//! Time_System_Timezone reads zone-less times in the TZ zone. Alone in its own test binary
//! because it sets TZ for the process.

#![allow(clippy::unwrap_used, clippy::expect_used)] // helpers of an integration test are test code

use logferry_parsers::time::TimeFormat;

#[test]
fn system_timezone_follows_tz() {
    std::env::set_var("TZ", "America/New_York");
    if !std::path::Path::new("/usr/share/zoneinfo/America/New_York").exists() {
        // A POSIX TZ rule needs no database.
        std::env::set_var("TZ", "EST5EDT,M3.2.0,M11.1.0");
    }
    let f = TimeFormat::new("%Y-%m-%d %H:%M:%S")
        .unwrap()
        .with_system_timezone(true);
    // Winter: UTC-5; summer: UTC-4.
    assert_eq!(
        f.parse("2021-01-15 12:00:00").map(|t| t.secs()),
        Some(1_610_730_000)
    );
    assert_eq!(
        f.parse("2021-07-15 12:00:00").map(|t| t.secs()),
        Some(1_626_364_800)
    );
    // A zone in the text wins over the system zone.
    let f = TimeFormat::new("%Y-%m-%d %H:%M:%S %z")
        .unwrap()
        .with_system_timezone(true);
    assert_eq!(
        f.parse("2021-01-15 12:00:00 +0000").map(|t| t.secs()),
        Some(1_610_712_000)
    );
}
