//! The store on a real file: order, cursors and ids across reopens, the
//! history limit, paging, locking, refusing a file that is not a store,
//! export and purge.

use super::*;

/// A fresh store file in a directory of its own, removed at the end.
struct TempStore {
    dir: PathBuf,
}

impl TempStore {
    fn new(name: &str) -> TempStore {
        let dir = std::env::temp_dir().join(format!("pmchat-store-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        TempStore { dir }
    }

    fn file(&self) -> PathBuf {
        self.dir.join("store.redb")
    }
}

impl Drop for TempStore {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn append_and_wait(store: &Store, owner: &str, direction: Direction, content: &str) -> u64 {
    let id = store
        .append(owner, now_ms(), direction, b"alice", content.as_bytes())
        .unwrap();
    smol::block_on(store.wait_done(id));
    assert!(!store.failed(id));
    id
}

#[test]
fn entries_come_back_in_order_after_a_cursor_and_survive_a_reopen() {
    let temp = TempStore::new("order");
    let store = Store::open(&temp.file(), Retention::default()).unwrap();
    let ids: Vec<u64> = (0..5)
        .map(|i| append_and_wait(&store, "bob", Direction::Stored, &format!("m{i}")))
        .collect();
    assert!(ids.windows(2).all(|w| w[0] < w[1]));
    let page = store.after("bob", ids[1], store.done(), 2).unwrap();
    let contents: Vec<_> = page.iter().map(|e| e.content.clone()).collect();
    assert_eq!(contents, [b"m2".to_vec(), b"m3".to_vec()]);
    assert_eq!(page[0].peer, "alice");
    assert_eq!(store.count("bob").unwrap(), 5);
    assert_eq!(store.after("carol", 0, store.done(), 10).unwrap(), []);
    store.close();
    drop(store);
    let store = Store::open(&temp.file(), Retention::default()).unwrap();
    assert_eq!(store.after("bob", 0, u64::MAX, 100).unwrap().len(), 5);
    assert_eq!(store.last_id("bob").unwrap(), ids[4]);
    // Ids never repeat after a reopen, not even those not committed.
    let next = append_and_wait(&store, "bob", Direction::Stored, "after");
    assert!(next > ids[4]);
    store.close();
}

#[test]
fn ids_handed_out_but_never_committed_are_not_handed_out_again() {
    let temp = TempStore::new("reserve");
    let store = Store::open(&temp.file(), Retention::default()).unwrap();
    let first = append_and_wait(&store, "bob", Direction::Stored, "one");
    store.close();
    drop(store);
    // Reopened twice without a commit in between: each reopen starts past
    // the last reservation.
    let store = Store::open(&temp.file(), Retention::default()).unwrap();
    store.close();
    drop(store);
    let store = Store::open(&temp.file(), Retention::default()).unwrap();
    let second = append_and_wait(&store, "bob", Direction::Stored, "two");
    assert!(second >= first + 2 * RESERVE, "{first} then {second}");
    store.close();
}

#[test]
fn a_log_keeps_at_most_history_max_entries_oldest_going_first() {
    let temp = TempStore::new("retention");
    let retention = Retention {
        max_entries: 3,
        max_days: 30,
    };
    let store = Store::open(&temp.file(), retention).unwrap();
    for i in 0..5 {
        append_and_wait(&store, "bob", Direction::Stored, &format!("m{i}"));
    }
    let kept: Vec<_> = store
        .after("bob", 0, u64::MAX, 10)
        .unwrap()
        .into_iter()
        .map(|e| e.content)
        .collect();
    assert_eq!(kept, [b"m2".to_vec(), b"m3".to_vec(), b"m4".to_vec()]);
    assert_eq!(store.count("bob").unwrap(), 3);
    store.close();
}

#[test]
fn history_pages_backwards_through_one_conversation() {
    let temp = TempStore::new("before");
    let store = Store::open(&temp.file(), Retention::default()).unwrap();
    let mut last = 0;
    for (peer, text) in [
        ("alice", "a1"),
        ("carol", "c1"),
        ("alice", "a2"),
        ("alice", "a3"),
    ] {
        last = store
            .append(
                "bob",
                now_ms(),
                Direction::Received,
                peer.as_bytes(),
                text.as_bytes(),
            )
            .unwrap();
    }
    smol::block_on(store.wait_done(last));
    let page = store.before("bob", Some("alice"), last, 2).unwrap();
    let texts: Vec<_> = page.iter().map(|e| e.content.clone()).collect();
    assert_eq!(texts, [b"a1".to_vec(), b"a2".to_vec()]);
    assert_eq!(store.before("bob", None, last + 1, 10).unwrap().len(), 4);
    store.close();
}

#[test]
fn a_file_that_is_not_a_store_is_an_error_and_left_as_it_is() {
    let temp = TempStore::new("corrupt");
    let junk = b"this is not a redb file, and it must survive being opened".repeat(100);
    std::fs::write(temp.file(), &junk).unwrap();
    match Store::open(&temp.file(), Retention::default()) {
        Err(StoreError::Corrupt { .. }) => {}
        Err(other) => panic!("expected a corrupt store, got {other}"),
        Ok(_) => panic!("a junk file was opened as a store"),
    }
    assert_eq!(std::fs::read(temp.file()).unwrap(), junk);
}

#[test]
fn a_store_open_elsewhere_is_locked() {
    let temp = TempStore::new("locked");
    let store = Store::open(&temp.file(), Retention::default()).unwrap();
    match Store::open(&temp.file(), Retention::default()) {
        Err(StoreError::Locked { .. }) => {}
        Err(other) => panic!("expected a locked store, got {other}"),
        Ok(_) => panic!("opened twice"),
    }
    store.close();
}

#[test]
fn marks_export_and_purge() {
    let temp = TempStore::new("marks");
    let store = Store::open(&temp.file(), Retention::default()).unwrap();
    let id = append_and_wait(&store, "bob", Direction::Stored, "hi \"there\"");
    store.set_mark("bob", id);
    append_and_wait(&store, "bob", Direction::Sent, "back");
    assert_eq!(store.mark("bob").unwrap(), Some(id));
    assert_eq!(store.mark("carol").unwrap(), None);
    let mut out = Vec::new();
    assert_eq!(store.export("bob", &mut out).unwrap(), 2);
    let text = String::from_utf8(out).unwrap();
    let lines: Vec<_> = text.lines().collect();
    assert!(lines[0].contains("\"dir\":\"in\",\"peer\":\"alice\",\"content\":\"hi \\\"there\\\"\""));
    assert!(lines[1].contains("\"dir\":\"out\""));
    assert_eq!(store.purge("bob").unwrap(), 2);
    assert_eq!(store.after("bob", 0, u64::MAX, 10).unwrap(), []);
    assert_eq!(store.count("bob").unwrap(), 0);
    store.close();
}

#[test]
fn entries_appended_together_share_chunks_and_read_back_exactly() {
    let temp = TempStore::new("chunks");
    let retention = Retention {
        max_entries: 150,
        max_days: 30,
    };
    let store = Store::open(&temp.file(), retention).unwrap();
    // One batch: bob's and carol's entries interleaved in runs, more than a
    // chunk's worth each.
    let mut bob = Vec::new();
    let mut last = 0;
    for round in 0..3 {
        for i in 0..100 {
            let text = format!("b{round}-{i}");
            last = store
                .append(
                    "bob",
                    now_ms(),
                    Direction::Stored,
                    b"alice",
                    text.as_bytes(),
                )
                .unwrap();
            bob.push((last, text));
        }
        last = store
            .append("carol", now_ms(), Direction::Stored, b"alice", b"c")
            .unwrap();
    }
    smol::block_on(store.wait_done(last));
    // Retention keeps bob's newest 150, cutting through a chunk.
    assert_eq!(store.count("bob").unwrap(), 150);
    let kept: Vec<_> = store.after("bob", 0, u64::MAX, 1000).unwrap();
    let expected: Vec<_> = bob[150..]
        .iter()
        .map(|(id, text)| (*id, text.clone()))
        .collect();
    let got: Vec<_> = kept
        .iter()
        .map(|e| (e.id, String::from_utf8(e.content.clone()).unwrap()))
        .collect();
    assert_eq!(got, expected);
    // A page from the middle of a chunk, and one backwards across chunks.
    let (middle, _) = bob[200];
    let page = store.after("bob", middle, u64::MAX, 3).unwrap();
    assert_eq!(
        page.iter().map(|e| e.id).collect::<Vec<_>>(),
        [bob[201].0, bob[202].0, bob[203].0]
    );
    let back = store.before("bob", None, bob[260].0, 70).unwrap();
    assert_eq!(back.first().map(|e| e.id), Some(bob[190].0));
    assert_eq!(back.last().map(|e| e.id), Some(bob[259].0));
    assert_eq!(store.last_id("bob").unwrap(), bob[299].0);
    assert_eq!(store.after("carol", 0, u64::MAX, 10).unwrap().len(), 3);
    assert_eq!(store.purge("bob").unwrap(), 150);
    store.close();
}
