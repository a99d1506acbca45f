//! Placeholder: replaced by the smtp work.
