//! The email channel family: its typed settings (the plug-in code moves here next; see issue 11).
pub mod config;
