//! A server reply: the three-digit code and its text lines, with the enhanced status
//! code (RFC 3463) when the server gives one. Shared by the session and the errors, so it
//! sits below both: `error` carries one without depending on the SMTP session.

use std::fmt;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reply {
    pub code: u16,
    /// The text of each line, without the code and separator.
    pub lines: Vec<String>,
}

impl Reply {
    #[cfg(test)]
    #[must_use]
    pub fn new(code: u16, text: &str) -> Self {
        Reply {
            code,
            lines: text.split('\n').map(str::to_owned).collect(),
        }
    }

    /// 2xx: done (a 3xx is an intermediate step, not a success).
    #[must_use]
    pub fn is_success(&self) -> bool {
        (200..300).contains(&self.code)
    }

    /// 4xx: try again later.
    #[must_use]
    pub fn is_transient(&self) -> bool {
        (400..500).contains(&self.code)
    }

    /// 5xx: do not retry as is.
    #[must_use]
    pub fn is_permanent(&self) -> bool {
        self.code >= 500
    }

    /// The enhanced status code (`5.7.3`) at the start of the first line, if any.
    #[must_use]
    pub fn enhanced(&self) -> Option<&str> {
        let first = self.lines.first()?.split_whitespace().next()?;
        let mut parts = first.split('.');
        let class = parts.next()?;
        let ok = matches!(class, "2" | "4" | "5")
            && parts.clone().count() == 2
            && parts
                .all(|p| !p.is_empty() && p.len() <= 3 && p.bytes().all(|b| b.is_ascii_digit()));
        ok.then_some(first)
    }

    /// All text lines joined by a space: what a user reads.
    #[must_use]
    pub fn text(&self) -> String {
        self.lines.join(" ")
    }
}

impl fmt::Display for Reply {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}", self.code, self.text().trim_end())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn enhanced_code() {
        let r = Reply::new(535, "5.7.3 Authentication unsuccessful [X.PROD]");
        assert_eq!(r.enhanced(), Some("5.7.3"));
        assert_eq!(Reply::new(250, "OK").enhanced(), None);
        assert_eq!(
            Reply::new(554, "5.2.252 SendAsDenied").enhanced(),
            Some("5.2.252")
        );
        assert!(r.is_permanent() && !r.is_transient());
        assert_eq!(
            r.to_string(),
            "535 5.7.3 Authentication unsuccessful [X.PROD]"
        );
    }
}
