//! TLS for the server: certificates from PEM files (reloadable without a
//! restart), a self-signed set for first use, and the accept step.
//!
//! Plain and TLS clients share one port: a TLS connection starts with a
//! handshake record, `0x16 0x03`, while a v1 handshake starts with a name
//! length and a printable name byte, never `0x03`. So the first two bytes
//! decide, and nothing changes for plain v1 peers.

use std::fs;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};
use std::time::SystemTime;

use futures_rustls::TlsAcceptor;
use rustls::ServerConfig;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};

use super::certificate::{self, Standing, Validity};

use crate::net::socket::Socket;
use crate::net::tls::SharedSocket;
use crate::net::transport::Transport;

/// Why TLS could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// A certificate file could not be read or holds no certificate.
    #[error("cannot read certificates from {path}: {why}")]
    Certificates { path: PathBuf, why: String },
    /// The key file could not be read or holds no usable key.
    #[error("cannot read a private key from {path}: {why}")]
    Key { path: PathBuf, why: String },
    /// rustls refused the pair (for example, the key does not match).
    #[error("the certificate and key do not make a TLS configuration: {0}")]
    Config(#[from] rustls::Error),
    /// The certificate has expired: serving it would fail every client.
    #[error("the certificate in {path} expired {days} day(s) ago; renew it")]
    Expired { path: PathBuf, days: u64 },
    /// The certificate is not valid yet (or this machine's clock is off).
    #[error("the certificate in {path} is valid only in {days} day(s) (is the clock right?)")]
    NotYetValid { path: PathBuf, days: u64 },
    /// Generating or writing the self-signed set failed.
    #[error("cannot create a self-signed certificate in {path}: {why}")]
    SelfSigned { path: PathBuf, why: String },
}

/// Where the certificate chain and its key are.
#[derive(Clone, Debug)]
pub struct TlsFiles {
    /// PEM certificate chain, leaf first.
    pub cert: PathBuf,
    /// PEM private key (PKCS#8, RSA or EC).
    pub key: PathBuf,
}

/// The server's TLS settings; [`ServerTls::reload`] swaps in renewed
/// certificates for new connections.
pub struct ServerTls {
    files: TlsFiles,
    acceptor: RwLock<TlsAcceptor>,
    /// When the certificate in use is valid (`None`: unreadable dates,
    /// left to rustls and the clients).
    validity: RwLock<Option<Validity>>,
}

impl std::fmt::Debug for ServerTls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ServerTls")
            .field("files", &self.files)
            .finish_non_exhaustive()
    }
}

impl ServerTls {
    /// Loads the certificate chain and key.
    pub fn load(files: TlsFiles) -> Result<ServerTls, TlsError> {
        let (acceptor, validity) = acceptor(&files)?;
        Ok(ServerTls {
            files,
            acceptor: RwLock::new(acceptor),
            validity: RwLock::new(validity),
        })
    }

    /// Reads the files again; on failure (an expired certificate among
    /// them) the certificates in use stay.
    pub fn reload(&self) -> Result<(), TlsError> {
        let (fresh, validity) = acceptor(&self.files)?;
        *self.acceptor.write().unwrap_or_else(|e| e.into_inner()) = fresh;
        *self.validity.write().unwrap_or_else(|e| e.into_inner()) = validity;
        Ok(())
    }

    /// Warns if the certificate in use expires within
    /// [`certificate::EXPIRY_WARNING`] or has expired: the server calls it
    /// once a day.
    pub fn warn_if_expiring(&self) {
        let validity = *self.validity.read().unwrap_or_else(|e| e.into_inner());
        if let Some(validity) = validity {
            warn_about(&self.files.cert, validity.at(SystemTime::now()));
        }
    }

    /// Runs the server side of a TLS handshake on `stream`.
    pub(crate) async fn accept(&self, stream: Socket) -> io::Result<Transport> {
        let acceptor = self
            .acceptor
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone();
        let _ = stream.get_ref().set_nodelay(true);
        let socket = Arc::new(stream);
        let tls = acceptor
            .accept(SharedSocket::new(Arc::clone(&socket)))
            .await?;
        Ok(Transport::tls(
            socket,
            futures_rustls::TlsStream::Server(tls),
        ))
    }
}

fn acceptor(files: &TlsFiles) -> Result<(TlsAcceptor, Option<Validity>), TlsError> {
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(&files.cert)
        .and_then(|certs| certs.collect::<Result<_, _>>())
        .map_err(|e| TlsError::Certificates {
            path: files.cert.clone(),
            why: e.to_string(),
        })?;
    if certs.is_empty() {
        return Err(TlsError::Certificates {
            path: files.cert.clone(),
            why: "no certificate in the file".into(),
        });
    }
    // The leaf's dates: an expired or not yet valid certificate is refused
    // (at start; on reload the one in use stays), one about to expire
    // warned about.
    let validity = Validity::of(&certs[0]);
    if let Some(validity) = validity {
        let path = files.cert.clone();
        match validity.at(SystemTime::now()) {
            Standing::Expired(ago) => {
                let days = certificate::days(ago);
                return Err(TlsError::Expired { path, days });
            }
            Standing::NotYetValid(wait) => {
                let days = certificate::days(wait);
                return Err(TlsError::NotYetValid { path, days });
            }
            standing => warn_about(&files.cert, standing),
        }
    }
    let key = PrivateKeyDer::from_pem_file(&files.key).map_err(|e| TlsError::Key {
        path: files.key.clone(),
        why: if is_encrypted_key(&files.key) {
            "encrypted keys are not supported; give the key unencrypted, readable by the \
             server's user only (openssl pkey -in KEY -out PLAIN-KEY)"
                .into()
        } else {
            e.to_string()
        },
    })?;
    if let Some(mode) = crate::secret::readable_by_others(&files.key) {
        tracing::warn!(
            "the TLS key {} can be read by other users (mode {mode:o}); chmod 600 it",
            files.key.display()
        );
    }
    let config = ServerConfig::builder_with_provider(crate::net::tls::crypto_provider())
        .with_safe_default_protocol_versions()?
        .with_no_client_auth()
        .with_single_cert(certs, key)?;
    Ok((TlsAcceptor::from(Arc::new(config)), validity))
}

/// Logs a warning about a certificate that expires soon or has expired.
fn warn_about(path: &Path, standing: Standing) {
    match standing {
        Standing::Expiring(left) => tracing::warn!(
            "the TLS certificate {} expires in {} day(s); renew it (reload-tls or SIGHUP \
             picks up the new one)",
            path.display(),
            certificate::days(left)
        ),
        Standing::Expired(ago) => tracing::warn!(
            "the TLS certificate {} expired {} day(s) ago: clients refuse it; renew it",
            path.display(),
            certificate::days(ago)
        ),
        Standing::Valid | Standing::NotYetValid(_) => {}
    }
}

/// True if the PEM key file at `path` holds an encrypted key, which
/// rustls cannot use (it reports only that no key was found).
fn is_encrypted_key(path: &Path) -> bool {
    std::fs::read(path).is_ok_and(|pem| {
        let pem = String::from_utf8_lossy(&pem);
        pem.contains("-----BEGIN ENCRYPTED PRIVATE KEY-----")
            || pem.contains("Proc-Type: 4,ENCRYPTED")
    })
}

/// True if the first two bytes of a connection open a TLS handshake.
pub fn starts_tls(first: &[u8]) -> bool {
    first.starts_with(&[TLS_HANDSHAKE_RECORD, 0x03])
}

/// The first byte of a TLS handshake record.
const TLS_HANDSHAKE_RECORD: u8 = 0x16;

/// True if a connection whose first byte is `first` may still turn out to
/// open a TLS handshake (any other first byte is plain at once).
pub fn may_start_tls(first: u8) -> bool {
    first == TLS_HANDSHAKE_RECORD
}

/// A self-signed set for local use: a CA and a server certificate it
/// signed, for `localhost`, `127.0.0.1` and `::1`.
#[derive(Debug)]
pub struct SelfSigned {
    /// The server's chain and key.
    pub files: TlsFiles,
    /// The CA certificate clients trust (`chat-client --tls-ca`).
    pub ca: PathBuf,
    /// SHA-256 fingerprint of the CA certificate, `AB:CD:…`.
    pub fingerprint: String,
}

/// Creates the self-signed set in `dir`, or reuses the one already there
/// (so clients configured with its CA keep working across restarts).
pub fn self_signed(dir: &Path) -> Result<SelfSigned, TlsError> {
    let failed = |why: String| TlsError::SelfSigned {
        path: dir.to_path_buf(),
        why,
    };
    let files = TlsFiles {
        cert: dir.join("server.pem"),
        key: dir.join("server.key"),
    };
    let ca = dir.join("ca.pem");
    if !(files.cert.exists() && files.key.exists() && ca.exists()) {
        fs::create_dir_all(dir).map_err(|e| failed(e.to_string()))?;
        let (ca_pem, cert_pem, key_pem) = generate().map_err(|e| failed(e.to_string()))?;
        write_private(&files.key, key_pem.as_bytes()).map_err(|e| failed(e.to_string()))?;
        fs::write(&files.cert, cert_pem).map_err(|e| failed(e.to_string()))?;
        fs::write(&ca, ca_pem).map_err(|e| failed(e.to_string()))?;
    }
    let ca_der = CertificateDer::from_pem_file(&ca).map_err(|e| failed(e.to_string()))?;
    Ok(SelfSigned {
        files,
        ca,
        fingerprint: fingerprint(&ca_der),
    })
}

/// A CA, and a server certificate signed by it: (CA PEM, chain PEM, key PEM).
fn generate() -> Result<(String, String, String), rcgen::Error> {
    let mut ca_params = rcgen::CertificateParams::new(Vec::<String>::new())?;
    ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    ca_params
        .distinguished_name
        .push(rcgen::DnType::CommonName, "pmchat local CA");
    let ca_key = rcgen::KeyPair::generate()?;
    let ca = ca_params.self_signed(&ca_key)?;
    let names = vec!["localhost".to_string(), "127.0.0.1".into(), "::1".into()];
    let mut params = rcgen::CertificateParams::new(names)?;
    params
        .distinguished_name
        .push(rcgen::DnType::CommonName, "localhost");
    let key = rcgen::KeyPair::generate()?;
    let cert = params.signed_by(&key, &ca, &ca_key)?;
    // The chain: the server's certificate, then the CA's.
    let chain = format!("{}{}", cert.pem(), ca.pem());
    Ok((ca.pem(), chain, key.serialize_pem()))
}

/// Writes a file only its owner can read.
fn write_private(path: &Path, bytes: &[u8]) -> io::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let mut file = fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)?;
    file.write_all(bytes)
}

/// SHA-256 of a certificate, as colon-separated hex pairs.
pub fn fingerprint(cert: &CertificateDer<'_>) -> String {
    let digest = ring::digest::digest(&ring::digest::SHA256, cert.as_ref());
    digest
        .as_ref()
        .iter()
        .map(|b| format!("{b:02X}"))
        .collect::<Vec<_>>()
        .join(":")
}

#[cfg(test)]
mod tests {
    use super::*;
    use smol::Async;
    use std::net::TcpStream;

    #[test]
    fn tls_is_told_apart_from_a_v1_handshake_by_two_bytes() {
        assert!(starts_tls(&[0x16, 0x03, 0x01]));
        // A 22-byte name starts 0x16 too, but its first byte is printable.
        assert!(!starts_tls(&[0x16, b'a']));
        assert!(!starts_tls(b"\x05alice"));
        assert!(!starts_tls(&[0x16]));
    }

    #[test]
    fn a_self_signed_set_loads_and_is_reused() {
        let dir = std::env::temp_dir().join(format!("pmchat-tls-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        let first = self_signed(&dir).unwrap();
        assert!(ServerTls::load(first.files.clone()).is_ok());
        let again = self_signed(&dir).unwrap();
        assert_eq!(first.fingerprint, again.fingerprint);
        assert_eq!(first.fingerprint.len(), 32 * 3 - 1);
        let _ = fs::remove_dir_all(&dir);
    }

    /// A TLS session between a client and this server over loopback:
    /// (the client's end, the server's end).
    fn tls_pair(dir: &Path) -> (Transport, Transport) {
        let set = self_signed(dir).unwrap();
        let server_tls = ServerTls::load(set.files.clone()).unwrap();
        let client_config = crate::net::tls::tls_client_config(Some(&set.ca)).unwrap();
        smol::block_on(async {
            let listener = Async::<std::net::TcpListener>::bind(([127, 0, 0, 1], 0)).unwrap();
            let addr = listener.get_ref().local_addr().unwrap();
            let client = async {
                let stream = Async::<TcpStream>::connect(addr).await.unwrap();
                crate::net::transport::connect_tls(stream, "localhost", client_config)
                    .await
                    .unwrap()
            };
            let server = async {
                let (stream, _) = listener.accept().await.unwrap();
                server_tls.accept(Socket::Reactor(stream)).await.unwrap()
            };
            smol::future::zip(client, server).await
        })
    }

    #[test]
    fn records_a_direct_write_leaves_behind_are_flushed_by_the_writer_even_with_nothing_queued() {
        use crate::server::outbound::OutboundQueue;
        use crate::wire::framing::FrameReader;
        use crate::wire::v1::{ServerDecoder, ServerFrame};
        use std::time::Duration;

        let dir = std::env::temp_dir().join(format!("pmchat-tls-now-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        let (client, server) = tls_pair(&dir);
        let _ = fs::remove_dir_all(&dir);
        let mut message = Vec::new();
        crate::wire::v1::encode_message(b"alice", &[b'x'; 1000], &mut message).unwrap();

        // Nobody reads: writes that must not wait fill the socket until
        // one leaves its records encrypted inside the TLS session.
        let mut sent = 0;
        loop {
            let written = server.write_now(&message).unwrap();
            assert_eq!(written.taken, message.len(), "the TLS layer had room");
            sent += 1;
            if written.unflushed {
                break;
            }
            assert!(sent < 1_000_000, "the socket never filled");
        }
        // One more through the queue's direct flush: taken whole, not
        // sent, so the writer task must be called for it although nothing
        // is left queued.
        let queue = OutboundQueue::new(1 << 20);
        assert_eq!(
            queue.try_push_deferred(message.len(), |out| out.extend_from_slice(&message)),
            Ok(true)
        );
        queue.flush_direct(&server);
        sent += 1;
        let mut batch = Vec::new();
        let woken = smol::block_on(smol::future::or(
            async { Some(queue.next_batch(&mut batch).await) },
            async {
                smol::Timer::after(Duration::from_secs(5)).await;
                None
            },
        ));
        assert_eq!(woken, Some(true), "the writer is given a flush to do");
        assert!(batch.is_empty());

        // The writer's flush and the reader together deliver every frame.
        let mut input = FrameReader::new(ServerDecoder);
        let deliver = smol::future::zip(async { server.write_all(&batch).await.unwrap() }, async {
            let mut frames = 0;
            while frames < sent {
                client.read(&mut input).await.unwrap();
                while let Some(frame) = input.next_frame().unwrap() {
                    let ServerFrame::Message { from, content } = frame else {
                        panic!("not a message: {frame:?}");
                    };
                    assert_eq!((from, content.len()), (&b"alice"[..], 1000));
                    frames += 1;
                }
            }
        });
        smol::block_on(smol::future::or(deliver, async {
            smol::Timer::after(Duration::from_secs(10)).await;
            panic!("frames went missing");
        }));
    }
}
