//! JSONL transcripts: line format, round trip, order, unicode, a line torn by a crash.

use std::io::Write;

use voxline::records::{
    RecordsError, Role, TranscriptEntry, TranscriptWriter, UnixMs, read_transcript,
};

fn entry(
    t_ms: u64,
    role: Role,
    text: &str,
    is_final: bool,
    item_id: Option<&str>,
) -> TranscriptEntry {
    TranscriptEntry {
        t_ms,
        at: UnixMs::new(1_718_000_000_000 + t_ms as i64),
        role,
        text: text.into(),
        is_final,
        item_id: item_id.map(Into::into),
        corrects: false,
    }
}

fn sample() -> Vec<TranscriptEntry> {
    vec![
        entry(0, Role::System, "call answered", true, None),
        entry(1_520, Role::Caller, "Hello?", false, Some("item_1")),
        entry(
            1_900,
            Role::Caller,
            "Hello, is anyone there?",
            true,
            Some("item_1"),
        ),
        entry(2_210, Role::Agent, "Hi, this is Ada.", true, Some("item_2")),
    ]
}

#[test]
fn lines_have_the_documented_format() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("t.jsonl");
    let mut w = TranscriptWriter::create(&path).unwrap();
    for e in sample() {
        w.append(&e).unwrap();
    }
    assert_eq!(w.lines_written(), 4);
    w.close().unwrap();

    let text = std::fs::read_to_string(&path).unwrap();
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), 4);
    assert!(text.ends_with('\n'));
    assert_eq!(
        lines[0],
        r#"{"t_ms":0,"at":1718000000000,"role":"system","text":"call answered","final":true}"#
    );
    assert_eq!(
        lines[1],
        r#"{"t_ms":1520,"at":1718000001520,"role":"caller","text":"Hello?","final":false,"item_id":"item_1"}"#
    );
}

#[test]
fn entries_round_trip_and_are_readable_before_close() {
    let dir = tempfile::tempdir().unwrap();
    // Parent directories are created.
    let path = dir.path().join("transcripts/2024/call-1.jsonl");
    let mut w = TranscriptWriter::create(&path).unwrap();
    for e in sample() {
        w.append(&e).unwrap();
    }
    // The writer is still open: every appended line is already in the file.
    let t = read_transcript(&path).unwrap();
    assert_eq!(t.entries, sample());
    assert!(t.skipped.is_empty());
    assert_eq!(t.torn_tail(), None);
    assert_eq!(w.path(), path);
    drop(w);
}

#[test]
fn order_is_kept_over_many_lines_and_reopening_appends() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("t.jsonl");
    let roles = [Role::Caller, Role::Agent, Role::System];
    let all: Vec<TranscriptEntry> = (0..600u64)
        .map(|i| {
            entry(
                i * 37,
                roles[(i % 3) as usize],
                &format!("utterance {i}"),
                i % 5 != 0,
                (i % 2 == 0).then_some("x"),
            )
        })
        .collect();
    let mut w = TranscriptWriter::create(&path).unwrap();
    for e in &all[..400] {
        w.append(e).unwrap();
    }
    w.close().unwrap();
    // Opening an existing transcript appends; it never truncates.
    let mut w = TranscriptWriter::create(&path).unwrap();
    for e in &all[400..] {
        w.append(e).unwrap();
    }
    w.close().unwrap();

    let t = read_transcript(&path).unwrap();
    assert!(t.skipped.is_empty());
    assert_eq!(t.entries, all);
}

#[test]
fn unicode_and_control_characters_stay_on_one_line() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("t.jsonl");
    let texts = [
        "Grüß Gott, wie geht's?",
        "こんにちは、エイダです。",
        "مرحبا بك",
        "🤖👋🏽 e\u{301}mojis and combining marks",
        "two\nlines\r\nand a \"quote\", a tab\tand a backslash \\",
        "\u{2028}line separator\u{2029}",
        "",
    ];
    let mut w = TranscriptWriter::create(&path).unwrap();
    for (i, text) in texts.iter().enumerate() {
        w.append(&entry(i as u64, Role::Caller, text, true, Some("ïd-✓")))
            .unwrap();
    }
    w.close().unwrap();

    let raw = std::fs::read(&path).unwrap();
    assert_eq!(raw.iter().filter(|&&b| b == b'\n').count(), texts.len());
    let t = read_transcript(&path).unwrap();
    let got: Vec<&str> = t.entries.iter().map(|e| e.text.as_str()).collect();
    assert_eq!(got, texts);
    assert!(
        t.entries
            .iter()
            .all(|e| e.item_id.as_deref() == Some("ïd-✓"))
    );
}

#[test]
fn torn_last_line_is_skipped_and_reported() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("t.jsonl");
    let mut w = TranscriptWriter::create(&path).unwrap();
    for e in sample() {
        w.append(&e).unwrap();
    }
    drop(w);
    // A crash in the middle of writing the fifth line, cut inside a multi-byte character.
    let fifth =
        serde_json::to_vec(&entry(3_000, Role::Agent, "Schöne Grüße 🤖", true, None)).unwrap();
    let emoji = "🤖".as_bytes();
    let cut = fifth.windows(emoji.len()).position(|w| w == emoji).unwrap() + 2;
    assert!(
        std::str::from_utf8(&fifth[..cut]).is_err(),
        "cut should split a character"
    );
    std::fs::OpenOptions::new()
        .append(true)
        .open(&path)
        .unwrap()
        .write_all(&fifth[..cut])
        .unwrap();

    let t = read_transcript(&path).unwrap();
    assert_eq!(t.entries, sample());
    assert_eq!(t.skipped.len(), 1);
    let torn = t.torn_tail().expect("torn tail reported");
    assert_eq!(torn.line, 5);
    assert!(torn.unterminated);
    assert_eq!(torn.bytes, cut);

    // Reopening after the crash starts the next entry on a fresh line: the torn fragment
    // stays a skipped (now terminated) line and the new entry is read.
    let mut w = TranscriptWriter::create(&path).unwrap();
    let next = entry(4_000, Role::System, "voxline restarted", true, None);
    w.append(&next).unwrap();
    w.close().unwrap();
    let t = read_transcript(&path).unwrap();
    let mut expected = sample();
    expected.push(next);
    assert_eq!(t.entries, expected);
    assert_eq!(t.skipped.len(), 1);
    assert_eq!(t.skipped[0].line, 5);
    assert!(!t.skipped[0].unterminated);
    assert_eq!(t.torn_tail(), None);
}

#[test]
fn a_complete_last_line_without_newline_is_kept() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("t.jsonl");
    let line = serde_json::to_string(&sample()[3]).unwrap();
    std::fs::write(&path, format!("\n{line}")).unwrap();
    let t = read_transcript(&path).unwrap();
    assert_eq!(t.entries, [sample()[3].clone()]);
    assert!(t.skipped.is_empty());
}

#[test]
fn garbage_line_in_the_middle_is_reported_not_fatal() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("t.jsonl");
    let s = sample();
    let mut text = String::new();
    text.push_str(&serde_json::to_string(&s[0]).unwrap());
    text.push_str("\nnot json at all\n");
    text.push_str(r#"{"t_ms":5,"at":1,"role":"robot","text":"x","final":true}"#);
    text.push('\n');
    text.push_str(&serde_json::to_string(&s[1]).unwrap());
    text.push('\n');
    std::fs::write(&path, text).unwrap();

    let t = read_transcript(&path).unwrap();
    assert_eq!(t.entries, [s[0].clone(), s[1].clone()]);
    let lines: Vec<usize> = t.skipped.iter().map(|l| l.line).collect();
    assert_eq!(lines, [2, 3]);
    assert!(
        t.skipped[1].reason.contains("robot"),
        "{}",
        t.skipped[1].reason
    );
    assert_eq!(t.torn_tail(), None);
}

#[test]
fn missing_file_is_an_error_naming_path_and_operation() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("nope.jsonl");
    let err = read_transcript(&path).unwrap_err();
    assert!(matches!(&err, RecordsError::TranscriptIo { op: "read", path: p, .. } if *p == path));
    let msg = err.to_string();
    assert!(msg.contains("nope.jsonl") && msg.contains("read"), "{msg}");
}

#[test]
fn a_correction_replaces_the_earlier_line_in_place() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("t.jsonl");
    let mut w = TranscriptWriter::create(&path).unwrap();
    w.append(&entry(
        0,
        Role::Caller,
        "hours please",
        true,
        Some("caller-1"),
    ))
    .unwrap();
    w.append(&entry(
        900,
        Role::Agent,
        "We open at eight and close at six.",
        true,
        Some("agent-1"),
    ))
    .unwrap();
    w.append(&entry(2_000, Role::System, "barge-in", true, None))
        .unwrap();
    w.append(&TranscriptEntry {
        corrects: true,
        ..entry(
            2_010,
            Role::Agent,
            "We open at eight",
            true,
            Some("agent-1"),
        )
    })
    .unwrap();
    // A correction to nothing heard removes the line; one for an unknown item is kept.
    w.append(&entry(3_000, Role::Agent, "Sorry,", true, Some("agent-2")))
        .unwrap();
    w.append(&TranscriptEntry {
        corrects: true,
        ..entry(3_100, Role::Agent, "", true, Some("agent-2"))
    })
    .unwrap();
    w.close().unwrap();
    let raw = std::fs::read_to_string(&path).unwrap();
    assert_eq!(raw.lines().count(), 6, "the file keeps every line");
    assert!(raw.contains(r#""corrects":true"#));
    let t = read_transcript(&path).unwrap();
    let got: Vec<(u64, &str)> = t
        .entries
        .iter()
        .map(|e| (e.t_ms, e.text.as_str()))
        .collect();
    assert_eq!(
        got,
        [
            (0, "hours please"),
            (900, "We open at eight"),
            (2_000, "barge-in")
        ]
    );
    // Plain lines with a repeated item id are not corrections.
    assert!(!raw.lines().next().unwrap().contains("corrects"));
}
