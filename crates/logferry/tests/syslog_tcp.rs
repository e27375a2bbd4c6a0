//! The `syslog` input with Python's `logging.handlers.SysLogHandler` as the client (UDP, TCP,
//! Unix datagram and Unix stream sockets, RFC 3164 and RFC 5424), and the `tcp` input with raw
//! TCP clients, end to end through the binary.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::io::Write;
use std::path::Path;
use std::process::Command;

use common::{free_port, log_of, out_file_records, python, wait, write, Agent};

fn send_syslog(mode: &str, address: &str, count: usize, format: &str) {
    let st = Command::new(python())
        .arg(Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/syslog/syslog_client.py"))
        .args([mode, address, &count.to_string(), format])
        .status()
        .unwrap();
    assert!(
        st.success(),
        "SysLogHandler client ({mode} {address}) failed"
    );
}

#[test]
fn syslog_over_udp_tcp_and_unix_sockets_is_parsed_by_the_default_parsers() {
    let py = python();
    assert!(py.exists(), "{} not found", py.display());
    let dir = tempfile::tempdir().unwrap();
    let (udp, tcp) = (free_port(), free_port());
    let (dgram, stream) = (dir.path().join("log.dgram"), dir.path().join("log.stream"));
    let conf = write(
        dir.path(),
        "syslog.conf",
        &format!(
            "[SERVICE]\n    Flush 0.2\n\n\
             [INPUT]\n    Name syslog\n    Mode udp\n    Listen 127.0.0.1\n    Port {udp}\n    Tag s.udp\n\n\
             [INPUT]\n    Name syslog\n    Mode tcp\n    Listen 127.0.0.1\n    Port {tcp}\n    Tag s.tcp\n    Source_Address_Key src\n\n\
             [INPUT]\n    Name syslog\n    Path {}\n    Tag s.unix_udp\n\n\
             [INPUT]\n    Name syslog\n    Mode unix_tcp\n    Path {}\n    Tag s.unix_tcp\n    Raw_Message_Key raw\n\n\
             [OUTPUT]\n    Name file\n    Match *\n    Path {}\n    Mkdir on\n",
            dgram.display(),
            stream.display(),
            dir.path().join("out").display()
        ),
    );
    let agent = Agent::start(&conf, &[]).started();
    assert!(wait(10, || dgram.exists() && stream.exists()));
    send_syslog("udp", &format!("127.0.0.1:{udp}"), 20, "5424");
    send_syslog("tcp", &format!("127.0.0.1:{tcp}"), 20, "5424");
    send_syslog("unix_udp", dgram.to_str().unwrap(), 20, "3164");
    send_syslog("unix_tcp", stream.to_str().unwrap(), 20, "3164");
    let out = dir.path().join("out");
    let tags = ["s.udp", "s.tcp", "s.unix_udp", "s.unix_tcp"];
    assert!(
        wait(20, || tags
            .iter()
            .all(|t| out_file_records(&out.join(t)).len() >= 20)),
        "{}",
        log_of(&agent)
    );
    for tag in tags {
        let recs = out_file_records(&out.join(tag));
        assert_eq!(recs.len(), 20, "{tag}");
        for (i, (secs, _, r)) in recs.iter().enumerate() {
            assert_eq!(r["message"], format!("hello {i}"), "{tag}: {r}");
            // LOG_LOCAL0 (16) * 8 + WARNING (4)
            assert_eq!(r["pri"], "132", "{tag}");
            assert!(*secs > 1_600_000_000);
            if tag.starts_with("s.unix") {
                assert_eq!(r["ident"], "myapp", "{tag}");
                assert!(r["pid"].as_str().unwrap().parse::<u32>().is_ok());
            } else {
                assert_eq!(r["host"], "testhost");
                assert_eq!(r["ident"], "myapp");
                assert_eq!(r["msgid"], "ID47");
            }
        }
    }
    let tcp_recs = out_file_records(&out.join("s.tcp"));
    assert!(tcp_recs[0].2["src"]
        .as_str()
        .unwrap()
        .starts_with("tcp://127.0.0.1:"));
    let raw = out_file_records(&out.join("s.unix_tcp"));
    assert!(raw[0].2["raw"].as_str().unwrap().starts_with("<132>"));
    agent.stop();
}

#[test]
fn tcp_input_reads_json_and_separated_text() {
    let dir = tempfile::tempdir().unwrap();
    let (json, none) = (free_port(), free_port());
    let conf = write(
        dir.path(),
        "tcp.conf",
        &format!(
            "[SERVICE]\n    Flush 0.2\n\n\
             [INPUT]\n    Name tcp\n    Listen 127.0.0.1\n    Port {json}\n    Tag t.json\n    Chunk_Size 1\n    Buffer_Size 2\n\n\
             [INPUT]\n    Name tcp\n    Listen 127.0.0.1\n    Port {none}\n    Tag t.none\n    Format none\n    Separator ||\n\n\
             [OUTPUT]\n    Name file\n    Match *\n    Path {}\n    Mkdir on\n",
            dir.path().join("out").display()
        ),
    );
    let agent = Agent::start(&conf, &[]).started();
    assert!(wait(10, || log_of(&agent).matches("listening on").count() >= 2));
    let mut s = std::net::TcpStream::connect(("127.0.0.1", json)).unwrap();
    // Objects with and without newlines, one split across writes, a non-object skipped.
    s.write_all(b"{\"n\":1}\n{\"n\":2}{\"n\":").unwrap();
    s.flush().unwrap();
    std::thread::sleep(std::time::Duration::from_millis(100));
    s.write_all(b"3}\n42\n{\"n\":4}").unwrap();
    drop(s);
    let mut s = std::net::TcpStream::connect(("127.0.0.1", none)).unwrap();
    s.write_all(b"first||second||last").unwrap();
    drop(s);
    // A message over Buffer_Size (2KB) closes that connection; others go on.
    let mut s = std::net::TcpStream::connect(("127.0.0.1", json)).unwrap();
    let _ = s.write_all(format!("{{\"big\":\"{}\"}}", "x".repeat(4000)).as_bytes());
    drop(s);
    let out = dir.path().join("out");
    assert!(
        wait(15, || out_file_records(&out.join("t.json")).len() >= 4
            && out_file_records(&out.join("t.none")).len() >= 3
            && agent.logged("longer than Buffer_Size")),
        "{}",
        log_of(&agent)
    );
    let ns: Vec<i64> = out_file_records(&out.join("t.json"))
        .iter()
        .map(|(_, _, r)| r["n"].as_i64().unwrap())
        .collect();
    assert_eq!(ns, [1, 2, 3, 4]);
    let logs: Vec<String> = out_file_records(&out.join("t.none"))
        .iter()
        .map(|(_, _, r)| r["log"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(logs, ["first", "second", "last"]);
    assert!(agent.logged("not a JSON object"));
    agent.stop();
}
