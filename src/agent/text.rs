//! Text helpers shared by the backends: cutting an agent's reply into pieces a TTS can start
//! speaking ([`Chunker`]), and cutting a reply back to the share the caller heard
//! ([`cut_text`]).

/// A first piece shorter than this is not cut at a clause mark (a comma, a colon): "Well,"
/// alone sounds odd, but waiting for the whole sentence costs latency.
pub const FIRST_CLAUSE_MIN_CHARS: usize = 16;
/// Later pieces are cut at a clause mark only past this length; sentence ends always cut.
pub const CLAUSE_MIN_CHARS: usize = 60;
/// A piece with no sentence or clause mark is cut at a space past this length.
pub const MAX_PIECE_CHARS: usize = 200;

/// Cuts streamed text (LLM tokens) into sentences or clauses, as soon as each is complete.
///
/// A sentence ends at `.`, `!`, `?`, `…` or a newline followed by white space (so `3.5` and
/// `example.com` do not cut); a clause at `,`, `;`, `:` or a dash followed by white space, once
/// the piece is long enough ([`FIRST_CLAUSE_MIN_CHARS`] for the first piece of a reply,
/// [`CLAUSE_MIN_CHARS`] after). Common abbreviations (`Mr.`, `e.g.`) do not end a sentence.
#[derive(Debug, Default)]
pub struct Chunker {
    buf: String,
    emitted: usize,
}

impl Chunker {
    /// An empty chunker for a new reply.
    pub fn new() -> Chunker {
        Chunker::default()
    }

    /// Adds `text` and appends every piece completed by it to `out`.
    pub fn push(&mut self, text: &str, out: &mut Vec<String>) {
        self.buf.push_str(text);
        while let Some(end) = self.cut_point() {
            let rest = self.buf.split_off(end);
            let piece = std::mem::replace(&mut self.buf, rest);
            let piece = piece.trim();
            if !piece.is_empty() {
                out.push(piece.to_owned());
                self.emitted += 1;
            }
            // The white space that ended the piece belongs to neither.
            let trimmed = self.buf.trim_start().len();
            let cut = self.buf.len() - trimmed;
            self.buf.drain(..cut);
        }
    }

    /// The rest of the reply (the LLM finished), if any.
    pub fn finish(&mut self) -> Option<String> {
        let piece = std::mem::take(&mut self.buf);
        let piece = piece.trim();
        (!piece.is_empty()).then(|| {
            self.emitted += 1;
            piece.to_owned()
        })
    }

    /// Where the first complete piece in the buffer ends (byte index after its mark).
    fn cut_point(&self) -> Option<usize> {
        let clause_min = if self.emitted == 0 {
            FIRST_CLAUSE_MIN_CHARS
        } else {
            CLAUSE_MIN_CHARS
        };
        let mut chars = self.buf.char_indices().peekable();
        let mut count = 0usize;
        let mut last_space: Option<usize> = None;
        while let Some((i, c)) = chars.next() {
            count += 1;
            let next = chars.peek().map(|(_, n)| *n);
            let followed_by_space = next.is_some_and(char::is_whitespace);
            let end = i + c.len_utf8();
            if c == '\n' && count > 1 {
                return Some(end);
            }
            if c.is_whitespace() {
                last_space = Some(i);
            }
            match c {
                '.' | '!' | '?' | '…' if followed_by_space => {
                    if c == '.' && is_abbreviation(&self.buf[..i]) {
                        continue;
                    }
                    return Some(end);
                }
                ',' | ';' | ':' | '—' | '–' if followed_by_space && count >= clause_min => {
                    return Some(end);
                }
                _ => {}
            }
            if count >= MAX_PIECE_CHARS
                && let Some(s) = last_space
            {
                return Some(s);
            }
        }
        None
    }
}

/// Whether the word before a `.` at the end of `before` is an abbreviation that does not end a
/// sentence.
fn is_abbreviation(before: &str) -> bool {
    const ABBREVIATIONS: &[&str] = &[
        "mr", "mrs", "ms", "dr", "prof", "st", "sr", "jr", "vs", "etc", "e.g", "i.e", "approx",
        "no", "inc", "ltd", "co",
    ];
    let word = before
        .rsplit(|c: char| c.is_whitespace() || c == '(')
        .next()
        .unwrap_or_default()
        .to_ascii_lowercase();
    // A single letter (an initial: "J. Smith").
    (word.chars().count() == 1 && word.chars().all(char::is_alphabetic))
        || ABBREVIATIONS.contains(&word.as_str())
}

/// The first `share` (0..=1) of `text`, cut back to a word boundary.
pub fn cut_text(text: &str, share: f64) -> String {
    if share >= 1.0 {
        return text.to_owned();
    }
    let chars = text.chars().count();
    let keep = ((chars as f64) * share.max(0.0)).floor() as usize;
    let cut: String = text.chars().take(keep).collect();
    if keep < chars && !text.chars().nth(keep).is_some_and(char::is_whitespace) {
        match cut.rfind(char::is_whitespace) {
            Some(p) => cut[..p].trim_end().to_owned(),
            None => String::new(),
        }
    } else {
        cut.trim_end().to_owned()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn chunk(tokens: &[&str]) -> Vec<String> {
        let mut c = Chunker::new();
        let mut out = Vec::new();
        for t in tokens {
            c.push(t, &mut out);
        }
        out.extend(c.finish());
        out
    }

    #[test]
    fn sentences_cut_as_soon_as_complete() {
        let mut c = Chunker::new();
        let mut out = Vec::new();
        c.push("Hello there", &mut out);
        assert!(out.is_empty());
        c.push("! How can", &mut out);
        assert_eq!(out, ["Hello there!"]);
        c.push(" I help?", &mut out);
        assert_eq!(out.len(), 1, "the last sentence waits for what follows");
        c.push(" ", &mut out);
        assert_eq!(out, ["Hello there!", "How can I help?"]);
        assert_eq!(c.finish(), None);
    }

    #[test]
    fn numbers_domains_and_abbreviations_do_not_cut() {
        assert_eq!(
            chunk(&[
                "It costs 3.5 dollars at example.com today. ",
                "Ask Dr. Smith, e.g. on Monday. J. Doe agrees."
            ]),
            [
                "It costs 3.5 dollars at example.com today.",
                "Ask Dr. Smith, e.g. on Monday.",
                "J. Doe agrees."
            ]
        );
    }

    #[test]
    fn clauses_cut_by_length() {
        // The first piece may end at a comma once it is long enough.
        assert_eq!(
            chunk(&[
                "Sure, ",
                "let me check your account balance, ",
                "one moment."
            ]),
            ["Sure, let me check your account balance,", "one moment."]
        );
        // Later pieces need CLAUSE_MIN_CHARS before a comma cuts.
        let out = chunk(&[
            "Okay. Your balance is forty two dollars, and your next bill, due Friday, is small.",
        ]);
        assert_eq!(
            out,
            [
                "Okay.",
                // The first comma past 60 characters cuts.
                "Your balance is forty two dollars, and your next bill, due Friday,",
                "is small."
            ]
        );
    }

    #[test]
    fn long_runs_cut_at_a_space_and_newlines_cut() {
        let long = "word ".repeat(60);
        let out = chunk(&[&long]);
        assert!(out.len() >= 2, "{out:?}");
        assert!(out.iter().all(|p| p.chars().count() <= MAX_PIECE_CHARS));
        assert_eq!(chunk(&["- one\n- two\n"]), ["- one", "- two"]);
        assert_eq!(chunk(&["Ünïcödé… ", "ok"]), ["Ünïcödé…", "ok"]);
    }

    #[test]
    fn text_cut() {
        assert_eq!(cut_text("hello there world", 1.0), "hello there world");
        assert_eq!(cut_text("hello there world", 0.5), "hello");
        assert_eq!(cut_text("hello there world", 0.7), "hello there");
        assert_eq!(cut_text("hello", 0.5), "");
        assert_eq!(cut_text("hello", 0.0), "");
    }
}
