//! Call transcripts as JSONL: one JSON object per line, one line per utterance or event.
//!
//! ```text
//! {"t_ms":1520,"at":1718000001520,"role":"caller","text":"Hello?","final":true}
//! {"t_ms":2210,"at":1718000002210,"role":"agent","text":"Hi, this is Ada.","final":true,"item_id":"item_7"}
//! ```
//!
//! * `t_ms`: ms since the call was answered (monotonic clock of the caller);
//! * `at`: wall clock, [`UnixMs`];
//! * `role`: `"caller"`, `"agent"` or `"system"`;
//! * `final`: `false` for an interim (partial) transcription that a later line supersedes;
//! * `item_id`: the backend's id for the utterance, when it has one (absent otherwise).
//!
//! [`TranscriptWriter`] writes each line with one `write` call on an unbuffered file, so a
//! crash of voxline loses at most the line being written, which then shows up as a torn last
//! line; [`read_transcript`] skips and reports it. Lines reach the disk itself on
//! [`TranscriptWriter::sync`] / [`TranscriptWriter::close`] (an fsync per line would cost more
//! than the transcript is worth during the call).
//!
//! The writer does blocking file I/O (a few hundred bytes per line, into the page cache); from
//! async code, call it from a blocking context or a dedicated task.

use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::{RecordsError, UnixMs};

/// Who said it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// The far end (the person on the phone).
    Caller,
    /// The AI agent.
    Agent,
    /// voxline itself (call events such as hold, DTMF, transfer, errors).
    System,
}

/// One line of a transcript.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct TranscriptEntry {
    /// Ms since the call was answered.
    pub t_ms: u64,
    /// Wall-clock time.
    pub at: UnixMs,
    /// Who said it.
    pub role: Role,
    /// What was said (or the event, for [`Role::System`]).
    pub text: String,
    /// `false` for an interim transcription that a later entry supersedes.
    #[serde(rename = "final")]
    pub is_final: bool,
    /// The backend's id for the utterance, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub item_id: Option<String>,
    /// This line corrects the earlier line with the same role and item id: a reply the
    /// caller cut short after it had been written, now as heard (empty: none of it).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub corrects: bool,
}

/// Appends entries to a JSONL transcript file, one line at a time.
#[derive(Debug)]
pub struct TranscriptWriter {
    file: File,
    path: PathBuf,
    lines: u64,
    redactor: std::sync::Arc<super::redact::Redactor>,
}

impl TranscriptWriter {
    /// Opens `path` for appending, creating it and its parent directories if needed. An
    /// existing file is never truncated; if it ends in a torn line (no final newline), a
    /// newline is added first so that the next entry starts on a line of its own.
    pub fn create(path: impl AsRef<Path>) -> Result<TranscriptWriter, RecordsError> {
        let path = path.as_ref().to_path_buf();
        let io = |op: &'static str, path: &Path| {
            let path = path.to_path_buf();
            move |source| RecordsError::TranscriptIo { path, op, source }
        };
        if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
            std::fs::create_dir_all(parent).map_err(io("create parent directory", &path))?;
        }
        let mut file = OpenOptions::new()
            .read(true)
            .append(true)
            .create(true)
            .open(&path)
            .map_err(io("create", &path))?;
        let len = file.metadata().map_err(io("create", &path))?.len();
        if len > 0 {
            let mut last = [0u8; 1];
            file.seek(SeekFrom::Start(len - 1))
                .and_then(|_| file.read_exact(&mut last))
                .map_err(io("create", &path))?;
            if last[0] != b'\n' {
                file.write_all(b"\n").map_err(io("create", &path))?;
            }
        }
        Ok(TranscriptWriter {
            file,
            path,
            lines: 0,
            redactor: Default::default(),
        })
    }

    /// Redacts each entry's text with `redactor` before it is written.
    pub fn with_redactor(mut self, redactor: std::sync::Arc<super::redact::Redactor>) -> Self {
        self.redactor = redactor;
        self
    }

    /// Appends one entry as one line and hands it to the OS before returning.
    pub fn append(&mut self, entry: &TranscriptEntry) -> Result<(), RecordsError> {
        let redacted;
        let entry = match self.redactor.text(&entry.text) {
            std::borrow::Cow::Borrowed(_) => entry,
            std::borrow::Cow::Owned(text) => {
                redacted = TranscriptEntry {
                    text,
                    ..entry.clone()
                };
                &redacted
            }
        };
        let mut line =
            serde_json::to_vec(entry).map_err(|source| RecordsError::TranscriptEncode {
                path: self.path.clone(),
                source,
            })?;
        line.push(b'\n');
        self.file
            .write_all(&line)
            .and_then(|()| self.file.flush())
            .map_err(|source| RecordsError::TranscriptIo {
                path: self.path.clone(),
                op: "append",
                source,
            })?;
        self.lines += 1;
        Ok(())
    }

    /// Forces the written lines to the disk (fsync).
    pub fn sync(&mut self) -> Result<(), RecordsError> {
        self.file
            .sync_data()
            .map_err(|source| RecordsError::TranscriptIo {
                path: self.path.clone(),
                op: "sync",
                source,
            })
    }

    /// Syncs and closes the file; call it when the call ends.
    pub fn close(mut self) -> Result<(), RecordsError> {
        self.sync()
    }

    /// The file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Entries appended through this writer.
    pub fn lines_written(&self) -> u64 {
        self.lines
    }
}

/// A transcript as read back: the entries in file order, and the lines that were skipped.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Transcript {
    /// The entries, in the order they were written.
    pub entries: Vec<TranscriptEntry>,
    /// Lines that could not be read as an entry (blank lines are ignored, not listed).
    pub skipped: Vec<SkippedLine>,
}

impl Transcript {
    /// The last line, if it was cut off by a crash (no final newline, not a valid entry).
    pub fn torn_tail(&self) -> Option<&SkippedLine> {
        self.skipped.last().filter(|s| s.unterminated)
    }
}

/// A line [`read_transcript`] skipped.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SkippedLine {
    /// 1-based line number.
    pub line: usize,
    /// Length of the line in bytes.
    pub bytes: usize,
    /// `true` if the line is the last one and has no final newline: a line torn by a crash.
    pub unterminated: bool,
    /// Why it could not be read.
    pub reason: String,
}

/// Reads a JSONL transcript. A line that is not a valid entry (typically the last line, torn
/// by a crash while it was being written, or such a line left in the middle when the file was
/// appended to again) is skipped, logged with `tracing::warn!` and listed in
/// [`Transcript::skipped`]; only I/O errors fail.
///
/// A line marked `corrects` replaces the text of the earlier line with the same role and item
/// id (a reply the caller cut short after it had been written, now as heard): the entry keeps
/// its place and time and takes the new text, or goes when the new text is empty. The file
/// keeps both lines.
pub fn read_transcript(path: impl AsRef<Path>) -> Result<Transcript, RecordsError> {
    let path = path.as_ref();
    let data = std::fs::read(path).map_err(|source| RecordsError::TranscriptIo {
        path: path.to_path_buf(),
        op: "read",
        source,
    })?;
    let mut out = Transcript::default();
    // "a\nb\n" splits into ["a", "b", ""]: only the last segment lacks a newline.
    let mut segments = data.split(|&b| b == b'\n').enumerate().peekable();
    while let Some((index, line)) = segments.next() {
        let terminated = segments.peek().is_some();
        if line.iter().all(u8::is_ascii_whitespace) {
            continue;
        }
        let line_no = index + 1;
        match serde_json::from_slice::<TranscriptEntry>(line) {
            Ok(entry) => {
                let earlier = entry
                    .item_id
                    .as_ref()
                    .filter(|_| entry.corrects)
                    .and_then(|id| {
                        out.entries
                            .iter()
                            .rposition(|e| e.role == entry.role && e.item_id.as_ref() == Some(id))
                    });
                match earlier {
                    Some(i) if entry.text.is_empty() => {
                        out.entries.remove(i);
                    }
                    Some(i) => {
                        if let Some(e) = out.entries.get_mut(i) {
                            e.text = entry.text;
                        }
                    }
                    None if entry.corrects && entry.text.is_empty() => {}
                    None => out.entries.push(entry),
                }
            }
            Err(e) => {
                let skipped = SkippedLine {
                    line: line_no,
                    bytes: line.len(),
                    unterminated: !terminated,
                    reason: e.to_string(),
                };
                tracing::warn!(
                    path = %path.display(),
                    line = skipped.line,
                    torn = skipped.unterminated,
                    reason = %skipped.reason,
                    "transcript line skipped"
                );
                out.skipped.push(skipped);
            }
        }
    }
    Ok(out)
}
