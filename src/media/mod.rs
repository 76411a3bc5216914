//! Sans-IO media: RTP/RTCP, jitter buffer, codecs, DTMF.

// RTP/RTCP packet handling, jitter buffer and call-quality estimate.
pub mod jitter;
pub mod quality;
pub mod rtcp;
pub mod rtp;
