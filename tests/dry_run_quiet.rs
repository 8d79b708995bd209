//! A dry run logs nothing: `hook … --dry-run`, `apply --all --dry-run` and `gc --dry-run`
//! print their plan on stdout and send no record to syslog or the journal (the log is for
//! what happened on the host, and a dry run changes nothing). The syslog is a datagram
//! listener of this test (`OP_AGENT_SYSLOG_SOCKET`); the same hook without `--dry-run` is
//! the control that shows the listener receives records.

use op_testkit::{PveConf, TestHost};
use std::os::unix::net::UnixDatagram;

/// Every datagram waiting on `sock` (read until 200 ms pass without one).
fn drain(sock: &UnixDatagram) -> Vec<String> {
    let mut lines = Vec::new();
    let mut buf = vec![0u8; 1 << 16];
    while let Ok(n) = sock.recv(&mut buf) {
        if n > 0 {
            lines.push(String::from_utf8_lossy(&buf[..n]).into_owned());
        }
    }
    lines
}

#[test]
fn dry_runs_send_nothing_to_the_log() {
    let host = TestHost::new("dryquiet");
    host.manage_bridged(100, PveConf::bridged(100, 10));
    host.plug_like_pve(100);
    let _running = host.bind_running(&[100]);
    let sock_path = host.root().join("syslog.sock");
    let sock = UnixDatagram::bind(&sock_path).unwrap();
    sock.set_read_timeout(Some(std::time::Duration::from_millis(200)))
        .unwrap();
    let run = |args: &[&str]| {
        host.agent_cmd(args)
            .env("OP_AGENT_SYSLOG_SOCKET", &sock_path)
            .run()
    };

    for args in [
        &["hook", "100", "post-start", "--dry-run"][..],
        &["apply", "--all", "--dry-run"],
        &["gc", "--dry-run"],
    ] {
        let o = run(args);
        assert_eq!(o.code(), Some(0), "{args:?}: {}", o.text());
        assert!(!o.stdout_text().is_empty(), "{args:?} prints its plan");
        let logged = drain(&sock);
        assert!(logged.is_empty(), "{args:?} logged: {logged:?}");
    }
    assert!(host.audit_rows().is_empty(), "{:?}", host.audit_rows());
    assert_eq!(host.ports("ovsbr0"), vec!["veth100i0"], "nothing changed");

    // Control: the real run logs its steps and the chain head to the same listener.
    let o = run(&["hook", "100", "post-start"]);
    assert_eq!(o.code(), Some(0), "{}", o.text());
    let logged = drain(&sock);
    assert!(
        logged.iter().any(|l| l.contains("audit head ")),
        "{logged:?}"
    );
}
