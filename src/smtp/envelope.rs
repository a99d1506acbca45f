//! The envelope's rules: what may go on MAIL and RCPT lines, the DSN parameters each
//! recipient carries, and how the replies to a pipelined MAIL and RCPTs are judged
//! (recipients are all or nothing; a `452` means "no more in this transaction"). The
//! envelope's commands are built here too, with the parameters the server offers (SIZE,
//! 8BITMIME, SMTPUTF8, DSN).

use super::wire::{Capabilities, Mail, MailParam, Rcpt, RcptParam};
use super::{Envelope, Reply};
use crate::error::{Error, Phase, Result};

/// A later transaction of a message split by the server's recipient limit failed after
/// earlier ones were accepted.
pub(super) fn partly_delivered(delivered: &[String], e: &Error) -> Error {
    let to: Vec<String> = delivered.iter().map(|a| format!("<{a}>")).collect();
    let failure = match e.refused_recipients() {
        Some(refused) => refused
            .iter()
            .map(|(a, r)| format!("<{a}>: {r}"))
            .collect::<Vec<_>>()
            .join(", "),
        _ => e.to_string(),
    };
    Error::protocol(
        Phase::Rcpt,
        format!(
            "the server took the message for {} in earlier transactions (its limit of recipients \
             per message), then failed for the others: {failure}; send it again only to those",
            to.join(", ")
        ),
    )
}

/// MAIL and RCPT with the parameters this server understands; refuses what cannot be
/// sent before any byte goes out.
pub(super) fn envelope_commands(
    caps: &Capabilities,
    envelope: &Envelope,
    size: u64,
) -> Result<(Mail, Vec<Rcpt>)> {
    check_envelope(envelope)?;
    let needs_utf8 = envelope.smtputf8
        || envelope
            .from
            .iter()
            .chain(&envelope.recipients)
            .any(|a| !a.is_ascii());
    if needs_utf8 && !caps.smtputf8 {
        return Err(Error::data(
            "an envelope address is not ASCII, but the server does not offer SMTPUTF8",
        ));
    }
    let mut params = Vec::new();
    if let Some(limit) = caps.size {
        if limit > 0 && size > limit {
            return Err(Error::too_large(size, limit));
        }
        params.push(MailParam::Size(size));
    }
    if envelope.eight_bit && caps.eight_bit_mime {
        params.push(MailParam::Body8BitMime);
    }
    if needs_utf8 {
        params.push(MailParam::SmtpUtf8);
    }
    let dsn = &envelope.dsn;
    let use_dsn = caps.dsn && (dsn.notify.is_some() || dsn.ret.is_some() || dsn.envid.is_some());
    if use_dsn {
        params.extend(dsn.ret.clone().map(MailParam::Ret));
        params.extend(dsn.envid.clone().map(MailParam::EnvId));
    }
    let rcpts = envelope
        .recipients
        .iter()
        .map(|to| Rcpt {
            to: to.clone(),
            params: if use_dsn {
                dsn_rcpt_params(envelope, to)
            } else {
                Vec::new()
            },
        })
        .collect();
    let mail = Mail {
        from: envelope.from.clone().filter(|f| !f.is_empty()),
        params,
    };
    Ok((mail, rcpts))
}

/// MAIL's reply, then each RCPT's. A refused MAIL wins; then every permanently refused
/// recipient (exit 67); then the first temporary refusal (exit 75). `replies` may be
/// short (a broken connection); extra replies (DATA's) are ignored.
pub(super) fn judge_envelope(rcpts: &[Rcpt], replies: &[Reply]) -> Result<Vec<Rcpt>> {
    let Some((mail, rest)) = replies.split_first() else {
        return Ok(Vec::new());
    };
    if !mail.is_success() {
        return Err(Error::reply(Phase::Mail, mail.clone()));
    }
    let answered: Vec<(&Rcpt, &Reply)> = rcpts.iter().zip(rest).collect();
    let refused: Vec<(String, Reply)> = answered
        .iter()
        .filter(|(_, r)| r.is_permanent())
        .map(|(rcpt, r)| (rcpt.to.clone(), (*r).clone()))
        .collect();
    if !refused.is_empty() {
        return Err(Error::recipients_refused(refused));
    }
    if let Some((_, r)) = answered
        .iter()
        .find(|(_, r)| !r.is_success() && !is_too_many_recipients(r))
    {
        return Err(Error::reply(Phase::Rcpt, (*r).clone()));
    }
    let deferred: Vec<Rcpt> = answered
        .iter()
        .filter(|(_, r)| is_too_many_recipients(r))
        .map(|(rcpt, _)| (*rcpt).clone())
        .collect();
    let accepted = answered.iter().filter(|(_, r)| r.is_success()).count();
    if let Some((_, r)) = answered.iter().find(|(_, r)| is_too_many_recipients(r))
        && accepted == 0
        && answered.len() == rcpts.len()
    {
        // Not one recipient fits: a server busy or limited to none, try again later.
        return Err(Error::reply(Phase::Rcpt, (*r).clone()));
    }
    Ok(deferred)
}

/// RFC 5321 §4.5.3.1.10: `452` (or, as Dovecot says it, `451 4.5.3`) to a RCPT means this
/// transaction has as many recipients as the server takes, not that this one is refused:
/// it goes in a further transaction. `452 4.3.1` (no storage) and others are temporary
/// refusals.
fn is_too_many_recipients(reply: &Reply) -> bool {
    match reply.enhanced() {
        Some(code) => reply.is_transient() && code == "4.5.3",
        None => reply.code == 452,
    }
}

/// Addresses and DSN values go on command lines: nothing in them may end or extend one.
fn check_envelope(envelope: &Envelope) -> Result<()> {
    if envelope.recipients.is_empty() {
        return Err(Error::data("no recipient"));
    }
    let bad = |a: &str| {
        a.chars()
            .any(|c| c.is_control() || c == '<' || c == '>' || c == ' ')
    };
    let from = envelope.from.as_deref().unwrap_or("");
    let recipients = envelope.recipients.iter().map(String::as_str);
    for address in std::iter::once(from).chain(recipients) {
        if bad(address) {
            return Err(Error::data(format!("invalid envelope address {address:?}")));
        }
    }
    if envelope.recipients.iter().any(String::is_empty) {
        return Err(Error::data("an empty recipient address"));
    }
    let keyword = |v: &Option<String>| {
        v.as_deref().is_some_and(|v| {
            v.is_empty() || !v.bytes().all(|b| b.is_ascii_uppercase() || b == b',')
        })
    };
    if keyword(&envelope.dsn.notify) || keyword(&envelope.dsn.ret) {
        return Err(Error::data("invalid DSN NOTIFY or RET value"));
    }
    Ok(())
}

/// NOTIFY as asked, and ORCPT (the address as given) so the DSN names it.
fn dsn_rcpt_params(envelope: &Envelope, to: &str) -> Vec<RcptParam> {
    let mut params: Vec<RcptParam> = envelope
        .dsn
        .notify
        .clone()
        .map(RcptParam::Notify)
        .into_iter()
        .collect();
    // `rfc822;` is for ASCII addresses only (RFC 6533 has another type for UTF-8).
    if to.is_ascii() {
        params.push(RcptParam::Orcpt(to.to_owned()));
    }
    params
}
