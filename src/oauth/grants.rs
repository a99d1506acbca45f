//! Placeholder: replaced by the oauth work.
