//! The cluster key (`--cluster-key-file`): nodes that share it work as
//! before, and nothing written to Redis without it (messages, kicks, users,
//! name holders, bans, replayed batches) is acted on.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::path::PathBuf;
use std::thread;
use std::time::Duration;

use crate::cluster_attacks::batch;
use crate::common::{Frame, RedisProcess, RedisUnderTest, ServerProcess};
use crate::eqnice;

/// A key file (0600) holding `secret`.
pub(crate) fn key_file(secret: &str) -> PathBuf {
    use std::os::unix::fs::PermissionsExt;
    static COUNT: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
    let path = std::env::temp_dir().join(format!(
        "pmchat-cluster-key-{}-{}",
        std::process::id(),
        COUNT.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
    ));
    std::fs::write(&path, format!("{secret}\n")).unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
    path
}

fn keyed_nodes(url: &str, count: usize, key: &std::path::Path) -> Vec<ServerProcess> {
    (0..count)
        .map(|_| {
            ServerProcess::start(&[
                "--cluster",
                url,
                "--cluster-key-file",
                key.to_str().unwrap(),
            ])
        })
        .collect()
}

/// The options that make a `redis-server` take TLS on `port` with the
/// self-signed set `tls` (its CA in `dir`), clients unauthenticated.
fn redis_tls_args(
    port: u16,
    tls: &pmchat::server::tls::SelfSigned,
    dir: &std::path::Path,
) -> Vec<String> {
    let path = |p: &std::path::Path| p.to_str().unwrap().to_string();
    vec![
        "--tls-port".into(),
        port.to_string(),
        "--tls-cert-file".into(),
        path(&tls.files.cert),
        "--tls-key-file".into(),
        path(&tls.files.key),
        "--tls-ca-cert-file".into(),
        path(&dir.join("ca.pem")),
        "--tls-auth-clients".into(),
        "no".into(),
    ]
}

/// The README's recommended ACL user for the nodes: pmchat's keys and
/// channels only, password `node-secret`.
const ACL_USER: [&str; 10] = [
    "--user",
    "pmchat",
    "on",
    ">node-secret",
    "~pmchat:*",
    "&pmchat:*",
    "+@all",
    "-@admin",
    "-@dangerous",
    "+info",
];

const SECRET: &str = "a shared secret of more than thirty-two bytes, for the tests";

crate::on_both!(
    ;
    with_the_key_nothing_unsigned_in_redis_is_acted_on,
    with_the_key_a_batch_published_again_is_refused_as_a_replay,
);

fn with_the_key_nothing_unsigned_in_redis_is_acted_on(redis: &mut impl RedisUnderTest) {
    let key = key_file(SECRET);
    let mut nodes = keyed_nodes(&redis.url(), 2, &key);
    let mut alice = nodes[0].login("alice");
    let mut bob = nodes[1].login("bob");
    nodes[0].wait_online("bob");
    nodes[1].wait_online("alice");
    alice.send("bob", "signed");
    eqnice!(Frame::msg("alice", "signed"), bob.frame());
    bob.send("alice", "signed too");
    eqnice!(Frame::msg("bob", "signed too"), alice.frame());
    let (a, _, _) = nodes[0].cluster_state();
    let (b, _, dropped_before) = nodes[1].cluster_state();
    let inbox = format!("pmchat:inbox:{b}");
    // Unsigned, in node A's name: a message from alice, and a kick of bob.
    redis.publish(&inbox, &batch(&a, &b, &[(b"bob", b"alice", b"forged")]));
    let mut kick = batch(&a, &b, &[]);
    kick.extend_from_slice(b"K\x03bob");
    redis.publish(&inbox, &kick);
    // A ghost user, a squatted name and a ban nobody's operator set.
    redis.publish("pmchat:presence", format!("+{a} ghost").as_bytes());
    redis.command(&[b"SET", b"pmchat:name:carol", b"fffffffffffffff0"]);
    redis.command(&[b"SET", b"pmchat:node:fffffffffffffff0", b"1"]);
    redis.command(&[b"SET", b"pmchat:ban:dave", b"1"]);
    // The genuine message that follows is the first bob gets, and he is
    // still connected.
    alice.send("bob", "genuine");
    eqnice!(Frame::msg("alice", "genuine"), bob.frame());
    let (_, _, dropped) = nodes[1].cluster_state();
    assert!(dropped >= dropped_before + 3, "{dropped} dropped");
    assert!(!nodes[1].users().iter().any(|n| n == "ghost"));
    // Neither the squatted nor the "banned" name is kept from its user.
    let _carol = nodes[0].login("carol");
    let _dave = nodes[1].login("dave");
    // A ban set by an operator still holds on every node.
    nodes[0].console("ban eve");
    nodes[0].stdout_line();
    let mut eve = nodes[1].connect("eve");
    match eve.frame() {
        Frame::Error(text) => assert!(text.contains("banned"), "{text}"),
        other => panic!("unexpected {other:?}"),
    }
    let _ = std::fs::remove_file(key);
}

/// Subscribes to `channel` as the nodes do, on whichever master holds it,
/// and returns the first message published on it.
pub(crate) fn capture(redis: &impl RedisUnderTest, channel: &str) -> thread::JoinHandle<Vec<u8>> {
    let (ports, subscribe) = redis.subscription();
    for port in ports {
        let mut stream = TcpStream::connect(("127.0.0.1", port)).unwrap();
        stream
            .set_read_timeout(Some(Duration::from_secs(10)))
            .unwrap();
        let command = format!(
            "*2\r\n${}\r\n{subscribe}\r\n${}\r\n{channel}\r\n",
            subscribe.len(),
            channel.len()
        );
        stream.write_all(command.as_bytes()).unwrap();
        let mut reader = BufReader::new(stream);
        // The confirmation (subscribe, the channel, 1), or -MOVED from a
        // master that does not hold the channel.
        if reader.fill_buf().unwrap().first() == Some(&b'-') {
            continue;
        }
        read_array(&mut reader);
        return thread::spawn(move || read_array(&mut reader).pop().expect("a payload"));
    }
    panic!("no master took the subscription to {channel}");
}

/// One RESP array of bulk strings and integers (integers as text).
fn read_array(reader: &mut BufReader<TcpStream>) -> Vec<Vec<u8>> {
    let mut line = String::new();
    reader.read_line(&mut line).unwrap();
    let count: usize = line.trim_end().trim_start_matches('*').parse().unwrap();
    (0..count)
        .map(|_| {
            let mut line = String::new();
            reader.read_line(&mut line).unwrap();
            let line = line.trim_end();
            match line.strip_prefix('$') {
                Some(len) => {
                    let mut bytes = vec![0u8; len.parse::<usize>().unwrap() + 2];
                    reader.read_exact(&mut bytes).unwrap();
                    bytes.truncate(bytes.len() - 2);
                    bytes
                }
                None => line.as_bytes().to_vec(),
            }
        })
        .collect()
}

fn with_the_key_a_batch_published_again_is_refused_as_a_replay(redis: &mut impl RedisUnderTest) {
    let key = key_file(&format!("{SECRET} (replay)"));
    let mut nodes = keyed_nodes(&redis.url(), 2, &key);
    let mut alice = nodes[0].login("alice");
    let mut bob = nodes[1].login("bob");
    nodes[0].wait_online("bob");
    let (b, _, _) = nodes[1].cluster_state();
    let inbox = format!("pmchat:inbox:{b}");
    let captured = capture(redis, &inbox);
    // Let the subscription take hold before the message.
    thread::sleep(Duration::from_millis(200));
    alice.send("bob", "once");
    eqnice!(Frame::msg("alice", "once"), bob.frame());
    let payload = captured.join().unwrap();
    let (_, _, dropped_before) = nodes[1].cluster_state();
    redis.publish(&inbox, &payload);
    bob.expect_silence(Duration::from_millis(500));
    let (_, _, dropped) = nodes[1].cluster_state();
    eqnice!(dropped_before + 1, dropped);
    let _ = std::fs::remove_file(key);
}

#[test]
fn a_short_or_missing_cluster_key_is_refused_at_start() {
    crate::require_redis!();
    let redis = RedisProcess::start();
    let short = key_file("too short");
    for key in [short.to_str().unwrap(), "/nonexistent/pmchat-key"] {
        let output = std::process::Command::new(env!("CARGO_BIN_EXE_chat-server"))
            .args(["0", "--cluster", &redis.url(), "--cluster-key-file", key])
            .stdin(std::process::Stdio::null())
            .output()
            .unwrap();
        assert_eq!(Some(1), output.status.code(), "{output:?}");
        assert!(output.stdout.is_empty(), "{output:?}");
    }
    let _ = std::fs::remove_file(short);
}

#[test]
fn nodes_work_as_a_redis_acl_user_limited_to_pmchat_keys_and_channels() {
    crate::require_redis!();
    // The README's recommended ACL user, and no default user.
    let mut args = vec!["--user", "default", "off"];
    args.extend(ACL_USER);
    let redis = RedisProcess::start_with(&args);
    let url = format!("redis://pmchat:node-secret@127.0.0.1:{}", redis.port);
    let key = key_file(&format!("{SECRET} (acl)"));
    let mut nodes = keyed_nodes(&url, 2, &key);
    let mut alice = nodes[0].login("alice");
    let mut bob = nodes[1].login("bob");
    nodes[0].wait_online("bob");
    alice.send("bob", "through a limited user");
    eqnice!(Frame::msg("alice", "through a limited user"), bob.frame());
    drop(bob);
    nodes[0].wait_offline("bob");
    let _ = std::fs::remove_file(key);
}

#[test]
fn nodes_reach_redis_over_tls_and_refuse_a_certificate_they_do_not_trust() {
    crate::require_redis!();
    let dir = std::env::temp_dir().join(format!("pmchat-rediss-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let tls = pmchat::server::tls::self_signed(&dir).expect("a certificate for Redis");
    let tls_port = crate::common::free_port();
    let args = redis_tls_args(tls_port, &tls, &dir);
    let redis = RedisProcess::start_with(&args.iter().map(String::as_str).collect::<Vec<_>>());
    let url = format!("rediss://127.0.0.1:{tls_port}");
    let ca = dir.join("ca.pem");
    let args = ["--cluster", &url, "--cluster-ca", ca.to_str().unwrap()];
    let mut nodes: Vec<ServerProcess> = (0..2).map(|_| ServerProcess::start(&args)).collect();
    let mut alice = nodes[0].login("alice");
    let mut bob = nodes[1].login("bob");
    nodes[0].wait_online("bob");
    alice.send("bob", "over TLS to Redis");
    eqnice!(Frame::msg("alice", "over TLS to Redis"), bob.frame());
    // Through this Redis, whose only port they were given is its TLS one.
    assert!(redis.calls("publish") > 0);
    // A node that does not trust the certificate (the system's roots) does
    // not reach Redis: its logins are refused as the cluster unavailable.
    let untrusting = ServerProcess::start(&["--cluster", &url]);
    let mut carol = untrusting.connect("carol");
    match carol.frame() {
        Frame::Error(text) => assert!(text.starts_with("service unavailable"), "{text}"),
        other => panic!("unexpected {other:?}"),
    }
    drop(nodes);
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn nodes_reach_a_redis_cluster_over_tls() {
    crate::require_redis!();
    let dir = std::env::temp_dir().join(format!("pmchat-rediss-cluster-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let tls = pmchat::server::tls::self_signed(&dir).expect("a certificate for Redis");
    let ca = dir.join("ca.pem");
    let tls_ports: Vec<u16> = (0..3).map(|_| crate::common::free_port()).collect();
    let redis = crate::common::RedisClusterProcess::start_with(|i| {
        let mut args = redis_tls_args(tls_ports[i], &tls, &dir);
        args.extend(["--tls-cluster".into(), "yes".into()]);
        args
    });
    let seeds: Vec<String> = tls_ports.iter().map(|p| format!("127.0.0.1:{p}")).collect();
    let url = format!("rediss+cluster://{}", seeds.join(","));
    let args = ["--cluster", &url, "--cluster-ca", ca.to_str().unwrap()];
    let mut nodes: Vec<ServerProcess> = (0..2).map(|_| ServerProcess::start(&args)).collect();
    let mut alice = nodes[0].login("alice");
    let mut bob = nodes[1].login("bob");
    nodes[0].wait_online("bob");
    alice.send("bob", "over TLS to a Redis Cluster");
    eqnice!(
        Frame::msg("alice", "over TLS to a Redis Cluster"),
        bob.frame()
    );
    assert!(redis.calls("spublish").iter().sum::<u64>() > 0);
    drop(nodes);
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn nodes_work_on_a_redis_cluster_as_an_acl_user_limited_to_pmchat_keys_and_channels() {
    crate::require_redis!();
    // The README's recommended user on every master (the default user
    // stays, for the cluster's creation).
    let redis =
        crate::common::RedisClusterProcess::start_with(|_| ACL_USER.map(String::from).to_vec());
    let url = redis
        .url()
        .replace("redis+cluster://", "redis+cluster://pmchat:node-secret@");
    let url = url.replace(",127.0.0.1", ",pmchat:node-secret@127.0.0.1");
    let mut nodes: Vec<ServerProcess> = (0..2)
        .map(|_| ServerProcess::start(&["--cluster", &url]))
        .collect();
    let mut alice = nodes[0].login("alice");
    let mut bob = nodes[1].login("bob");
    nodes[0].wait_online("bob");
    alice.send("bob", "through a limited user");
    eqnice!(Frame::msg("alice", "through a limited user"), bob.frame());
}
