//! The login's negotiation as the receiving side sees it: how the server
//! answered our HELLO ([`Login`]), what the receiving side remembers of
//! the exchange ([`Negotiation`]), and the wait for the answer that the
//! sending side does ([`await_login`]).

use std::time::Duration;

use super::Greeting;
use crate::runtime;
use crate::wire::v1::PendingReason;

/// How the server answered our HELLO.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Login {
    /// WELCOME (and, if asked, the presence snapshot) arrived.
    Extended,
    /// A v1 server answered `'' is not connected`.
    V1,
    /// No answer within the HELLO timeout, or within what PENDING
    /// promised (`pending`: a pmchat server said it was working on it).
    Silent { pending: bool },
    /// Not an outcome: the server is working on the login and will answer
    /// within this long ([`await_login`] waits on).
    Pending(Option<PendingReason>, Duration),
}

/// PENDING frames heeded per login: a server that keeps sending them is
/// not believed forever.
pub(super) const MAX_PENDING: usize = 8;
/// The longest one PENDING may make us wait, whatever it says.
pub(super) const MAX_PENDING_WAIT: Duration = Duration::from_secs(120);

/// The channel on which the receiving side tells the login's outcome:
/// room for every PENDING heeded and the outcome, so nothing is dropped.
pub fn login_channel() -> (async_channel::Sender<Login>, async_channel::Receiver<Login>) {
    async_channel::bounded(MAX_PENDING + 1)
}

/// The receiving side's view of the HELLO exchange.
pub struct Negotiation {
    /// Told the outcome once it is known; `None` once it was told (or when
    /// no HELLO was sent).
    pub outcome: Option<async_channel::Sender<Login>>,
    /// We asked for presence, so the first ONLINE list after WELCOME is the
    /// snapshot, not an answer to `who`.
    pub presence: bool,
    /// `'' is not connected` errors still to be read as a v1 server's
    /// answers to our login frames (HELLO, AUTH) rather than shown.
    pub v1_answers: u8,
    /// A refusal because the name is taken is not shown: the caller will
    /// try again (reconnecting while our stale session holds the name).
    pub quiet_name_taken: bool,
    /// A refusal for want of a password is not shown: the caller asks for
    /// one and logs in again.
    pub quiet_password_required: bool,
    /// PENDING frames heeded so far.
    pub pending: usize,
}

impl Negotiation {
    /// The negotiation of a login that tells `outcome`.
    pub fn new(outcome: async_channel::Sender<Login>, greeting: &Greeting) -> Self {
        Negotiation {
            outcome: Some(outcome),
            presence: greeting.presence,
            v1_answers: greeting.v1_answers,
            quiet_name_taken: false,
            quiet_password_required: false,
            pending: 0,
        }
    }
}

pub(super) fn tell(outcome: &mut Option<async_channel::Sender<Login>>, login: Login) {
    if let Some(outcome) = outcome.take() {
        let _ = outcome.try_send(login);
    }
}

/// Waits for the outcome of HELLO: the receiving side's verdict, or
/// [`Login::Silent`] if nothing came within `timeout`. A PENDING from the
/// server moves the deadline to what it promised plus `timeout`, and is
/// handed to `pending` (to tell the user); never returned. `None` means the
/// receiving side ended first (the server closed the connection).
pub async fn await_login(
    outcome: &async_channel::Receiver<Login>,
    timeout: Duration,
    mut pending: impl FnMut(Option<PendingReason>, Duration),
) -> Option<Login> {
    let mut deadline = std::time::Instant::now() + timeout;
    let mut told_pending = false;
    loop {
        match runtime::until(deadline, outcome.recv()).await {
            Some(Ok(Login::Pending(reason, wait))) => {
                told_pending = true;
                deadline = std::time::Instant::now() + wait + timeout;
                pending(reason, wait);
            }
            Some(told) => return told.ok(),
            None => {
                // Whatever comes later is no longer the login's answer.
                outcome.close();
                return Some(Login::Silent {
                    pending: told_pending,
                });
            }
        }
    }
}

/// What a PENDING means, for people.
pub fn pending_notice(reason: Option<PendingReason>, wait: Duration) -> String {
    let what = match reason {
        Some(PendingReason::Password) => "checking the password (slowed down after failed logins)",
        Some(PendingReason::Cluster) => "claiming the name across its cluster",
        None => "working on the login",
    };
    format!(
        "the server is {what}; waiting up to {}",
        crate::args::format_wait(wait)
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_silent_server_is_silent_after_the_timeout_and_pending_extends_it() {
        smol::block_on(async {
            let (outcome, told) = login_channel();
            let silent = await_login(&told, Duration::from_millis(20), |_, _| {}).await;
            assert_eq!(Some(Login::Silent { pending: false }), silent);
            drop(outcome);
            let (outcome, told) = login_channel();
            outcome
                .try_send(Login::Pending(None, Duration::from_millis(30)))
                .unwrap();
            let mut notices = 0;
            let started = std::time::Instant::now();
            let answer = await_login(&told, Duration::from_millis(20), |_, _| notices += 1).await;
            assert_eq!(Some(Login::Silent { pending: true }), answer);
            assert_eq!(1, notices);
            assert!(started.elapsed() >= Duration::from_millis(50));
        });
    }
}
