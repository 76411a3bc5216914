//! Tokio glue: sockets, timers, DNS. The only layer that reads the clock.

pub mod dns;
