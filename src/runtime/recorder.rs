//! Two-channel call recording to WAV files, and repair of recordings a crash left unfinished.
//!
//! A recording is RIFF/WAVE PCM 16-bit stereo at the call's PCM rate: the left channel is the
//! caller as heard after the jitter buffer, the right channel the agent as actually sent. Both
//! arrive together once per tick ([`Recorder::write_frame`]), so the channels are aligned by
//! construction.
//!
//! # Crash safety
//!
//! [`Recorder::create`] writes a header whose sizes are placeholders ([`PLACEHOLDER_DATA_LEN`],
//! sox's "unspecified length": sox and soxi read such a file to its end). Audio is buffered in memory and written
//! to the file whenever [`FLUSH_AUDIO`] of audio has accumulated, or when
//! [`Recorder::flush_if_due`] finds [`FLUSH_AUDIO`] of wall time has passed, so a process
//! crash loses at most about one second. [`Recorder::finish`] writes the rest, patches the RIFF
//! and `data` sizes and fsyncs. A recorder dropped without `finish` (an unwinding task) does the
//! same on a best-effort basis, without the fsync. Power loss can lose what the OS had not yet
//! written: only `finish` fsyncs, to keep one disk sync per call rather than one per second.
//!
//! At startup, before any recorder runs, [`repair_dir`] finds the files a crash left with
//! placeholder sizes, cuts them to whole sample frames and patches their headers.
//!
//! # Off the async runtime
//!
//! File writes can block, so a call does not own a [`Recorder`] directly:
//! [`RecorderHandle::spawn`] runs it on a dedicated thread fed by a bounded
//! `std::sync::mpsc::sync_channel` of [`QUEUE_FRAMES`] frames. [`RecorderHandle::try_send_frame`]
//! never blocks; when the queue is full the frame is dropped and counted, and the next frame
//! that gets through carries the length of the gap, which the thread fills with silence so the
//! recording keeps the call's timeline.

use std::fs::{File, OpenOptions};
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{self, RecvTimeoutError, SyncSender, TrySendError};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crate::dsp::wav::{
    self, CANONICAL_HEADER_LEN, PLACEHOLDER_DATA_LEN, Pcm16Spec, RIFF_SIZE_OFFSET, RepairPlan,
    SizePatch,
};

/// How much audio is buffered before it is written out, and how much wall time
/// [`Recorder::flush_if_due`] lets pass between writes: what a crash can lose.
pub const FLUSH_AUDIO: Duration = Duration::from_secs(1);

/// Capacity in frames of the queue to a recorder thread (5 s of 20 ms frames).
pub const QUEUE_FRAMES: usize = 250;

/// Stack size of a recorder thread (it needs little).
pub const THREAD_STACK: usize = 256 * 1024;

/// How many bytes of a file [`repair_file`] reads to find the `data` chunk.
pub const REPAIR_HEADER_PREFIX: u64 = 64 * 1024;

/// Channels of a recording: caller (left) and agent (right).
pub const CHANNELS: u16 = 2;

/// What a finished recording holds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecordingInfo {
    /// The file.
    pub path: PathBuf,
    /// Sample rate in Hz.
    pub sample_rate: u32,
    /// Sample frames (one caller and one agent sample each) in the file.
    pub frames: u64,
    /// Duration of the audio in the file.
    pub duration: Duration,
    /// Bytes of audio in the `data` chunk.
    pub data_bytes: u32,
    /// Zero samples added because a frame's caller and agent slices differed in length.
    pub padded_samples: u64,
    /// Frames the queue to the recorder thread dropped (recorded as silence when a later
    /// frame got through). Always 0 for a [`Recorder`] used directly.
    pub dropped_frames: u64,
    /// Sample frames not written because the file reached the 32-bit WAV size limit.
    pub frames_over_limit: u64,
}

/// An incremental two-channel WAV writer. Synchronous: run it off the async runtime (see
/// [`RecorderHandle`]).
#[derive(Debug)]
pub struct Recorder {
    file: Option<File>,
    path: PathBuf,
    spec: Pcm16Spec,
    /// Bytes not yet written to the file.
    buf: Vec<u8>,
    /// Flush once `buf` holds this many bytes ([`FLUSH_AUDIO`] of audio).
    flush_bytes: usize,
    /// Audio bytes accepted so far (written or buffered).
    data_bytes: u64,
    /// Largest `data` length the file can hold.
    max_data_bytes: u64,
    padded_samples: u64,
    frames_over_limit: u64,
    last_flush: Option<Instant>,
}

impl Recorder {
    /// Creates `path` (which must not exist: a recording is never overwritten) and writes a
    /// header with placeholder sizes for stereo PCM16 at `sample_rate` Hz.
    pub fn create(path: impl AsRef<Path>, sample_rate: u32) -> io::Result<Recorder> {
        let path = path.as_ref().to_path_buf();
        let spec = Pcm16Spec::new(CHANNELS, sample_rate).ok_or_else(|| {
            io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("invalid recording sample rate {sample_rate}"),
            )
        })?;
        let mut file = OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&path)?;
        file.write_all(&wav::canonical_header(spec, PLACEHOLDER_DATA_LEN))?;
        let flush_bytes = bytes_for(spec, FLUSH_AUDIO);
        Ok(Recorder {
            file: Some(file),
            path,
            spec,
            buf: Vec::with_capacity(flush_bytes + 4096),
            flush_bytes,
            data_bytes: 0,
            max_data_bytes: u64::from(wav::MAX_DATA_LEN),
            padded_samples: 0,
            frames_over_limit: 0,
            last_flush: None,
        })
    }

    /// The file being written.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Sample rate in Hz.
    pub fn sample_rate(&self) -> u32 {
        self.spec.sample_rate()
    }

    /// Duration of the audio accepted so far.
    pub fn duration(&self) -> Duration {
        frames_to_duration(self.frames(), self.spec.sample_rate())
    }

    /// Appends one tick: `caller` to the left channel, `sent` to the right. If the slices
    /// differ in length the shorter is padded with zeros (counted in
    /// [`RecordingInfo::padded_samples`]). Writes to the file once [`FLUSH_AUDIO`] of audio is
    /// buffered.
    pub fn write_frame(&mut self, caller: &[i16], sent: &[i16]) -> io::Result<()> {
        let start = self.buf.len();
        let padded = wav::interleave_stereo_le(caller, sent, &mut self.buf);
        self.padded_samples += padded as u64;
        self.accept(start)
    }

    /// Appends `frames` sample frames of silence on both channels.
    pub fn write_silence(&mut self, frames: usize) -> io::Result<()> {
        let start = self.buf.len();
        self.buf
            .resize(start + frames * usize::from(self.spec.block_align()), 0);
        self.accept(start)
    }

    /// Writes the buffered audio if [`FLUSH_AUDIO`] has passed since the last write (the first
    /// call only starts the clock). Returns whether it wrote.
    pub fn flush_if_due(&mut self, now: Instant) -> io::Result<bool> {
        match self.last_flush {
            None => {
                self.last_flush = Some(now);
                Ok(false)
            }
            Some(last) if now.saturating_duration_since(last) >= FLUSH_AUDIO => {
                self.flush()?;
                self.last_flush = Some(now);
                Ok(true)
            }
            Some(_) => Ok(false),
        }
    }

    /// Writes the buffered audio to the file (no fsync).
    pub fn flush(&mut self) -> io::Result<()> {
        if self.buf.is_empty() {
            return Ok(());
        }
        let Some(file) = self.file.as_mut() else {
            return Ok(());
        };
        file.write_all(&self.buf)?;
        self.buf.clear();
        Ok(())
    }

    /// Writes the rest, patches the RIFF and `data` sizes, fsyncs and closes the file.
    pub fn finish(mut self) -> io::Result<RecordingInfo> {
        self.finalize(true)?;
        Ok(self.info())
    }

    fn frames(&self) -> u64 {
        self.data_bytes / u64::from(self.spec.block_align())
    }

    fn info(&self) -> RecordingInfo {
        RecordingInfo {
            path: self.path.clone(),
            sample_rate: self.spec.sample_rate(),
            frames: self.frames(),
            duration: self.duration(),
            data_bytes: u32::try_from(self.data_bytes).unwrap_or(u32::MAX),
            padded_samples: self.padded_samples,
            dropped_frames: 0,
            frames_over_limit: self.frames_over_limit,
        }
    }

    /// Accounts for the bytes appended to `buf` from `start`: cuts what exceeds the size
    /// limit, then flushes if enough is buffered.
    fn accept(&mut self, start: usize) -> io::Result<()> {
        let added = (self.buf.len() - start) as u64;
        let room = self.max_data_bytes.saturating_sub(self.data_bytes);
        if added > room {
            let keep = room - room % u64::from(self.spec.block_align());
            let cut = added - keep;
            self.frames_over_limit += cut / u64::from(self.spec.block_align());
            // invariant: keep <= added = buf.len() - start, so this is within buf.
            self.buf.truncate(start + keep as usize);
            self.data_bytes += keep;
        } else {
            self.data_bytes += added;
        }
        if self.buf.len() >= self.flush_bytes {
            self.flush()?;
        }
        Ok(())
    }

    /// Flushes, patches the header and (if `sync`) fsyncs; closes the file.
    fn finalize(&mut self, sync: bool) -> io::Result<()> {
        self.flush()?;
        let Some(mut file) = self.file.take() else {
            return Ok(());
        };
        let patch = SizePatch::for_data(
            CANONICAL_HEADER_LEN as u64,
            self.data_bytes,
            self.spec.block_align(),
        )
        .ok_or_else(|| io::Error::other("recording too large for a WAV header"))?;
        apply_patch(&mut file, &patch)?;
        if sync {
            file.sync_all()?;
        }
        Ok(())
    }
}

impl Drop for Recorder {
    fn drop(&mut self) {
        if self.file.is_some()
            && let Err(e) = self.finalize(false)
        {
            tracing::warn!(path = %self.path.display(), error = %e, "recording not finished cleanly");
        }
    }
}

/// Why [`RecorderHandle::try_send_frame`] did not queue a frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum FrameDropped {
    /// The queue is full (the disk is slow): the frame is dropped and counted, and recorded
    /// as silence once a later frame gets through.
    #[error("recorder queue full, frame dropped")]
    QueueFull,
    /// The recorder thread has stopped (an I/O error: join it to learn which).
    #[error("recorder stopped")]
    Stopped,
}

/// The sending side of a recorder running on its own thread.
#[derive(Debug)]
pub struct RecorderHandle {
    tx: SyncSender<Msg>,
    /// Sample frames dropped since the last frame that got through.
    gap_frames: usize,
    dropped: Arc<AtomicU64>,
}

impl RecorderHandle {
    /// Starts a thread that creates `path` (see [`Recorder::create`]) and records the frames
    /// sent to the handle. The thread finishes the file when the handle is dropped or
    /// [`finish`](RecorderHandle::finish)ed; its join handle yields the [`RecordingInfo`] or
    /// the I/O error that stopped it (including failure to create the file). Fails only if the
    /// thread cannot be spawned.
    pub fn spawn(
        path: impl Into<PathBuf>,
        sample_rate: u32,
    ) -> io::Result<(RecorderHandle, JoinHandle<io::Result<RecordingInfo>>)> {
        let path = path.into();
        let (tx, rx) = mpsc::sync_channel::<Msg>(QUEUE_FRAMES);
        let dropped = Arc::new(AtomicU64::new(0));
        let dropped_thread = dropped.clone();
        let join = std::thread::Builder::new()
            .name("voxline-recorder".into())
            .stack_size(THREAD_STACK)
            .spawn(move || {
                let mut rec = Recorder::create(&path, sample_rate)?;
                loop {
                    match rx.recv_timeout(FLUSH_AUDIO) {
                        Ok(Msg::Frame { gap, caller, sent }) => {
                            if gap > 0 {
                                rec.write_silence(gap)?;
                            }
                            rec.write_frame(&caller, &sent)?;
                            rec.flush_if_due(Instant::now())?;
                        }
                        Err(RecvTimeoutError::Timeout) => {
                            rec.flush_if_due(Instant::now())?;
                        }
                        Err(RecvTimeoutError::Disconnected) => break,
                    }
                }
                let mut info = rec.finish()?;
                info.dropped_frames = dropped_thread.load(Ordering::Relaxed);
                Ok(info)
            })?;
        Ok((
            RecorderHandle {
                tx,
                gap_frames: 0,
                dropped,
            },
            join,
        ))
    }

    /// Queues one tick (copies the samples) without blocking. On
    /// [`FrameDropped::QueueFull`] the frame is counted as dropped and its length is recorded
    /// as silence before the next frame that gets through.
    pub fn try_send_frame(&mut self, caller: &[i16], sent: &[i16]) -> Result<(), FrameDropped> {
        let msg = Msg::Frame {
            gap: self.gap_frames,
            caller: caller.to_vec(),
            sent: sent.to_vec(),
        };
        match self.tx.try_send(msg) {
            Ok(()) => {
                self.gap_frames = 0;
                Ok(())
            }
            Err(TrySendError::Full(_)) => {
                self.gap_frames += caller.len().max(sent.len());
                self.dropped.fetch_add(1, Ordering::Relaxed);
                Err(FrameDropped::QueueFull)
            }
            Err(TrySendError::Disconnected(_)) => Err(FrameDropped::Stopped),
        }
    }

    /// Frames dropped so far because the queue was full.
    pub fn dropped_frames(&self) -> u64 {
        self.dropped.load(Ordering::Relaxed)
    }

    /// Ends the recording: the thread writes what is queued, patches the header and fsyncs;
    /// join its handle for the result.
    pub fn finish(self) {}
}

/// What [`repair_file`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RepairOutcome {
    /// The file was consistent (or not ours to touch); it was not modified.
    Intact,
    /// An unfinished file was cut to whole frames and its sizes patched.
    Repaired {
        /// The `data` size the header declared.
        declared_data_len: u32,
        /// The `data` size now.
        data_len: u32,
        /// Bytes cut from the end (a torn last frame).
        cut_bytes: u64,
        /// Duration of the audio kept (0 if the format is not PCM16).
        duration: Duration,
    },
    /// Not a WAV file this module can repair (too short, bad header); left as it is.
    Skipped {
        /// Why.
        reason: String,
    },
}

/// A file [`repair_dir`] repaired or had to skip.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RepairReport {
    /// The file.
    pub path: PathBuf,
    /// What happened.
    pub outcome: RepairOutcome,
}

/// Repairs the `.wav` files (any case, regular files only, not recursive) in `dir` that a
/// crash left unfinished; see [`repair_file`]. Returns one report per file repaired or
/// skipped, sorted by path; intact files are left byte-identical and not reported. Nothing is
/// ever deleted. Run it before any recorder writes to `dir`: a recording in progress looks
/// unfinished. Fails only if `dir` cannot be listed.
pub fn repair_dir(dir: &Path) -> io::Result<Vec<RepairReport>> {
    let mut paths = Vec::new();
    for entry in std::fs::read_dir(dir)? {
        let Ok(entry) = entry else { continue };
        let is_file = entry.file_type().map(|t| t.is_file()).unwrap_or(false);
        let path = entry.path();
        let is_wav = path
            .extension()
            .and_then(|e| e.to_str())
            .is_some_and(|e| e.eq_ignore_ascii_case("wav"));
        if is_file && is_wav {
            paths.push(path);
        }
    }
    paths.sort();
    let mut reports = Vec::new();
    for path in paths {
        let outcome = match repair_file(&path) {
            Ok(RepairOutcome::Intact) => continue,
            Ok(o) => o,
            Err(e) => RepairOutcome::Skipped {
                reason: e.to_string(),
            },
        };
        match &outcome {
            RepairOutcome::Repaired { data_len, .. } => {
                tracing::info!(path = %path.display(), data_len, "repaired unfinished recording")
            }
            RepairOutcome::Skipped { reason } => {
                tracing::warn!(path = %path.display(), %reason, "cannot repair WAV file")
            }
            RepairOutcome::Intact => {}
        }
        reports.push(RepairReport { path, outcome });
    }
    Ok(reports)
}

/// Repairs one WAV file if a crash left it unfinished (see
/// [`plan_repair`](crate::dsp::wav::plan_repair)): cuts it to whole sample frames, patches the
/// RIFF and `data` sizes and fsyncs. A file that is not a parsable WAV file is
/// [`RepairOutcome::Skipped`] and left as it is.
pub fn repair_file(path: &Path) -> io::Result<RepairOutcome> {
    let mut file = OpenOptions::new().read(true).write(true).open(path)?;
    let len = file.metadata()?.len();
    let mut prefix = Vec::new();
    (&mut file)
        .take(REPAIR_HEADER_PREFIX.min(len))
        .read_to_end(&mut prefix)?;
    let header = match wav::parse_header(&prefix) {
        Ok(h) => h,
        Err(e) => {
            return Ok(RepairOutcome::Skipped {
                reason: e.to_string(),
            });
        }
    };
    let patch = match wav::plan_repair(&header, len) {
        RepairPlan::Intact => return Ok(RepairOutcome::Intact),
        RepairPlan::Patch(p) => p,
    };
    if patch.file_len < len {
        file.set_len(patch.file_len)?;
    }
    apply_patch(&mut file, &patch)?;
    file.sync_all()?;
    let duration = match header.pcm16_spec() {
        Ok(spec) => frames_to_duration(
            u64::from(patch.data_len) / u64::from(spec.block_align()),
            spec.sample_rate(),
        ),
        Err(_) => Duration::ZERO,
    };
    Ok(RepairOutcome::Repaired {
        declared_data_len: header.data_len,
        data_len: patch.data_len,
        cut_bytes: len.saturating_sub(patch.file_len),
        duration,
    })
}

/// A message to the recorder thread.
#[derive(Debug)]
enum Msg {
    /// One tick, preceded by `gap` sample frames of silence (dropped frames).
    Frame {
        gap: usize,
        caller: Vec<i16>,
        sent: Vec<i16>,
    },
}

/// Writes the RIFF and `data` sizes of `patch` into `file` (does not truncate).
fn apply_patch(file: &mut File, patch: &SizePatch) -> io::Result<()> {
    file.seek(SeekFrom::Start(patch.data_len_offset))?;
    file.write_all(&patch.data_len.to_le_bytes())?;
    file.seek(SeekFrom::Start(RIFF_SIZE_OFFSET))?;
    file.write_all(&patch.riff_len.to_le_bytes())?;
    file.seek(SeekFrom::End(0))?;
    Ok(())
}

fn bytes_for(spec: Pcm16Spec, d: Duration) -> usize {
    let bytes = u128::from(spec.byte_rate()) * d.as_millis() / 1000;
    usize::try_from(bytes).unwrap_or(usize::MAX)
}

fn frames_to_duration(frames: u64, rate: u32) -> Duration {
    if rate == 0 {
        return Duration::ZERO;
    }
    let nanos = u128::from(frames) * 1_000_000_000 / u128::from(rate);
    Duration::from_nanos(u64::try_from(nanos).unwrap_or(u64::MAX))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn size_limit_cuts_and_counts() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("limit.wav");
        let mut r = Recorder::create(&path, 8000).unwrap();
        r.max_data_bytes = 100; // 25 frames
        r.write_frame(&[1; 20], &[2; 20]).unwrap();
        r.write_frame(&[3; 20], &[4; 20]).unwrap();
        let info = r.finish().unwrap();
        assert_eq!(info.frames, 25);
        assert_eq!(info.data_bytes, 100);
        assert_eq!(info.frames_over_limit, 15);
        let w = wav::parse_pcm16(&std::fs::read(&path).unwrap()).unwrap();
        assert!(!w.truncated);
        assert_eq!(w.frames(), 25);
        assert_eq!(w.channel(0)[20..], [3; 5]);
    }

    #[test]
    fn create_refuses_existing_file_and_bad_rate() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("x.wav");
        std::fs::write(&path, b"keep me").unwrap();
        let e = Recorder::create(&path, 8000).unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::AlreadyExists);
        assert_eq!(std::fs::read(&path).unwrap(), b"keep me");
        let e = Recorder::create(dir.path().join("y.wav"), 0).unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::InvalidInput);
    }

    #[test]
    fn full_queue_drops_and_the_next_frame_carries_the_gap() {
        let (tx, rx) = mpsc::sync_channel(1);
        let mut h = RecorderHandle {
            tx,
            gap_frames: 0,
            dropped: Arc::default(),
        };
        h.try_send_frame(&[1; 160], &[1; 160]).unwrap();
        assert_eq!(
            h.try_send_frame(&[2; 160], &[2; 150]),
            Err(FrameDropped::QueueFull)
        );
        assert_eq!(
            h.try_send_frame(&[3; 150], &[3; 160]),
            Err(FrameDropped::QueueFull)
        );
        assert_eq!(h.dropped_frames(), 2);
        let Msg::Frame { gap, .. } = rx.recv().unwrap();
        assert_eq!(gap, 0);
        h.try_send_frame(&[4; 160], &[4; 160]).unwrap();
        let Msg::Frame { gap, caller, sent } = rx.recv().unwrap();
        assert_eq!(gap, 320);
        assert_eq!((caller[0], sent[159]), (4, 4));
        drop(rx);
        assert_eq!(
            h.try_send_frame(&[5; 160], &[5; 160]),
            Err(FrameDropped::Stopped)
        );
    }

    #[test]
    fn flush_if_due_follows_the_given_clock() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("clock.wav");
        let mut r = Recorder::create(&path, 8000).unwrap();
        let t0 = Instant::now();
        assert!(!r.flush_if_due(t0).unwrap());
        r.write_frame(&[1; 160], &[2; 160]).unwrap();
        assert_eq!(std::fs::metadata(&path).unwrap().len(), 44);
        assert!(!r.flush_if_due(t0 + Duration::from_millis(999)).unwrap());
        assert!(r.flush_if_due(t0 + FLUSH_AUDIO).unwrap());
        assert_eq!(std::fs::metadata(&path).unwrap().len(), 44 + 640);
    }
}
