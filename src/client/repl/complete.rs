//! Tab completion in the editor: command names, then usernames after
//! `send ` (or `/msg `).

use std::sync::Arc;

use rustyline::completion::{Completer, Pair};
use rustyline::{Context, Helper, Highlighter, Hinter, Validator};

use crate::client::command::COMMANDS;
use crate::client::state::ChatState;

/// Tab completion: command names, then usernames after `send `.
#[derive(Helper, Hinter, Highlighter, Validator)]
pub struct ChatHelper {
    /// Where the known usernames live; the network side adds to it.
    state: Arc<ChatState>,
}

impl ChatHelper {
    /// A helper completing from `state`.
    pub fn new(state: Arc<ChatState>) -> Self {
        ChatHelper { state }
    }
}

impl Completer for ChatHelper {
    type Candidate = Pair;

    fn complete(
        &self,
        line: &str,
        pos: usize,
        _ctx: &Context<'_>,
    ) -> rustyline::Result<(usize, Vec<Pair>)> {
        let before = &line[..pos];
        let pair = |text: &str| Pair {
            display: text.to_string(),
            replacement: format!("{text} "),
        };
        if !before.contains(' ') {
            let names = COMMANDS.iter().filter(|c| c.starts_with(before));
            return Ok((0, names.map(|c| pair(c)).collect()));
        }
        for verb in ["send ", "/msg "] {
            if let Some(partial) = before.strip_prefix(verb) {
                if !partial.contains(' ') {
                    let users = self.state.users_starting_with(partial);
                    return Ok((verb.len(), users.iter().map(|u| pair(u)).collect()));
                }
            }
        }
        Ok((pos, Vec::new()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rustyline::history::DefaultHistory;

    fn complete(helper: &ChatHelper, line: &str) -> (usize, Vec<String>) {
        let history = DefaultHistory::new();
        let ctx = Context::new(&history);
        let (start, pairs) = helper.complete(line, line.len(), &ctx).unwrap();
        (start, pairs.into_iter().map(|p| p.replacement).collect())
    }

    #[test]
    fn completes_commands_then_usernames() {
        let state = Arc::new(ChatState::default());
        state.know("bob");
        state.know("bobby");
        state.know("carol");
        let helper = ChatHelper::new(state);
        assert_eq!(complete(&helper, "se"), (0, vec!["send ".to_string()]));
        assert_eq!(
            complete(&helper, "send bo"),
            (5, vec!["bob ".to_string(), "bobby ".to_string()])
        );
        assert_eq!(complete(&helper, "send bob hel"), (12, vec![]));
        assert_eq!(complete(&helper, "reply b"), (7, vec![]));
    }

    #[test]
    fn completion_after_msg_offers_usernames() {
        let state = Arc::new(ChatState::default());
        state.know("bob");
        let helper = ChatHelper::new(state);
        assert_eq!(complete(&helper, "/msg b"), (5, vec!["bob ".to_string()]));
    }
}
