//! Sans-IO media: RTP/RTCP, jitter buffer, codecs, DTMF.

pub mod dtmf;
