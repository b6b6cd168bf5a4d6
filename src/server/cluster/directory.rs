//! The directory: who is online on the other nodes, loaded from Redis and
//! kept current by the presence channel; nodes whose lease ran out are
//! forgotten.

use tracing::info;

use super::commands::Commands;
use super::keys::{names_key, node_key, release_script, NODES_KEY};
use crate::server::Shared;

/// `+NODE NAME` or `-NODE NAME` from the presence channel.
pub(super) fn presence_event(shared: &Shared, me: &str, event: &[u8]) {
    let Ok(event) = std::str::from_utf8(event) else {
        return;
    };
    let (joined, rest) = match event.split_at_checked(1) {
        Some(("+", rest)) => (true, rest),
        Some(("-", rest)) => (false, rest),
        _ => return,
    };
    let Some((node, name)) = rest.split_once(' ') else {
        return;
    };
    if node == me {
        return;
    }
    if joined {
        shared.registry.remote_joined(name, node);
    } else {
        shared.registry.remote_left(name, node);
    }
}

/// Reads every name held by another live node into the registry's
/// directory, from the set of nodes and each node's set of names (no
/// `SCAN`: on a Redis Cluster that would have to visit every shard).
pub(super) async fn load_directory(
    shared: &Shared,
    me: &str,
    connection: &mut Commands,
) -> redis::RedisResult<()> {
    let nodes: Vec<String> = redis::cmd("SMEMBERS")
        .arg(NODES_KEY)
        .query_async(connection)
        .await?;
    let mut directory = Vec::new();
    for node in nodes.iter().filter(|node| *node != me) {
        let alive: i64 = redis::cmd("EXISTS")
            .arg(node_key(node))
            .query_async(connection)
            .await?;
        if alive == 0 {
            continue;
        }
        let keys: Vec<String> = redis::cmd("SMEMBERS")
            .arg(names_key(node))
            .query_async(connection)
            .await?;
        directory.extend(keys.iter().filter_map(|key| {
            let name = key.strip_prefix("pmchat:name:")?;
            Some((name.to_string(), node.clone()))
        }));
    }
    shared.registry.replace_remote(directory);
    Ok(())
}

/// Forgets the names of nodes whose own lease ran out (they died).
pub(super) async fn check_nodes(
    shared: &Shared,
    connection: &mut Commands,
) -> redis::RedisResult<()> {
    for node in shared.registry.remote_nodes() {
        let alive: i64 = redis::cmd("EXISTS")
            .arg(node_key(&node))
            .query_async(connection)
            .await?;
        if alive == 0 {
            let forgotten = shared.registry.forget_node(&node);
            info!(
                node = &*node,
                "cluster: node gone; {forgotten} name(s) freed"
            );
            // Its keys, which would otherwise wait for a claim to replace
            // them (every node that noticed does this; it is idempotent).
            let keys: Vec<String> = redis::cmd("SMEMBERS")
                .arg(names_key(&node))
                .query_async(connection)
                .await?;
            for key in keys {
                let _: i64 = release_script()
                    .key(key)
                    .arg(&*node)
                    .invoke_async(connection)
                    .await?;
            }
            for (command, key) in [("DEL", names_key(&node)), ("SREM", NODES_KEY.to_string())] {
                let mut cmd = redis::cmd(command);
                cmd.arg(key);
                if command == "SREM" {
                    cmd.arg(&*node);
                }
                let _: i64 = cmd.query_async(connection).await?;
            }
        }
    }
    Ok(())
}
