//! Paths of the guest modules built for the tests, and the worker program
//! they run.
#![forbid(unsafe_code)]

include!(concat!(env!("OUT_DIR"), "/guests.rs"));
