//! Placeholder: replaced by the message work. The interface:

use std::io::Read;

use crate::error::Result;

/// A message as read on stdin (a leading mbox `From ` line dropped), with a view of its
/// header block. mail-parser stays behind this module.
#[derive(Debug)]
pub struct Message {}

/// A mailbox from a header: display name and address.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mailbox {
    pub name: Option<String>,
    pub address: String,
}

/// Header changes decided by `plan`: fields to add at the end of the header block, and a
/// replacement for the (first) From field. Bcc and Resent-Bcc are always removed.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct HeaderEdits {
    /// (name, value) pairs, e.g. ("Date", "Sun, 22 Nov 2026 21:59:36 +0000").
    pub add: Vec<(String, String)>,
    /// The whole new value of From (e.g. "Alice <alice@contoso.com>"); added if there is none.
    pub from: Option<String>,
}

impl Message {
    /// Reads all of the input. Empty input or a NUL byte is `Error::data` (exit 65).
    pub fn read(input: impl Read) -> Result<Message> {
        let _ = input;
        unimplemented!()
    }

    /// The message as parts to send one after another: header fields kept as they are
    /// (byte ranges of the input), Bcc/Resent-Bcc removed, edits applied, the body untouched.
    #[must_use]
    pub fn render<'a>(&'a self, edits: &'a HeaderEdits) -> Vec<std::borrow::Cow<'a, [u8]>> {
        let _ = edits;
        unimplemented!()
    }
}
