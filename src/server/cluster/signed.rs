//! The text values a node writes to Redis for the others, signed with the
//! cluster key when there is one (see `key`): a name's holder, a node's
//! entries in its set of names, presence events, bans and the batch
//! format a node's lease announces. Without a key
//! they are the plain values; with one, each carries its signature, and
//! one that does not verify counts as absent.

use super::keys::{format_of, name_key, BATCH_FORMAT};
use super::Cluster;

impl Cluster {
    /// What this node writes as the holder of `name` (`pmchat:name:NAME`).
    pub(super) fn holder_value(&self, name: &str) -> String {
        self.holder_value_of(name, &self.node)
    }

    /// What `node` writes as the holder of `name`.
    pub(super) fn holder_value_of(&self, name: &str, node: &str) -> String {
        match &self.key {
            None => node.to_string(),
            Some(key) => format!(
                "{node} {}",
                key.sign_hex(format!("name:{name}:{node}").as_bytes())
            ),
        }
    }

    /// The node a holder value read from Redis names, if it is genuine.
    pub(super) fn holder_node<'a>(&self, name: &str, value: &'a str) -> Option<&'a str> {
        match &self.key {
            None => Some(value),
            Some(key) => {
                let (node, signature) = value.split_once(' ')?;
                key.verify_hex(format!("name:{name}:{node}").as_bytes(), signature)
                    .then_some(node)
            }
        }
    }

    /// This node's entry for `name` in its set of names.
    pub(super) fn member(&self, name: &str) -> String {
        match &self.key {
            None => name_key(name),
            Some(_) => format!("{} {}", name_key(name), self.holder_value(name)),
        }
    }

    /// The name an entry of `node`'s set of names stands for, if genuine;
    /// with the key its signature must be `node`'s for that name.
    pub(super) fn member_name<'a>(&self, node: &str, member: &'a str) -> Option<&'a str> {
        let (key, holder) = match &self.key {
            None => (member, None),
            Some(_) => {
                let (key, holder) = member.split_once(' ')?;
                (key, Some(holder))
            }
        };
        let name = key.strip_prefix("pmchat:name:")?;
        match holder {
            None => Some(name),
            Some(holder) => (self.holder_node(name, holder) == Some(node)).then_some(name),
        }
    }

    /// The key an entry of a set of names stands for.
    pub(super) fn member_key(member: &str) -> &str {
        member.split(' ').next().unwrap_or(member)
    }

    /// A presence event: `+NODE NAME` or `-NODE NAME`, signed.
    pub(super) fn presence_text(&self, joined: bool, name: &str) -> String {
        let event = format!("{}{} {name}", if joined { '+' } else { '-' }, self.node);
        match &self.key {
            None => event,
            Some(key) => {
                let signature = key.sign_hex(format!("presence:{event}").as_bytes());
                format!("{event} {signature}")
            }
        }
    }

    /// The unsigned part of a presence event read from Redis, if genuine.
    pub(super) fn verified_presence<'a>(&self, event: &'a [u8]) -> Option<&'a [u8]> {
        let Some(key) = &self.key else {
            return Some(event);
        };
        let text = std::str::from_utf8(event).ok()?;
        let (event, signature) = text.rsplit_once(' ')?;
        key.verify_hex(format!("presence:{event}").as_bytes(), signature)
            .then_some(event.as_bytes())
    }

    /// What this node writes as its lease's value: the batch format it
    /// reads.
    pub(super) fn lease_value(&self) -> String {
        match &self.key {
            None => BATCH_FORMAT.to_string(),
            Some(key) => format!(
                "{BATCH_FORMAT} {}",
                key.sign_hex(format!("lease:{}:{BATCH_FORMAT}", self.node).as_bytes())
            ),
        }
    }

    /// The batch format `node`'s lease value says it reads. With the key,
    /// a format past the first counts only if `node` signed it: a forged
    /// one would have this node send series to a node of the first format,
    /// which cannot read them. Anything else is the first, which every node
    /// reads.
    pub(super) fn lease_format(&self, node: &str, value: &str) -> u32 {
        let (format, signature) = match value.split_once(' ') {
            Some((format, signature)) => (format_of(format), Some(signature)),
            None => (format_of(value), None),
        };
        match (&self.key, signature) {
            (None, _) => format,
            (Some(key), Some(signature))
                if key.verify_hex(format!("lease:{node}:{format}").as_bytes(), signature) =>
            {
                format
            }
            (Some(_), _) => 1,
        }
    }

    /// The value of a ban on `name`.
    pub(super) fn ban_value(&self, name: &str) -> String {
        match &self.key {
            None => "1".to_string(),
            Some(key) => key.sign_hex(format!("ban:{name}").as_bytes()),
        }
    }

    /// True when a ban value read from Redis is genuine.
    pub(super) fn genuine_ban(&self, name: &str, value: &str) -> bool {
        match &self.key {
            None => true,
            Some(key) => key.verify_hex(format!("ban:{name}").as_bytes(), value),
        }
    }
}
