//! The SMTP relay mock driven by a raw TCP client (every command written by hand), as the e-mail
//! connector and QA drive it. One test binary; the modules group the behaviour, `harness` holds
//! the shared helpers.

mod auth;
mod control;
mod dialogue;
mod faults;
mod feedback;
mod harness;
mod lettre_client;
