//! `chat-bench` end to end against the real server: tiny runs that check it
//! works, never how fast (no timing assertions here).

mod common;

use std::process::Command;

use common::ServerProcess;

fn bench(server: &ServerProcess, args: &[&str]) -> serde_json::Value {
    let output = Command::new(env!("CARGO_BIN_EXE_chat-bench"))
        .args(&args[..1])
        .args(["--addr", &format!("127.0.0.1:{}", server.port)])
        .args(["--pid", &server.pid().to_string()])
        .args(&args[1..])
        .output()
        .expect("run chat-bench");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "chat-bench failed:\n{stderr}");
    assert_eq!(stdout.lines().count(), 1, "one JSON line: {stdout}");
    serde_json::from_str(&stdout).expect("valid JSON")
}

/// A small throughput run with `extra` options: everything arrives, in
/// order, without errors.
fn throughput_completes(server: &ServerProcess, extra: &[&str]) {
    let mut args = vec![
        "throughput",
        "--pairs",
        "3",
        "--messages",
        "300",
        "--size",
        "40",
        "--window",
        "16",
    ];
    args.extend_from_slice(extra);
    let report = bench(server, &args);
    assert_eq!(report["delivered"], 900);
    assert_eq!(report["ordering_errors"], 0);
    assert_eq!(report["error_frames"], 0);
    assert_eq!(report["complete"], true);
    assert!(report["server_cpu_s"].as_f64().is_some());
}

#[test]
fn throughput_delivers_everything_in_order() {
    let server = ServerProcess::start(&["-q"]);
    throughput_completes(&server, &[]);
}

#[test]
fn throughput_carries_sealed_envelopes_whole_and_in_order() {
    let server = ServerProcess::start(&["-q"]);
    throughput_completes(&server, &["--sealed"]);
    throughput_completes(&server, &["--sealed", "--receipts"]);
    let report = bench(
        &server,
        &[
            "throughput",
            "--pairs",
            "1",
            "--messages",
            "10",
            "--size",
            "1024",
            "--sealed",
        ],
    );
    assert_eq!(report["sealed"], true);
    // An Olm pre-key message of 1 KiB, its keys and the envelope's head.
    let bytes = report["content_bytes"].as_u64().unwrap();
    assert!((1100..1400).contains(&bytes), "{bytes}");
}

#[test]
fn latency_reports_percentiles_and_nothing_lost() {
    let server = ServerProcess::start(&["-q"]);
    let report = bench(
        &server,
        &[
            "latency",
            "--pairs",
            "2",
            "--rate",
            "400",
            "--duration",
            "500ms",
        ],
    );
    assert_eq!(report["lost"], 0);
    assert!(report["received"].as_u64().unwrap() > 100);
    let p50 = report["p50_us"].as_f64().unwrap();
    let p99 = report["p99_us"].as_f64().unwrap();
    assert!(p50 > 0.0 && p50 <= p99, "{report}");
}

#[test]
fn conns_holds_idle_connections_and_checks_liveness() {
    let server = ServerProcess::start(&["-q"]);
    let report = bench(&server, &["conns", "--count", "300", "--hold", "100ms"]);
    assert_eq!(report["count"], 300);
    assert_eq!(report["live_checks"], 100);
    assert!(report["bytes_per_conn"].as_f64().unwrap() > 0.0);
}

#[test]
fn an_unreachable_server_is_a_clean_failure() {
    let output = Command::new(env!("CARGO_BIN_EXE_chat-bench"))
        .args(["throughput", "--addr", "127.0.0.1:1", "--messages", "1"])
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&output.stderr).starts_with("chat-bench: "));
}

#[test]
fn latency_works_with_the_largest_messages() {
    // A server frame of 6 + name + 65,535 bytes is larger than 64 KiB.
    let server = ServerProcess::start(&["-q", "--max-message-bytes", "65535"]);
    for spin in [false, true] {
        let mut args = vec![
            "latency",
            "--pairs",
            "1",
            "--rate",
            "100",
            "--duration",
            "300ms",
            "--size",
            "65535",
        ];
        if spin {
            args.push("--spin");
        }
        let report = bench(&server, &args);
        assert_eq!(report["lost"], 0, "{report}");
        assert!(report["received"].as_u64().unwrap() >= 20, "{report}");
    }
}

#[test]
fn throughput_and_latency_work_over_tls() {
    let dir = std::env::temp_dir().join(format!("pmchat-bench-tls-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let mut command = Command::new(env!("CARGO_BIN_EXE_chat-server"));
    command
        .args([
            "0",
            "--bind",
            "127.0.0.1",
            "-q",
            "--require-tls",
            "--tls-self-signed",
        ])
        .arg(&dir)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped());
    let server = ServerProcess::spawn(command);
    let ca = dir.join("ca.pem");
    let ca = ca.to_str().unwrap();
    let report = bench(
        &server,
        &[
            "throughput",
            "--tls-ca",
            ca,
            "--pairs",
            "4",
            "--messages",
            "5000",
            "--size",
            "1024",
            "--timeout",
            "10s",
        ],
    );
    // Enough that TLS records pile up beyond one read: none may be left
    // waiting for a readiness event that never comes.
    assert_eq!(report["delivered"], 20_000);
    assert_eq!(report["ordering_errors"], 0);
    let report = bench(
        &server,
        &[
            "latency",
            "--tls-ca",
            ca,
            "--pairs",
            "2",
            "--rate",
            "200",
            "--duration",
            "300ms",
        ],
    );
    assert_eq!(report["lost"], 0);
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn throughput_and_latency_work_on_the_gob_wire() {
    let server = ServerProcess::start(&["-q"]);
    throughput_completes(&server, &["--wire", "gob"]);
    let report = bench(
        &server,
        &[
            "latency",
            "--wire",
            "gob",
            "--pairs",
            "2",
            "--rate",
            "400",
            "--duration",
            "300ms",
        ],
    );
    assert_eq!(report["lost"], 0);
}

#[test]
fn latency_drives_redis_pub_sub_with_the_same_workload() {
    crate::require_redis!();
    let redis = common::RedisProcess::start();
    let output = Command::new(env!("CARGO_BIN_EXE_chat-bench"))
        .args(["latency", "--peer", "redis"])
        .args(["--addr", &format!("127.0.0.1:{}", redis.port)])
        .args(["--pairs", "2", "--rate", "400", "--duration", "500ms"])
        .output()
        .expect("run chat-bench");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "chat-bench failed:\n{stderr}");
    let report: serde_json::Value =
        serde_json::from_str(String::from_utf8_lossy(&output.stdout).trim()).expect("JSON");
    assert_eq!(report["lost"], 0, "{report}");
    assert!(report["received"].as_u64().unwrap() > 100, "{report}");
    assert!(report["p50_us"].as_f64().unwrap() > 0.0, "{report}");
}

#[test]
fn latency_against_a_peer_that_is_not_one_fails_cleanly() {
    // A pmchat server is neither NATS nor Redis: it answers nothing a
    // peer's handshake waits for, or closes; chat-bench must say so and
    // fail, not hang.
    let server = ServerProcess::start(&["-q", "--handshake-timeout", "1s"]);
    let output = Command::new(env!("CARGO_BIN_EXE_chat-bench"))
        .args(["latency", "--peer", "nats"])
        .args(["--addr", &format!("127.0.0.1:{}", server.port)])
        .args(["--pairs", "1", "--rate", "100", "--duration", "200ms"])
        .args(["--timeout", "5s"])
        .output()
        .expect("run chat-bench");
    assert!(!output.status.success());
}

#[test]
fn stored_counts_messages_the_store_committed_for_offline_names() {
    let dir = std::env::temp_dir().join(format!("pmchat-bench-stored-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let accounts = dir.join("accounts");
    std::fs::write(&accounts, "# none yet\n").unwrap();
    let store = dir.join("store.redb");
    let server = ServerProcess::start(&[
        "-q",
        "--accounts",
        accounts.to_str().unwrap(),
        "--store",
        store.to_str().unwrap(),
    ]);
    let report = bench(
        &server,
        &[
            "stored",
            "--accounts-file",
            accounts.to_str().unwrap(),
            "--pairs",
            "3",
            "--messages",
            "500",
            "--window",
            "64",
        ],
    );
    assert_eq!(report["stored"], 1500);
    assert_eq!(report["refused"], 0);
    drop(server);
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn stored_drives_redis_streams_with_the_same_workload() {
    crate::require_redis!();
    let redis = common::RedisProcess::start();
    let output = Command::new(env!("CARGO_BIN_EXE_chat-bench"))
        .args(["stored", "--peer", "redis-streams"])
        .args(["--addr", &format!("127.0.0.1:{}", redis.port)])
        .args(["--pairs", "3", "--messages", "400", "--window", "32"])
        .output()
        .expect("run chat-bench");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "chat-bench failed:\n{stderr}");
    let report: serde_json::Value =
        serde_json::from_str(String::from_utf8_lossy(&output.stdout).trim()).expect("JSON");
    assert_eq!(report["stored"], 1200, "{report}");
    assert_eq!(report["refused"], 0, "{report}");
}

#[test]
fn crypto_encrypts_and_decrypts_every_message_without_a_server() {
    let output = Command::new(env!("CARGO_BIN_EXE_chat-bench"))
        .args(["crypto", "--messages", "200", "--size", "32"])
        .output()
        .unwrap();
    assert!(output.status.success(), "{output:?}");
    let report: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
    assert_eq!(report["case"], "crypto");
    assert_eq!(report["messages"], 200);
    assert!(report["msgs_per_s"].as_f64().unwrap() > 0.0);
    assert!(report["encrypt_us"].as_f64().unwrap() > 0.0);
}
