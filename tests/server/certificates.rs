//! TLS certificates whose dates are wrong, and hostile names in a TLS
//! handshake: refused at start, kept out on reload, warned about, never
//! echoed raw.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use crate::common::ServerProcess;
use crate::eqnice;

/// The civil date `days` days from today (UTC).
fn date_in(days: i64) -> (i32, u8, u8) {
    let today = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64
        / 86_400;
    // Days since 1970-01-01 to a civil date (Howard Hinnant's algorithm).
    let z = today + days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = (doy - (153 * mp + 2) / 5 + 1) as u8;
    let month = if mp < 10 { mp + 3 } else { mp - 9 } as u8;
    let year = (yoe + era * 400 + i64::from(month <= 2)) as i32;
    (year, month, day)
}

/// A self-signed certificate for localhost valid from `from` to `until`
/// (days from today), and its key, written in `dir` as NAME.pem/NAME.key.
fn certificate(dir: &Path, name: &str, from: i64, until: i64) -> (PathBuf, PathBuf) {
    let mut params = rcgen::CertificateParams::new(vec!["localhost".into()]).unwrap();
    let (y, m, d) = date_in(from);
    params.not_before = rcgen::date_time_ymd(y, m, d);
    let (y, m, d) = date_in(until);
    params.not_after = rcgen::date_time_ymd(y, m, d);
    let key = rcgen::KeyPair::generate().unwrap();
    let cert = params.self_signed(&key).unwrap();
    let cert_path = dir.join(format!("{name}.pem"));
    let key_path = dir.join(format!("{name}.key"));
    std::fs::write(&cert_path, cert.pem()).unwrap();
    std::fs::write(&key_path, key.serialize_pem()).unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&key_path, std::fs::Permissions::from_mode(0o600)).unwrap();
    (cert_path, key_path)
}

fn temp_dir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("pmchat-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

fn start_with(cert: &Path, key: &Path) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_chat-server"))
        .args(["0", "--bind", "127.0.0.1", "--tls-cert"])
        .arg(cert)
        .arg("--tls-key")
        .arg(key)
        .env("NO_COLOR", "1")
        .stdin(Stdio::null())
        .output()
        .unwrap()
}

#[test]
fn an_expired_or_not_yet_valid_certificate_is_refused_at_start() {
    let dir = temp_dir("certificate-dates");
    for (name, from, until) in [("expired", -30, -1), ("future", 2, 30)] {
        let (cert, key) = certificate(&dir, name, from, until);
        let output = start_with(&cert, &key);
        eqnice!(Some(1), output.status.code());
        // It never said it was listening, and it named the file.
        assert!(output.stdout.is_empty(), "{output:?}");
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(stderr.contains(cert.to_str().unwrap()), "{stderr}");
    }
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn a_certificate_that_expires_soon_is_served_and_warned_about() {
    let dir = temp_dir("certificate-soon");
    let (cert, key) = certificate(&dir, "soon", -30, 5);
    let server = ServerProcess::start(&[
        "--tls-cert",
        cert.to_str().unwrap(),
        "--tls-key",
        key.to_str().unwrap(),
    ]);
    assert!(server.port > 0);
    // The operator is told about that file at start.
    server.log_with(cert.to_str().unwrap());
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn a_reload_to_an_expired_certificate_keeps_the_one_in_use() {
    let dir = temp_dir("certificate-reload");
    let (cert, key) = certificate(&dir, "live", -1, 90);
    let mut server = ServerProcess::start(&[
        "--tls-cert",
        cert.to_str().unwrap(),
        "--tls-key",
        key.to_str().unwrap(),
    ]);
    let (expired_cert, expired_key) = certificate(&dir, "expired", -30, -1);
    std::fs::copy(&expired_cert, &cert).unwrap();
    std::fs::copy(&expired_key, &key).unwrap();
    server.console("reload-tls");
    let reply = server.stdout_line();
    assert!(reply.contains("not reloaded"), "{reply}");
    // Still serving TLS with the valid certificate: a TLS client gets a
    // ServerHello (a handshake record) back.
    let mut stream = TcpStream::connect(("127.0.0.1", server.port)).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    stream.write_all(&client_hello(b"localhost")).unwrap();
    let mut head = [0u8; 1];
    stream.read_exact(&mut head).unwrap();
    eqnice!(0x16, head[0]);
    let _ = std::fs::remove_dir_all(dir);
}

/// A TLS 1.2/1.3 ClientHello naming `host` in its SNI extension.
fn client_hello(host: &[u8]) -> Vec<u8> {
    let mut sni = Vec::new();
    sni.extend_from_slice(&((host.len() + 3) as u16).to_be_bytes());
    sni.push(0);
    sni.extend_from_slice(&(host.len() as u16).to_be_bytes());
    sni.extend_from_slice(host);
    let mut extensions = Vec::new();
    let mut push = |kind: u16, data: &[u8]| {
        extensions.extend_from_slice(&kind.to_be_bytes());
        extensions.extend_from_slice(&(data.len() as u16).to_be_bytes());
        extensions.extend_from_slice(data);
    };
    push(0, &sni);
    // supported_groups: x25519, secp256r1; signature_algorithms.
    push(10, &[0, 4, 0, 0x1d, 0, 0x17]);
    push(13, &[0, 4, 4, 3, 8, 4]);
    // ec_point_formats: uncompressed.
    push(11, &[1, 0]);
    let mut hello = vec![3, 3];
    hello.extend_from_slice(&[7u8; 32]);
    hello.push(0);
    // Cipher suites: ECDHE-ECDSA/RSA with AES-128-GCM.
    hello.extend_from_slice(&[0, 4, 0xc0, 0x2b, 0xc0, 0x2f]);
    hello.extend_from_slice(&[1, 0]);
    hello.extend_from_slice(&(extensions.len() as u16).to_be_bytes());
    hello.extend_from_slice(&extensions);
    let mut handshake = vec![1];
    handshake.extend_from_slice(&(hello.len() as u32).to_be_bytes()[1..]);
    handshake.extend_from_slice(&hello);
    let mut record = vec![0x16, 3, 1];
    record.extend_from_slice(&(handshake.len() as u16).to_be_bytes());
    record.extend_from_slice(&handshake);
    record
}

#[test]
fn a_hostile_server_name_in_a_tls_handshake_reaches_the_log_escaped() {
    let dir = temp_dir("certificate-sni");
    let (cert, key) = certificate(&dir, "live", -1, 90);
    let server = ServerProcess::start(&[
        "--tls-cert",
        cert.to_str().unwrap(),
        "--tls-key",
        key.to_str().unwrap(),
    ]);
    // An SNI name holding a terminal escape sequence (clear the screen,
    // set the title) is invalid: rustls logs it.
    let mut stream = TcpStream::connect(("127.0.0.1", server.port)).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    stream
        .write_all(&client_hello(b"evil\x1b[2J\x1b]0;pwned\x07.example"))
        .unwrap();
    let mut sink = [0u8; 512];
    let _ = stream.read(&mut sink);
    // Once the name is in the log (not at a guess of when it will be):
    let log = server.log_with("pwned");
    assert!(!log.contains('\x1b'), "{log:?}");
    assert!(!log.contains('\x07'), "{log:?}");
    let _ = std::fs::remove_dir_all(dir);
}
