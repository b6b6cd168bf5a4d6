//! The text values a node writes to Redis for the others, signed with the
//! cluster key when there is one (see `key`): a name's holder, a node's
//! entries in its set of names, presence events and bans. Without a key
//! they are the plain values; with one, each carries its signature, and
//! one that does not verify counts as absent.

use super::keys::name_key;
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
