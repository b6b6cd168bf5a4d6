//! The server driven in-process: `Server::run` on a port-0 listener with a
//! shutdown signal the test controls, as the binary runs it.

use std::net::SocketAddr;
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use pmchat::net::workers::Workers;
use pmchat::runtime::bind;
use pmchat::server::config::Config;
use pmchat::server::{Server, ServerHandle};

use crate::common::{Frame, RawClient, TIMEOUT};
use crate::eqnice;

/// A server running on its own threads until `stop` is dropped or sent to.
struct InProcess {
    port: u16,
    handle: ServerHandle,
    stop: async_channel::Sender<()>,
    /// Told when `run` has returned.
    done: std::sync::mpsc::Receiver<()>,
}

impl InProcess {
    fn start(config: Config) -> InProcess {
        let listener = bind(SocketAddr::from(([127, 0, 0, 1], 0))).expect("bind");
        let port = listener.get_ref().local_addr().expect("addr").port();
        let workers = Workers::start(2).expect("worker threads");
        let server = Server::new(config, Arc::clone(&workers)).expect("a server");
        let handle = server.handle();
        let (stop, stopped) = async_channel::bounded::<()>(1);
        let (finished, done) = std::sync::mpsc::channel();
        thread::spawn(move || {
            let shutdown = async move {
                let _ = stopped.recv().await;
            };
            smol::block_on(server.run(listener, shutdown));
            workers.stop();
            let _ = finished.send(());
        });
        InProcess {
            port,
            handle,
            stop,
            done,
        }
    }

    /// A raw client, logged in: its message to itself has come back.
    fn login(&self, name: &str) -> RawClient {
        let mut client = RawClient::open(self.port);
        client.handshake(name.as_bytes());
        let deadline = Instant::now() + TIMEOUT;
        loop {
            client.send(name, "ready?");
            if let Frame::Message { .. } = client.frame() {
                return client;
            }
            assert!(Instant::now() < deadline, "{name} never logged in");
        }
    }

    /// Signals shutdown and waits for `run` to return.
    fn shut_down(self) {
        let _ = self.stop.send_blocking(());
        self.done
            .recv_timeout(TIMEOUT)
            .expect("Server::run returned after its shutdown signal");
    }
}

#[test]
fn messages_crossing_workers_arrive_in_order_both_ways_under_load() {
    let server = InProcess::start(Config::default());
    let alice = server.login("alice");
    let bob = server.login("bob");
    let (on_alice, on_bob) = (
        server.handle.worker_of("alice"),
        server.handle.worker_of("bob"),
    );
    assert!(
        on_alice.is_some() && on_bob.is_some() && on_alice != on_bob,
        "alice on worker {on_alice:?}, bob on worker {on_bob:?}"
    );
    const COUNT: usize = 20_000;
    // Each floods the other from a thread while a second thread reads
    // what the other sends, so both directions are loaded at once.
    let run = |mut client: RawClient, to: &'static str, from: &'static str| {
        let mut writer = client.stream.try_clone().expect("clone");
        let flood = thread::spawn(move || {
            use std::io::Write;
            let bytes: Vec<u8> = (0..COUNT)
                .flat_map(|i| crate::common::message(to.as_bytes(), i.to_string().as_bytes()))
                .collect();
            writer.write_all(&bytes).expect("flood");
        });
        let read = thread::spawn(move || {
            for i in 0..COUNT {
                eqnice!(Frame::msg(from, &i.to_string()), client.frame());
            }
        });
        (flood, read)
    };
    let (alice_flood, alice_read) = run(alice, "bob", "bob");
    let (bob_flood, bob_read) = run(bob, "alice", "alice");
    for handle in [alice_flood, alice_read, bob_flood, bob_read] {
        handle.join().expect("in order, none lost");
    }
    server.shut_down();
}

#[test]
fn run_routes_kicks_and_shuts_down_on_its_signal() {
    let server = InProcess::start(Config::default());
    let mut alice = server.login("alice");
    let mut bob = server.login("bob");
    alice.send("bob", "in process");
    eqnice!(Frame::msg("alice", "in process"), bob.frame());
    eqnice!(
        vec!["alice".to_string(), "bob".to_string()],
        server.handle.online()
    );

    assert!(server.handle.kick("bob"));
    eqnice!(
        Frame::err("you were disconnected by the server operator\n"),
        bob.frame()
    );
    bob.expect_closed();
    assert!(!server.handle.kick("bob"));

    server.shut_down();
    eqnice!(Frame::err("server is shutting down\n"), alice.frame());
    alice.expect_closed();
}

#[test]
fn presence_reaches_a_watcher_through_the_running_server() {
    let server = InProcess::start(Config {
        flush_timeout: Duration::from_millis(500),
        ..Config::default()
    });
    let mut watcher = server.login("watcher");
    let mut hello = vec![0, 2, 0, 0, 0, 17];
    hello.extend_from_slice(b"pmchat/1 presence");
    watcher.write(&hello);
    // WELCOME, then the one-page snapshot: the watcher alone.
    let mut opcodes = Vec::new();
    for _ in 0..2 {
        let head = watcher.read_exact(6);
        let len = u16::from_be_bytes([head[2], head[3]]) as usize
            + u16::from_be_bytes([head[4], head[5]]) as usize;
        let body = watcher.read_exact(len);
        opcodes.push((head[1], body));
    }
    eqnice!(2, opcodes[0].0);
    eqnice!((3, b"endwatcher".to_vec()), opcodes[1].clone());
    let carol = server.login("carol");
    let head = watcher.read_exact(6);
    eqnice!(vec![0, 4, 0, 6, 0, 5], head);
    eqnice!(b"joinedcarol".to_vec(), watcher.read_exact(11));
    drop(carol);
    eqnice!(vec![0, 4, 0, 4, 0, 5], watcher.read_exact(6));
    eqnice!(b"leftcarol".to_vec(), watcher.read_exact(9));
    server.shut_down();
}
