//! Placeholder: replaced by the plan work. The interface:

use crate::cli::SendArgs;
use crate::config::Config;
use crate::error::Result;
use crate::message::{HeaderEdits, Message};
use crate::smtp::Envelope;

/// What to do with one message: which account, which envelope, which header edits.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SendPlan {
    pub account: String,
    pub envelope: Envelope,
    pub edits: HeaderEdits,
}

/// Inputs that are not pure: the clock and a random seed (for Message-ID).
#[derive(Debug, Clone, Copy)]
pub struct Context {
    /// Unix seconds.
    pub now: u64,
    pub random: u64,
}

/// Pure: account choice, envelope, aliases, header edits.
pub fn resolve(
    args: &SendArgs,
    config: &Config,
    message: &Message,
    ctx: Context,
) -> Result<SendPlan> {
    let _ = (args, config, message, ctx);
    unimplemented!()
}

impl std::fmt::Display for SendPlan {
    /// The dry-run report: envelope and header edits, one item per line.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let _ = f;
        unimplemented!()
    }
}
