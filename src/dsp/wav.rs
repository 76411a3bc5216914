//! WAV (RIFF/WAVE) files, PCM 16-bit: header building and parsing, the size-patching logic
//! shared by finishing a recording and repairing one a crash left unfinished, and PCM16
//! interleaving helpers. Pure: no file I/O (see `runtime::recorder` for that).
//!
//! # Unfinished files
//!
//! A writer that streams audio to disk does not know the final sizes when it writes the
//! header. It writes [`PLACEHOLDER_DATA_LEN`] (`0x7fff_f000`) as the `data` chunk size and
//! `36 + PLACEHOLDER_DATA_LEN` as the RIFF size, the values sox itself writes to a pipe: sox
//! and soxi read such a file to its end without complaint, and readers that trust the size
//! (Python's `wave`, most decoders) stop at end of file. Zero would make sox and others read
//! no audio at all, and `0xFFFF_FFFF` makes sox warn of a premature end of file. When the
//! writer finishes it patches both sizes ([`SizePatch`]); after a crash [`plan_repair`] finds
//! the same patch from the file length.
//!
//! The RIFF and `data` sizes are 32-bit, so a file holds at most [`MAX_DATA_LEN`] bytes of
//! audio (with 2 channels at 48 kHz about 6 h 12 min).

/// Length of the canonical header [`canonical_header`] writes: `RIFF` chunk header (12
/// bytes), a 16-byte `fmt ` chunk (24 bytes) and the `data` chunk header (8 bytes).
pub const CANONICAL_HEADER_LEN: usize = 44;

/// Offset of the RIFF chunk size in every WAV file (RIFF: "RIFF", size, "WAVE").
pub const RIFF_SIZE_OFFSET: u64 = 4;

/// Offset of the `data` chunk size in a canonical 44-byte header.
pub const CANONICAL_DATA_SIZE_OFFSET: u64 = 40;

/// `data` size written while a file is still being recorded: sox's "unspecified length"
/// (`MS_UNSPEC` in sox's wav.c). Readers take it as "read to end of file".
pub const PLACEHOLDER_DATA_LEN: u32 = 0x7fff_f000;

/// The largest `data` chunk a canonical file can declare: the RIFF size
/// (`36 + data`) must fit in 32 bits; rounded down to whole stereo PCM16 frames.
pub const MAX_DATA_LEN: u32 = (u32::MAX - 36) & !3;

/// `wFormatTag` of integer PCM (Microsoft RIFF spec, `WAVE_FORMAT_PCM`).
pub const WAVE_FORMAT_PCM: u16 = 0x0001;

/// `wFormatTag` of `WAVE_FORMAT_EXTENSIBLE`: the real format is the first two bytes of the
/// sub-format GUID at offset 24 of the `fmt ` chunk.
pub const WAVE_FORMAT_EXTENSIBLE: u16 = 0xFFFE;

/// Bytes per PCM16 sample.
pub const BYTES_PER_SAMPLE: u16 = 2;

/// Why bytes are not a usable WAV file.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum WavError {
    /// The file does not start with `RIFF....WAVE`.
    #[error("not a RIFF/WAVE file")]
    NotWave,
    /// The bytes end inside the header.
    #[error("header truncated: {what} needs {needed} bytes, only {available} present")]
    Truncated {
        /// What was being read.
        what: &'static str,
        /// Bytes needed up to the end of it.
        needed: u64,
        /// Bytes present.
        available: u64,
    },
    /// No `fmt ` chunk before the `data` chunk.
    #[error("no fmt chunk before the data chunk")]
    NoFmt,
    /// No `data` chunk.
    #[error("no data chunk")]
    NoData,
    /// The `fmt ` chunk is inconsistent.
    #[error("bad fmt chunk: {0}")]
    BadFmt(&'static str),
    /// A format other than 16-bit integer PCM.
    #[error("not 16-bit PCM (format tag {format_tag:#06x}, {bits_per_sample} bits per sample)")]
    NotPcm16 {
        /// The effective format tag (the sub-format for `WAVE_FORMAT_EXTENSIBLE`).
        format_tag: u16,
        /// Bits per sample.
        bits_per_sample: u16,
    },
}

/// A validated PCM16 stream layout: at least one channel, a non-zero sample rate.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Pcm16Spec {
    channels: u16,
    sample_rate: u32,
}

impl Pcm16Spec {
    /// A layout with `channels` channels at `sample_rate` Hz; `None` if either is zero or the
    /// byte rate overflows 32 bits.
    pub fn new(channels: u16, sample_rate: u32) -> Option<Pcm16Spec> {
        if channels == 0 || sample_rate == 0 {
            return None;
        }
        u32::from(channels)
            .checked_mul(u32::from(BYTES_PER_SAMPLE))?
            .checked_mul(sample_rate)?;
        Some(Pcm16Spec {
            channels,
            sample_rate,
        })
    }

    /// Number of channels (1 or more).
    pub fn channels(self) -> u16 {
        self.channels
    }

    /// Sample rate in Hz (non-zero).
    pub fn sample_rate(self) -> u32 {
        self.sample_rate
    }

    /// Bytes per sample frame (one sample of every channel).
    pub fn block_align(self) -> u16 {
        // `new` checked channels * 2 * rate fits in u32; channels * 2 fits in u16 only up to
        // 32767 channels, which saturates harmlessly for absurd values.
        self.channels.saturating_mul(BYTES_PER_SAMPLE)
    }

    /// Bytes per second.
    pub fn byte_rate(self) -> u32 {
        // invariant: `new` checked this product does not overflow.
        self.sample_rate * u32::from(self.channels) * u32::from(BYTES_PER_SAMPLE)
    }
}

/// The `fmt ` chunk as found in a file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FmtChunk {
    /// Effective format tag (the sub-format's for `WAVE_FORMAT_EXTENSIBLE`).
    pub format_tag: u16,
    /// Channels.
    pub channels: u16,
    /// Sample rate in Hz.
    pub sample_rate: u32,
    /// Bytes per sample frame.
    pub block_align: u16,
    /// Bits per sample.
    pub bits_per_sample: u16,
}

/// What the header of a WAV file says, up to the start of its `data` chunk.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WavHeader {
    /// The declared RIFF chunk size (file length minus 8 in a finished file).
    pub riff_len: u32,
    /// The format.
    pub fmt: FmtChunk,
    /// Offset of the `data` chunk's size field.
    pub data_len_offset: u64,
    /// Offset of the first audio byte.
    pub data_offset: u64,
    /// The declared `data` size (may be [`PLACEHOLDER_DATA_LEN`] or exceed the file).
    pub data_len: u32,
}

impl WavHeader {
    /// The format as a PCM16 layout, or why it is not one.
    pub fn pcm16_spec(&self) -> Result<Pcm16Spec, WavError> {
        let f = &self.fmt;
        if f.format_tag != WAVE_FORMAT_PCM || f.bits_per_sample != 16 {
            return Err(WavError::NotPcm16 {
                format_tag: f.format_tag,
                bits_per_sample: f.bits_per_sample,
            });
        }
        let spec = Pcm16Spec::new(f.channels, f.sample_rate)
            .ok_or(WavError::BadFmt("zero channels or zero sample rate"))?;
        if f.block_align != spec.block_align() {
            return Err(WavError::BadFmt("block align is not channels * 2"));
        }
        Ok(spec)
    }
}

/// A decoded PCM16 file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pcm16Wav {
    /// Layout.
    pub spec: Pcm16Spec,
    /// Interleaved samples, whole frames only.
    pub samples: Vec<i16>,
    /// True if the `data` chunk declared more bytes than the file holds (an unfinished
    /// recording, or a cut file); `samples` holds what is there.
    pub truncated: bool,
}

impl Pcm16Wav {
    /// Number of sample frames.
    pub fn frames(&self) -> usize {
        self.samples.len() / usize::from(self.spec.channels())
    }

    /// Samples of one channel (`channel` counts from 0; empty if out of range).
    pub fn channel(&self, channel: u16) -> Vec<i16> {
        channel_of(&self.samples, self.spec.channels(), channel)
    }
}

/// The sizes to write into a WAV file to make it consistent, and where.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SizePatch {
    /// Length the file must be cut to first (whole sample frames).
    pub file_len: u64,
    /// RIFF size to write at [`RIFF_SIZE_OFFSET`].
    pub riff_len: u32,
    /// Offset of the `data` size field.
    pub data_len_offset: u64,
    /// `data` size to write there.
    pub data_len: u32,
}

impl SizePatch {
    /// The patch for a file whose `data` chunk starts at `data_offset` (its size field just
    /// before it) and holds `data_bytes` bytes; `data_bytes` is cut to whole `block_align`
    /// frames and to [`MAX_DATA_LEN`]. `None` if `data_offset` is too small to be a WAV file
    /// (under 12 + 8 bytes) or so large the RIFF size overflows.
    pub fn for_data(data_offset: u64, data_bytes: u64, block_align: u16) -> Option<SizePatch> {
        if data_offset < 20 || block_align == 0 {
            return None;
        }
        let block = u64::from(block_align);
        // Largest data length such that riff = data_offset - 8 + data fits in u32.
        let room = u64::from(u32::MAX).checked_sub(data_offset - 8)?;
        let data = data_bytes.min(room).min(u64::from(MAX_DATA_LEN));
        let data = data - data % block;
        let riff = data_offset - 8 + data;
        Some(SizePatch {
            file_len: data_offset + data,
            riff_len: u32::try_from(riff).ok()?,
            data_len_offset: data_offset - 4,
            data_len: u32::try_from(data).ok()?,
        })
    }

    /// Applies the patch to a whole file held in memory.
    pub fn apply(&self, file: &mut Vec<u8>) {
        if let Ok(len) = usize::try_from(self.file_len) {
            file.truncate(len);
        }
        write_u32_at(file, RIFF_SIZE_OFFSET, self.riff_len);
        write_u32_at(file, self.data_len_offset, self.data_len);
    }
}

/// What [`plan_repair`] decided about a file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RepairPlan {
    /// The header agrees with the file (or describes a file we must not touch, such as one
    /// with chunks after `data`): leave it alone.
    Intact,
    /// An unfinished file: apply this patch.
    Patch(SizePatch),
}

/// Decides whether a WAV file of `file_len` bytes with this header was left unfinished, and
/// how to finish it.
///
/// A file is unfinished when its `data` size is [`PLACEHOLDER_DATA_LEN`], when the `data`
/// chunk claims more bytes than the file holds, or when `data` runs exactly to the end of
/// the file but the RIFF size disagrees. Then the audio actually present is kept, cut to
/// whole sample frames, and both sizes are set to match. Anything else (a finished file, or
/// one with more chunks after `data`) is [`RepairPlan::Intact`].
pub fn plan_repair(header: &WavHeader, file_len: u64) -> RepairPlan {
    let present = file_len.saturating_sub(header.data_offset);
    let declared = u64::from(header.data_len);
    let unfinished = header.data_len == PLACEHOLDER_DATA_LEN
        || declared > present
        || (declared == present && u64::from(header.riff_len) + 8 != file_len);
    if !unfinished {
        return RepairPlan::Intact;
    }
    match SizePatch::for_data(header.data_offset, present, header.fmt.block_align.max(1)) {
        Some(p)
            if p.file_len != file_len
                || p.riff_len != header.riff_len
                || p.data_len != header.data_len =>
        {
            RepairPlan::Patch(p)
        }
        _ => RepairPlan::Intact,
    }
}

/// A canonical 44-byte PCM16 header declaring `data_len` bytes of audio (pass
/// [`PLACEHOLDER_DATA_LEN`] while recording). The RIFF size is `36 + data_len`, saturating.
pub fn canonical_header(spec: Pcm16Spec, data_len: u32) -> [u8; CANONICAL_HEADER_LEN] {
    let mut h = [0u8; CANONICAL_HEADER_LEN];
    let riff = data_len.saturating_add(36);
    let fields: [&[u8]; 13] = [
        b"RIFF",
        &riff.to_le_bytes(),
        b"WAVE",
        b"fmt ",
        &16u32.to_le_bytes(),
        &WAVE_FORMAT_PCM.to_le_bytes(),
        &spec.channels().to_le_bytes(),
        &spec.sample_rate().to_le_bytes(),
        &spec.byte_rate().to_le_bytes(),
        &spec.block_align().to_le_bytes(),
        &16u16.to_le_bytes(),
        b"data",
        &data_len.to_le_bytes(),
    ];
    let mut at = 0;
    for f in fields {
        // invariant: the fields add up to exactly CANONICAL_HEADER_LEN bytes.
        h[at..at + f.len()].copy_from_slice(f);
        at += f.len();
    }
    h
}

/// Parses a WAV header from the start of a file (`prefix` need not hold the audio: parsing
/// stops at the `data` chunk's size field). Chunks before `data` other than `fmt ` are
/// skipped; `fmt ` must come before `data`.
pub fn parse_header(prefix: &[u8]) -> Result<WavHeader, WavError> {
    let available = prefix.len() as u64;
    if prefix.len() < 12 {
        if prefix.len() >= 4 && &prefix[..4] != b"RIFF" {
            return Err(WavError::NotWave);
        }
        return Err(WavError::Truncated {
            what: "RIFF header",
            needed: 12,
            available,
        });
    }
    if &prefix[0..4] != b"RIFF" || &prefix[8..12] != b"WAVE" {
        return Err(WavError::NotWave);
    }
    let riff_len = read_u32(prefix, 4).ok_or(WavError::NotWave)?;
    let mut fmt: Option<FmtChunk> = None;
    let mut at: u64 = 12;
    loop {
        if at >= available && at >= u64::from(riff_len).saturating_add(8) {
            return Err(WavError::NoData);
        }
        let id = slice_at(prefix, at, 4).ok_or(WavError::Truncated {
            what: "chunk header",
            needed: at + 8,
            available,
        })?;
        let size = read_u32_u64(prefix, at + 4).ok_or(WavError::Truncated {
            what: "chunk header",
            needed: at + 8,
            available,
        })?;
        let body = at + 8;
        match id {
            b"fmt " => {
                let bytes = slice_at(prefix, body, size).ok_or(WavError::Truncated {
                    what: "fmt chunk",
                    needed: body + size,
                    available,
                })?;
                fmt = Some(parse_fmt(bytes)?);
            }
            b"data" => {
                let fmt = fmt.ok_or(WavError::NoFmt)?;
                return Ok(WavHeader {
                    riff_len,
                    fmt,
                    data_len_offset: at + 4,
                    data_offset: body,
                    data_len: u32::try_from(size).unwrap_or(u32::MAX),
                });
            }
            _ => {}
        }
        // Chunks are padded to an even length (RIFF spec).
        at = body + size + (size & 1);
    }
}

/// Parses a whole PCM16 WAV file held in memory. A `data` chunk that claims more than the
/// file holds (an unfinished recording) is read to the end of the file, cut to whole frames,
/// and flagged [`Pcm16Wav::truncated`].
pub fn parse_pcm16(file: &[u8]) -> Result<Pcm16Wav, WavError> {
    let header = parse_header(file)?;
    let spec = header.pcm16_spec()?;
    let start = usize::try_from(header.data_offset).unwrap_or(usize::MAX);
    let data = file.get(start..).unwrap_or(&[]);
    let declared = usize::try_from(header.data_len).unwrap_or(usize::MAX);
    let truncated = declared > data.len();
    let data = &data[..declared.min(data.len())];
    let block = usize::from(spec.block_align());
    let whole = data.len() - data.len() % block;
    Ok(Pcm16Wav {
        spec,
        samples: pcm16_from_le(&data[..whole]),
        truncated,
    })
}

/// Appends one stereo PCM16 block per sample pair, little-endian, `left` then `right`. If
/// the slices differ in length the shorter is padded with zeros; returns the number of
/// padding samples added.
pub fn interleave_stereo_le(left: &[i16], right: &[i16], out: &mut Vec<u8>) -> usize {
    let n = left.len().max(right.len());
    out.reserve(n * 4);
    for i in 0..n {
        let l = left.get(i).copied().unwrap_or(0);
        let r = right.get(i).copied().unwrap_or(0);
        out.extend_from_slice(&l.to_le_bytes());
        out.extend_from_slice(&r.to_le_bytes());
    }
    n - left.len().min(right.len())
}

/// Decodes little-endian PCM16 bytes (a trailing odd byte is ignored).
pub fn pcm16_from_le(bytes: &[u8]) -> Vec<i16> {
    bytes
        .chunks_exact(2)
        .map(|b| i16::from_le_bytes([b[0], b[1]]))
        .collect()
}

/// Mixes interleaved samples of `channels` channels down to mono by averaging each frame
/// (no clipping possible). A trailing partial frame is ignored; `channels == 0` gives nothing.
pub fn mix_to_mono(samples: &[i16], channels: u16) -> Vec<i16> {
    let ch = usize::from(channels);
    if ch == 0 {
        return Vec::new();
    }
    if ch == 1 {
        return samples.to_vec();
    }
    samples
        .chunks_exact(ch)
        .map(|frame| {
            let sum: i64 = frame.iter().map(|&s| i64::from(s)).sum();
            // invariant: the mean of i16 values lies in i16's range.
            (sum / ch as i64) as i16
        })
        .collect()
}

/// One channel of interleaved samples (`channel` counts from 0; empty if out of range).
pub fn channel_of(samples: &[i16], channels: u16, channel: u16) -> Vec<i16> {
    if channel >= channels {
        return Vec::new();
    }
    samples
        .chunks_exact(usize::from(channels))
        .filter_map(|frame| frame.get(usize::from(channel)).copied())
        .collect()
}

fn parse_fmt(b: &[u8]) -> Result<FmtChunk, WavError> {
    if b.len() < 16 {
        return Err(WavError::BadFmt("fmt chunk shorter than 16 bytes"));
    }
    let tag = read_u16(b, 0).ok_or(WavError::BadFmt("short"))?;
    let channels = read_u16(b, 2).ok_or(WavError::BadFmt("short"))?;
    let sample_rate = read_u32(b, 4).ok_or(WavError::BadFmt("short"))?;
    let block_align = read_u16(b, 12).ok_or(WavError::BadFmt("short"))?;
    let bits_per_sample = read_u16(b, 14).ok_or(WavError::BadFmt("short"))?;
    let format_tag = if tag == WAVE_FORMAT_EXTENSIBLE {
        // cbSize (2), wValidBitsPerSample (2), dwChannelMask (4), then the GUID whose first
        // two bytes are the format code.
        read_u16(b, 24).ok_or(WavError::BadFmt(
            "WAVE_FORMAT_EXTENSIBLE fmt chunk shorter than 26 bytes",
        ))?
    } else {
        tag
    };
    Ok(FmtChunk {
        format_tag,
        channels,
        sample_rate,
        block_align,
        bits_per_sample,
    })
}

fn slice_at(b: &[u8], at: u64, len: u64) -> Option<&[u8]> {
    let start = usize::try_from(at).ok()?;
    let end = start.checked_add(usize::try_from(len).ok()?)?;
    b.get(start..end)
}

fn read_u16(b: &[u8], at: usize) -> Option<u16> {
    let s = b.get(at..at + 2)?;
    Some(u16::from_le_bytes([s[0], s[1]]))
}

fn read_u32(b: &[u8], at: usize) -> Option<u32> {
    let s = b.get(at..at + 4)?;
    Some(u32::from_le_bytes([s[0], s[1], s[2], s[3]]))
}

fn read_u32_u64(b: &[u8], at: u64) -> Option<u64> {
    read_u32(b, usize::try_from(at).ok()?).map(u64::from)
}

fn write_u32_at(b: &mut [u8], at: u64, v: u32) {
    let Ok(at) = usize::try_from(at) else { return };
    if let Some(dst) = b.get_mut(at..at + 4) {
        dst.copy_from_slice(&v.to_le_bytes());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stereo_8k() -> Pcm16Spec {
        Pcm16Spec::new(2, 8000).unwrap()
    }

    fn file_with(samples: &[i16], data_len: u32) -> Vec<u8> {
        let mut f = canonical_header(stereo_8k(), data_len).to_vec();
        for s in samples {
            f.extend_from_slice(&s.to_le_bytes());
        }
        f
    }

    #[test]
    fn canonical_header_fields() {
        let h = canonical_header(Pcm16Spec::new(2, 16000).unwrap(), 64000);
        assert_eq!(&h[0..4], b"RIFF");
        assert_eq!(u32::from_le_bytes(h[4..8].try_into().unwrap()), 36 + 64000);
        assert_eq!(&h[8..16], b"WAVEfmt ");
        assert_eq!(u32::from_le_bytes(h[16..20].try_into().unwrap()), 16);
        assert_eq!(u16::from_le_bytes(h[20..22].try_into().unwrap()), 1);
        assert_eq!(u16::from_le_bytes(h[22..24].try_into().unwrap()), 2);
        assert_eq!(u32::from_le_bytes(h[24..28].try_into().unwrap()), 16000);
        assert_eq!(u32::from_le_bytes(h[28..32].try_into().unwrap()), 64000);
        assert_eq!(u16::from_le_bytes(h[32..34].try_into().unwrap()), 4);
        assert_eq!(u16::from_le_bytes(h[34..36].try_into().unwrap()), 16);
        assert_eq!(&h[36..40], b"data");
        assert_eq!(u32::from_le_bytes(h[40..44].try_into().unwrap()), 64000);
    }

    #[test]
    fn header_roundtrip() {
        let f = file_with(&[1, -1, 2, -2], 8);
        let h = parse_header(&f).unwrap();
        assert_eq!(h.data_offset, 44);
        assert_eq!(h.data_len_offset, CANONICAL_DATA_SIZE_OFFSET);
        assert_eq!(h.data_len, 8);
        assert_eq!(h.riff_len, 44);
        assert_eq!(h.pcm16_spec().unwrap(), stereo_8k());
        let w = parse_pcm16(&f).unwrap();
        assert_eq!(w.samples, vec![1, -1, 2, -2]);
        assert!(!w.truncated);
        assert_eq!(w.channel(0), vec![1, 2]);
        assert_eq!(w.channel(1), vec![-1, -2]);
        assert_eq!(w.frames(), 2);
    }

    #[test]
    fn skips_unknown_and_odd_chunks() {
        let mut f = Vec::new();
        f.extend_from_slice(b"RIFF\0\0\0\0WAVE");
        f.extend_from_slice(b"LIST");
        f.extend_from_slice(&3u32.to_le_bytes());
        f.extend_from_slice(b"abc\0"); // 3 bytes + pad
        f.extend_from_slice(&canonical_header(Pcm16Spec::new(1, 8000).unwrap(), 4)[12..]);
        f.extend_from_slice(&[1, 0, 2, 0]);
        let riff = (f.len() - 8) as u32;
        f[4..8].copy_from_slice(&riff.to_le_bytes());
        let w = parse_pcm16(&f).unwrap();
        assert_eq!(w.samples, vec![1, 2]);
        assert_eq!(w.spec.channels(), 1);
    }

    #[test]
    fn errors() {
        assert_eq!(parse_header(b"RIFX0000WAVE"), Err(WavError::NotWave));
        assert_eq!(parse_header(b"RIFF0000AVI "), Err(WavError::NotWave));
        assert!(matches!(
            parse_header(b"RIFF"),
            Err(WavError::Truncated { .. })
        ));
        let f = file_with(&[], 0);
        assert!(matches!(
            parse_header(&f[..30]),
            Err(WavError::Truncated {
                what: "fmt chunk",
                ..
            })
        ));
        // data before fmt.
        let mut nofmt = b"RIFF\x0c\0\0\0WAVEdata\0\0\0\0".to_vec();
        assert_eq!(parse_header(&nofmt), Err(WavError::NoFmt));
        nofmt.truncate(12);
        nofmt[4] = 4;
        assert_eq!(parse_header(&nofmt), Err(WavError::NoData));
        // 8-bit PCM.
        let mut f8 = file_with(&[], 0);
        f8[34] = 8;
        assert_eq!(
            parse_pcm16(&f8),
            Err(WavError::NotPcm16 {
                format_tag: 1,
                bits_per_sample: 8
            })
        );
        // IEEE float.
        let mut ff = file_with(&[], 0);
        ff[20] = 3;
        assert!(matches!(
            parse_pcm16(&ff),
            Err(WavError::NotPcm16 { format_tag: 3, .. })
        ));
        // zero channels.
        let mut f0 = file_with(&[], 0);
        f0[22] = 0;
        assert!(matches!(parse_pcm16(&f0), Err(WavError::BadFmt(_))));
    }

    #[test]
    fn extensible_pcm_is_accepted() {
        let mut f = Vec::new();
        f.extend_from_slice(b"RIFF\0\0\0\0WAVEfmt ");
        f.extend_from_slice(&40u32.to_le_bytes());
        f.extend_from_slice(&WAVE_FORMAT_EXTENSIBLE.to_le_bytes());
        f.extend_from_slice(&1u16.to_le_bytes());
        f.extend_from_slice(&8000u32.to_le_bytes());
        f.extend_from_slice(&16000u32.to_le_bytes());
        f.extend_from_slice(&2u16.to_le_bytes());
        f.extend_from_slice(&16u16.to_le_bytes());
        f.extend_from_slice(&22u16.to_le_bytes());
        f.extend_from_slice(&16u16.to_le_bytes());
        f.extend_from_slice(&4u32.to_le_bytes());
        f.extend_from_slice(&[
            1, 0, 0, 0, 0, 0, 0x10, 0, 0x80, 0, 0, 0xaa, 0, 0x38, 0x9b, 0x71,
        ]);
        f.extend_from_slice(b"data");
        f.extend_from_slice(&2u32.to_le_bytes());
        f.extend_from_slice(&7i16.to_le_bytes());
        let w = parse_pcm16(&f).unwrap();
        assert_eq!(w.samples, vec![7]);
    }

    #[test]
    fn unfinished_file_reads_to_eof_and_is_flagged() {
        let f = file_with(&[1, 2, 3, 4, 5], PLACEHOLDER_DATA_LEN);
        let w = parse_pcm16(&f).unwrap();
        assert!(w.truncated);
        assert_eq!(w.samples, vec![1, 2, 3, 4], "whole frames only");
    }

    #[test]
    fn repair_plan_for_placeholder() {
        let mut f = file_with(&[1, 2, 3, 4, 5], PLACEHOLDER_DATA_LEN);
        f.push(0x7f); // torn sample: 11 data bytes
        let h = parse_header(&f).unwrap();
        let RepairPlan::Patch(p) = plan_repair(&h, f.len() as u64) else {
            panic!("expected a patch");
        };
        assert_eq!(
            p,
            SizePatch {
                file_len: 52,
                riff_len: 44,
                data_len_offset: 40,
                data_len: 8
            }
        );
        p.apply(&mut f);
        assert_eq!(f.len(), 52);
        let h2 = parse_header(&f).unwrap();
        assert_eq!(plan_repair(&h2, f.len() as u64), RepairPlan::Intact);
        assert_eq!(parse_pcm16(&f).unwrap().samples, vec![1, 2, 3, 4]);
    }

    #[test]
    fn repair_plan_cases() {
        // Finished file.
        let f = file_with(&[1, 2], 4);
        let h = parse_header(&f).unwrap();
        assert_eq!(plan_repair(&h, f.len() as u64), RepairPlan::Intact);
        // Declared more than present (cut file).
        let f = file_with(&[1, 2, 3, 4], 100);
        let h = parse_header(&f).unwrap();
        assert!(matches!(
            plan_repair(&h, f.len() as u64),
            RepairPlan::Patch(SizePatch { data_len: 8, .. })
        ));
        // data correct, RIFF size still a placeholder (crash between the two patches).
        let mut f = file_with(&[1, 2], 4);
        f[4..8].copy_from_slice(&(PLACEHOLDER_DATA_LEN + 36).to_le_bytes());
        let h = parse_header(&f).unwrap();
        assert_eq!(
            plan_repair(&h, f.len() as u64),
            RepairPlan::Patch(SizePatch {
                file_len: 48,
                riff_len: 40,
                data_len_offset: 40,
                data_len: 4
            })
        );
        // A chunk after data: not ours to touch.
        let mut f = file_with(&[1, 2], 4);
        f.extend_from_slice(b"LIST\x04\0\0\0abcd");
        let riff = (f.len() - 8) as u32;
        f[4..8].copy_from_slice(&riff.to_le_bytes());
        let h = parse_header(&f).unwrap();
        assert_eq!(plan_repair(&h, f.len() as u64), RepairPlan::Intact);
        // Header only, no audio yet.
        let f = file_with(&[], PLACEHOLDER_DATA_LEN);
        let h = parse_header(&f).unwrap();
        assert!(matches!(
            plan_repair(&h, f.len() as u64),
            RepairPlan::Patch(SizePatch {
                data_len: 0,
                riff_len: 36,
                ..
            })
        ));
    }

    #[test]
    fn size_patch_caps_at_32_bits() {
        let p = SizePatch::for_data(44, 10_000_000_000, 4).unwrap();
        assert_eq!(p.data_len, MAX_DATA_LEN);
        assert!(u64::from(p.riff_len) + 8 == p.file_len);
        assert_eq!(p.data_len % 4, 0);
        assert_eq!(SizePatch::for_data(10, 100, 4), None);
    }

    #[test]
    fn interleave_pads_shorter_side() {
        let mut out = Vec::new();
        assert_eq!(interleave_stereo_le(&[1, 2, 3], &[-1], &mut out), 2);
        assert_eq!(pcm16_from_le(&out), vec![1, -1, 2, 0, 3, 0]);
        out.clear();
        assert_eq!(interleave_stereo_le(&[5], &[6, 7], &mut out), 1);
        assert_eq!(pcm16_from_le(&out), vec![5, 6, 0, 7]);
    }

    #[test]
    fn mixdown_averages() {
        assert_eq!(
            mix_to_mono(&[32767, 32767, -32768, -32768, 100, -100, 1], 2),
            vec![32767, -32768, 0]
        );
        assert_eq!(mix_to_mono(&[1, 2, 3], 1), vec![1, 2, 3]);
        assert_eq!(mix_to_mono(&[1, 2, 3], 0), Vec::<i16>::new());
        assert_eq!(channel_of(&[1, 2, 3, 4], 2, 1), vec![2, 4]);
        assert_eq!(channel_of(&[1, 2, 3, 4], 2, 2), Vec::<i16>::new());
    }
}
