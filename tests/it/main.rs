//! Integration tests: the real binary, with `HOME`/`XDG_*` in a temporary directory,
//! against in-process servers on 127.0.0.1 that speak the real protocols over TCP and TLS.
//! One test binary (this one) keeps link time low.

#![allow(dead_code)]

mod architecture;
mod clients;
mod docs;
mod dovecot;
mod dry_run;
mod fake_dns;
mod fake_graph;
mod fake_idp;
mod fake_smtp;
mod first_run;
mod graph;
mod graph_large;
mod graph_network;
mod hardening;
mod hardening_files;
mod keyring;
mod login;
mod manual;
mod migrate;
mod outcomes;
mod package;
mod peers;
mod proxy;
mod queue;
mod scheduling;
mod send;
mod slow_link;
mod status;
mod support;
mod system;
mod token;
mod wording;
