//! The o200k pre-tokenizer: splits text into pieces exactly like tiktoken's
//! `o200k_base` pattern (spec §7), without a backtracking regex engine.
//!
//! tiktoken's pattern ends in `…|\s*[\r\n]+|\s+(?!\S)|\s+`. The look-ahead is
//! the only construct a finite automaton cannot run, so [`Pretokenizer`]
//! compiles the same alternatives with the last two replaced by plain `\s+`
//! and then reproduces the look-ahead by hand: a whitespace-only match from
//! that branch (it never contains `\r`/`\n`, else `\s*[\r\n]+` would have won)
//! that has ≥ 2 chars and is followed by more text gives back its last char,
//! which is what `\s+(?!\S)` backtracking to "next char is whitespace" yields.
//! Everything else is leftmost-first alternation, which the `regex` crate
//! implements with the same preference order as a backtracking engine.

use regex::Regex;

/// tiktoken's o200k_base `pat_str`, verbatim (used only for documentation and
/// for comparison with `tokenizer.json` files).
pub const O200K_PATTERN: &str = concat!(
    r"[^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]*[\p{Ll}\p{Lm}\p{Lo}\p{M}]+(?i:'s|'t|'re|'ve|'m|'ll|'d)?",
    "|",
    r"[^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]+[\p{Ll}\p{Lm}\p{Lo}\p{M}]*(?i:'s|'t|'re|'ve|'m|'ll|'d)?",
    "|",
    r"\p{N}{1,3}",
    "|",
    r" ?[^\s\p{L}\p{N}]+[\r\n/]*",
    "|",
    r"\s*[\r\n]+",
    "|",
    r"\s+(?!\S)",
    "|",
    r"\s+"
);

/// [`O200K_PATTERN`] with `\s+(?!\S)|\s+` collapsed to `\s+` (see module docs).
const O200K_PATTERN_NO_LOOKAHEAD: &str = concat!(
    r"[^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]*[\p{Ll}\p{Lm}\p{Lo}\p{M}]+(?i:'s|'t|'re|'ve|'m|'ll|'d)?",
    "|",
    r"[^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]+[\p{Ll}\p{Lm}\p{Lo}\p{M}]*(?i:'s|'t|'re|'ve|'m|'ll|'d)?",
    "|",
    r"\p{N}{1,3}",
    "|",
    r" ?[^\s\p{L}\p{N}]+[\r\n/]*",
    "|",
    r"\s*[\r\n]+",
    "|",
    r"\s+"
);

/// Compiled o200k splitter.
#[derive(Debug, Clone)]
pub struct Pretokenizer {
    re: Regex,
}

impl Pretokenizer {
    /// Compiles the o200k pattern.
    pub fn o200k() -> Result<Self, regex::Error> {
        Ok(Self {
            re: Regex::new(O200K_PATTERN_NO_LOOKAHEAD)?,
        })
    }

    /// Calls `f` with every piece of `text`, in order; the pieces concatenate to `text`.
    pub fn for_each_piece<'t>(&self, text: &'t str, mut f: impl FnMut(&'t str)) {
        let mut pos = 0;
        while pos < text.len() {
            let Some(m) = self.re.find_at(text, pos) else {
                // Unreachable for the o200k pattern (every char matches some
                // branch); keep the text rather than dropping it.
                f(&text[pos..]);
                return;
            };
            if m.start() > pos {
                f(&text[pos..m.start()]);
            }
            let mut end = m.end();
            if end == m.start() {
                // Empty match cannot happen with this pattern; step one char to be safe.
                end = next_char_boundary(text, m.start());
            } else if end < text.len() {
                end = lookahead_fixup(&text[m.start()..end]).map_or(end, |len| m.start() + len);
            }
            f(&text[m.start()..end]);
            pos = end;
        }
    }

    /// Collects the pieces of `text` (convenience for tests and tools).
    pub fn split<'t>(&self, text: &'t str) -> Vec<&'t str> {
        let mut out = Vec::new();
        self.for_each_piece(text, |p| out.push(p));
        out
    }
}

/// For a match that is followed by more text: if it came from the trailing
/// `\s+` branch and spans ≥ 2 chars, returns its length without the last char.
fn lookahead_fixup(piece: &str) -> Option<usize> {
    let mut chars = piece.char_indices();
    let (_, first) = chars.next()?;
    if !first.is_whitespace() {
        return None;
    }
    let mut last_start = 0;
    let mut count = 1;
    for (i, c) in chars {
        if !c.is_whitespace() {
            return None;
        }
        last_start = i;
        count += 1;
    }
    let last = piece[last_start..].chars().next()?;
    if count < 2 || last == '\r' || last == '\n' {
        return None;
    }
    Some(last_start)
}

fn next_char_boundary(text: &str, pos: usize) -> usize {
    text[pos..]
        .chars()
        .next()
        .map_or(text.len(), |c| pos + c.len_utf8())
}
