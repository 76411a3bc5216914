//! Sans-IO media: RTP/RTCP, jitter buffer, codecs, DTMF.
//!
//! Nothing here touches a socket, tokio or the clock: time-dependent entry points take
//! `now: Instant`. The runtime owns the RTP sockets and paces frames.

pub mod codec;
pub mod dtmf;
pub mod jitter;
pub mod quality;
pub mod rtcp;
pub mod rtp;
mod spares;
pub mod stream;
