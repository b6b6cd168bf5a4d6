//! Running the server as a service (#26): JSON logs for log shippers.

use crate::common::*;

#[test]
fn json_logs_are_one_object_a_line() {
    let mut server = ServerProcess::start(&["--log-format", "json", "-v"]);
    let mut alice = server.login("alice");
    server.wait_online("alice");
    alice.finish();
    server.close_console();
    server.signal("TERM");
    assert!(server.wait_exit().success());
    let log = server.stderr();
    // Whole lines only: the collecting thread may be mid-line.
    let whole = &log[..log.rfind('\n').map_or(0, |end| end + 1)];
    let lines: Vec<&str> = whole.lines().collect();
    assert!(lines.len() >= 3, "too few log lines: {log}");
    for line in lines {
        let object: serde_json::Value =
            serde_json::from_str(line).unwrap_or_else(|e| panic!("not JSON ({e}): {line}"));
        assert!(object["level"].is_string(), "no level: {line}");
        assert!(object["timestamp"].is_string(), "no timestamp: {line}");
        assert!(
            object["fields"]["message"].is_string(),
            "no message: {line}"
        );
    }
}
