//! Placeholder: replaced by the smtp work. The interface the rest of the program uses:

use super::{Envelope, Reply};
use crate::error::Result;
use crate::provider::Server;

pub struct Session {}

impl Session {
    /// TCP (TCP_NODELAY), greeting, EHLO, STARTTLS (or implicit TLS), EHLO again.
    /// `verbose` prints the dialogue to stderr.
    pub async fn connect(server: &Server, verbose: bool) -> Result<Session> {
        let _ = (server, verbose);
        unimplemented!()
    }

    /// AUTH XOAUTH2. A refusal is `Error::reply(Phase::Auth, ..)` (`is_auth_refused()`).
    pub async fn authenticate(&mut self, user: &str, access_token: &str) -> Result<()> {
        let _ = (user, access_token);
        unimplemented!()
    }

    /// MAIL, RCPT..., DATA (pipelined when offered), the message, and the final reply.
    /// `message` is the message as parts to be sent one after another, with LF or CRLF
    /// line endings; the session normalises to CRLF and dot-stuffs.
    pub async fn send(&mut self, envelope: &Envelope, message: &[&[u8]]) -> Result<Reply> {
        let _ = (envelope, message);
        unimplemented!()
    }

    /// Sends QUIT and closes without waiting for the reply.
    pub async fn quit(self) {}
}
